"""How a long-running ledgerstream process sets CPython's cyclic garbage collector.

Every long-running process calls `settle_collector()` once, when it has started (modules
imported, schemas compiled, its app or runtime built) and before its first batch or request:
the agents and sinks, the outbox relay, the chain listener and sender, the payout dispatcher,
the webhook service (each worker) and the command API.

Reference counting frees nearly everything a worker or a service makes; the cyclic collector
is there for the rest. By default its oldest generation is walked whole after every ten
collections of the middle one, and everything that lived a while is in it:
- a worker holds two or three batches of decoded events at a time, a few hundred thousand
  objects freed when their batch is done, which live long enough to reach the oldest
  generation. Walking them took about a third of the ledger sink's CPU (`bench ledger`, one
  worker: 8.5 s of CPU for 100,000 transfers, 5.3 s after this);
- a service's heap is mostly what it built at startup (the app, its models, the schemas):
  each full walk paused every request in flight. `bench webhooks` answered redeliveries at
  p99 65-75 ms with them and 9-10 ms without; the outbox relay drained 50,000 rows about 7%
  faster.

What the process made while starting is frozen out of every collection, and the oldest
generation is walked a hundred times less often. The two younger generations keep their
thresholds, so cyclic garbage is still collected.
"""

from __future__ import annotations

import gc

FULL_COLLECTION_AFTER = 1000
"""Collections of the middle generation before the oldest is walked (10 by default)."""


def settle_collector() -> None:
    """Freeze what the process has made so far out of collection and walk the oldest
    generation a hundred times less often (see the module's docstring)."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)
