"""A batch's reservations: each spend decided on what the ones before it in the batch left."""

from __future__ import annotations

import psycopg

from tests.fixtures.database import private_database
from tests.fixtures.ledger import TENANT, open_accounts
from topics.currencies import CurrencyRegistry
from topics.holds import Reservations, Spend, reserve
from topics.settings import Settings


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
