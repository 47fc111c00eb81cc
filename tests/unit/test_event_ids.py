"""Derived event ids are exactly uuid5 of the namespace and the name, computed the short way;
a balance announcement's id comes from the state it announces."""

from __future__ import annotations

import random
import uuid

from topics.balances import BalanceState, balance_record
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


def test_a_balance_change_is_announced_under_its_causes_correlation_with_an_id_from_its_state():
    def announce(correlation: str | None, causation: str | None) -> dict:
        state = BalanceState(
            "customer:t/a:EUR", "t", "a", "EUR", 2, 1000, 10, 0, "txn:1", correlation, causation
        )
        return balance_record(state, environment="sandbox", source="test", producer="p")["metadata"]

    traced = announce("corr-1", "event-1")
    assert (traced["correlation_id"], traced["causation_id"]) == ("corr-1", "event-1")
    assert announce("corr-2", None)["event_id"] == traced["event_id"]  # the state names the event
    unknown = [announce(None, None)["correlation_id"] for _ in range(2)]
    assert unknown[0] != unknown[1] and None not in unknown  # a new correlation when none is known
