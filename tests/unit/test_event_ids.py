"""Derived event ids are exactly uuid5 of the namespace and the name, computed the short way."""

from __future__ import annotations

import random
import uuid

from topics.events import LEDGERSTREAM_NAMESPACE, derived_event_id


def test_derived_ids_are_the_standard_uuid5():
    rng = random.Random(20261129)
    for _ in range(2000):
        source = str(uuid.UUID(int=rng.getrandbits(128)))
        agent = rng.choice(["fees_agent", "ledger_agent", "status_agent", "é-agent"])
        qualifier = rng.choice(["", "EUR", "assessed:EUR", "ü" * rng.randrange(0, 40)])
        expected = uuid.uuid5(LEDGERSTREAM_NAMESPACE, f"{agent}:{source}:{qualifier}")
        got = derived_event_id(source, agent, qualifier)
        assert got == str(expected)
        assert uuid.UUID(got).version == 5 and uuid.UUID(got).variant == uuid.RFC_4122
