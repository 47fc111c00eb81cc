"""Fault points: where the chaos tests crash a worker on purpose. Inert unless asked.

`LEDGERSTREAM_FAULT=<point>@<n>` makes the process exit at once (`os._exit(137)`, as a kill -9
would: no cleanup, no flush, no commit) the n-th time it reaches `<point>`. The points are
the batch runtime's:
- `after_work`: the batch's database transaction committed; its outputs not produced, its
  offsets not committed;
- `before_flush`: its outputs produced into the client's queue, not flushed, offsets not
  committed.
`LEDGERSTREAM_FAULT_UNTIL=<unix seconds>` disarms the point from that moment on (a chaos
schedule's fault window: a worker restarted after it runs clean).
Unset (production), a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import sys
import time

from topics.errors import ConfigError

FAULT_ENV = "LEDGERSTREAM_FAULT"
UNTIL_ENV = "LEDGERSTREAM_FAULT_UNTIL"
POINTS = ("after_work", "before_flush")
_reached: dict[str, int] = {}


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get(FAULT_ENV, "").strip()
    if not spec:
        return None
    point, _, nth = spec.partition("@")
    if point not in POINTS or not (nth or "1").isdigit():
        raise ConfigError(f"{FAULT_ENV}={spec!r}: use <point>@<n>, a point of {', '.join(POINTS)}")
    return point, int(nth or "1")


def _until() -> float:
    text = os.environ.get(UNTIL_ENV, "").strip()
    try:
        return float(text) if text else float("inf")
    except ValueError:
        raise ConfigError(f"{UNTIL_ENV}={text!r}: use unix seconds") from None


ARMED = _armed()
UNTIL = _until()


def fault_point(point: str) -> None:
    """Exit here, hard, if this is the armed point's n-th passage."""
    if ARMED is None or ARMED[0] != point:
        return
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] == ARMED[1] and time.time() < UNTIL:
        sys.stderr.write(f"fault: {point} #{ARMED[1]} reached, exiting as a kill -9 would\n")
        sys.stderr.flush()
        os._exit(137)
