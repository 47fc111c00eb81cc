"""A batch's reservations: each spend decided on what the ones before it in the batch left."""

from __future__ import annotations

import psycopg

from streams.status.agent import StatusHandler
from tests.fixtures.database import private_database
from tests.fixtures.events import transfer_requested
from tests.fixtures.ledger import TENANT, open_accounts
from topics.codec import AvroCodec
from topics.currencies import CurrencyRegistry
from topics.events import Event
from topics.holds import Reservations, Spend, reserve
from topics.names import PAYMENTS_TRANSFER_REQUESTED_V1
from topics.schemas import SchemaStore
from topics.settings import Settings

REQUESTED = PAYMENTS_TRANSFER_REQUESTED_V1


def _spend(hold: str, account: str, units: int, exponent: int = 2) -> Spend:
    return Spend(hold, TENANT, account, "EUR", exponent, units, f"test {hold}")


def _refusal(outcome: str | None) -> str:
    assert outcome is not None
    return outcome


def test_a_batch_decides_each_spend_on_what_the_ones_before_it_left(services: Settings) -> None:
    with private_database(services) as db:
        open_accounts(db, ["alice", "bob", "carol"], overdraft=1_000)
        with psycopg.connect(db.database_url.get_secret_value()) as conn:
            conn.execute("UPDATE accounts SET status = 'frozen' WHERE account_id = 'carol'")
            conn.commit()
            registry = CurrencyRegistry.load(conn)
            with conn.transaction(), Reservations(conn, registry) as batch:
                batch.lock([(TENANT, n, "EUR") for n in ("bob", "alice", "carol", "nobody")])
                assert batch.reserve(_spend("h1", "alice", 600)) is None
                assert _refusal(batch.reserve(_spend("h2", "alice", 600))) == (
                    "INSUFFICIENT_FUNDS: 600 EUR needed, 400 available"
                )
                assert batch.release("h1", "its transfer failed")
                assert not batch.release("h1", "again")
                assert batch.reserve(_spend("h2", "alice", 600)) is None  # h1's funds are back
                assert batch.reserve(_spend("h3", "alice", 300)) is None
                assert batch.reserve(_spend("h2", "alice", 100)) is None  # asked again: counted again
                assert _refusal(batch.reserve(_spend("h4", "alice", 1))) == (
                    "INSUFFICIENT_FUNDS: 1 EUR needed, 0 available"
                )
                assert _refusal(batch.reserve(_spend("h5", "carol", 1))).startswith("ACCOUNT_FROZEN")
                assert _refusal(batch.reserve(_spend("h6", "nobody", 1))).startswith("ACCOUNT_NOT_FOUND")
                assert _refusal(batch.reserve(_spend("h7", "bob", 1, exponent=3))).startswith(
                    "CURRENCY_MISMATCH"
                )
                assert batch.reserve(_spend("h8", "dave", 1)) is not None  # locked when first asked
            with conn.transaction():  # a fresh look at the database agrees with the batch's figures
                assert _refusal(reserve(conn, registry, _spend("h9", "alice", 101))) == (
                    "INSUFFICIENT_FUNDS: 101 EUR needed, 100 available"  # h2 was written once
                )
                assert reserve(conn, registry, _spend("h10", "bob", 1_000)) is None
            held = conn.execute("SELECT hold_id, amount, status FROM holds ORDER BY hold_id").fetchall()
    assert held == [
        ("h1", 600, "RELEASED"),
        ("h10", 1_000, "ACTIVE"),
        ("h2", 600, "ACTIVE"),
        ("h3", 300, "ACTIVE"),
    ]


def test_the_status_agent_decides_a_batch_as_it_decides_one_request_at_a_time(
    services: Settings, store: SchemaStore
) -> None:
    codec = AvroCodec(store)
    accounts = [f"acc-{n}" for n in range(5)]
    records = [transfer_requested(accounts[n % 5], units=1_000 + (n * 7919) % 30_000) for n in range(120)]
    records += [transfer_requested("acc-unknown", units=100), transfer_requested("acc-frozen", units=100)]
    events = []
    for offset, record in enumerate(records):
        value = codec.encode(REQUESTED, record)
        events.append(Event(codec.decode(value, topic=REQUESTED), REQUESTED, 0, offset, None, value))
    outcomes = []
    for batches in ([events], [[event] for event in events]):
        with private_database(services) as db:
            open_accounts(db, [*accounts, "acc-frozen"], overdraft=200_000)  # 2,000.00 EUR each
            with psycopg.connect(db.database_url.get_secret_value()) as conn:
                conn.execute("UPDATE accounts SET status = 'frozen' WHERE account_id = 'acc-frozen'")
            handler = StatusHandler(db.as_database_role("status_agent"), codec)
            try:
                for batch in batches:
                    handler.handle(batch)
            finally:
                handler.close()
            with psycopg.connect(db.database_url.get_secret_value()) as conn:
                outcomes.append(
                    (
                        conn.execute(
                            "SELECT h.transaction_id, h.to_status, h.reason FROM transaction_status_history h "
                            "ORDER BY h.transaction_id, h.version"
                        ).fetchall(),
                        conn.execute("SELECT hold_id, amount, status FROM holds ORDER BY hold_id").fetchall(),
                    )
                )
    in_one_batch, one_at_a_time = outcomes
    assert in_one_batch == one_at_a_time
    ends = {tid: (status, reason) for tid, status, reason in in_one_batch[0]}
    reasons = [reason.split(":")[0] for status, reason in ends.values() if status == "FAILED"]
    assert sum(status == "BALANCE_RESERVED" for status, _ in ends.values()) > 40
    assert reasons.count("INSUFFICIENT_FUNDS") > 40
    assert {"ACCOUNT_NOT_FOUND", "ACCOUNT_FROZEN"} <= set(reasons)
