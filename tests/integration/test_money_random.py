"""A seeded random run of the money flow over two workers per agent and sink: deposits, transfers
(some overspending), card authorizations, captures, reversals and refunds, crypto deposits and
reorgs after confirmation, every input redelivered at random. After it, `ledger check` finds
nothing, no account is below its limit, and replaying every input topic changes no row."""

from __future__ import annotations

import random
import uuid
from contextlib import ExitStack
from decimal import Decimal

import psycopg
import pytest

from ops.ledger_check import violations
from tests.fixtures.database import private_database
from tests.fixtures.events import metadata, transfer_confirmed, transfer_requested
from tests.fixtures.ledger import money_groups_at_end, money_workers, open_accounts
from tests.fixtures.running import running
from tests.fixtures.waiting import wait_for
from topics.codec import AvroCodec
from topics.producer import EventProducer
from topics.schemas import load_store
from topics.settings import REPO_ROOT

SEED = 20261129
RUN = uuid.uuid4().hex[:8]
ACCOUNTS = [f"rnd-{RUN}-{n}" for n in range(12)]
HAPPY = ["SENT_TO_PROVIDER", "PROVIDER_PROCESSING", "PROVIDER_CONFIRMING", "COMPLETED"]


def script(rng: random.Random) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]], set[str]]:
    """(money in, money out, the transfers that will be completed) for every account."""
    money_in: list[tuple[str, dict]] = []
    money_out: list[tuple[str, dict]] = []
    completing: set[str] = set()
    for n, account in enumerate(ACCOUNTS):
        if n % 4 == 3:  # a card account: funded, then card purchases only
            money_in.append(
                (
                    "banking.transaction.received.v1",
                    {
                        "metadata": metadata("banking.transaction.received"),
                        "account_id": account,
                        "transaction_id": f"{account}-fund",
                        "amount": {"units": 20_000, "currency": "EUR", "exponent": 2},
                        "direction": "CREDIT",
                        "status": "POSTED",
                        "counterparty_reference": None,
                        "booking_date": None,
                        "value_date": None,
                        "provider": "truelayer",
                        "provider_reference": f"{account}-fund",
                        "inbox_id": None,
                    },
                )
            )
            money_out += card_purchases(rng, account)
            continue
        for k in range(rng.randrange(1, 4)):  # bank credits, some still pending
            money_in.append(
                (
                    "banking.transaction.received.v1",
                    {
                        "metadata": metadata("banking.transaction.received"),
                        "account_id": account,
                        "transaction_id": f"{account}-bank-{k}",
                        "amount": {"units": rng.randrange(1_000, 50_000), "currency": "EUR", "exponent": 2},
                        "direction": "CREDIT",
                        "status": rng.choice(["POSTED", "POSTED", "PENDING"]),
                        "counterparty_reference": None,
                        "booking_date": None,
                        "value_date": None,
                        "provider": "truelayer",
                        "provider_reference": f"{account}-bank-{k}",
                        "inbox_id": None,
                    },
                )
            )
        if n % 3 == 0:  # a crypto deposit, reorged after its confirmation for some
            deposit = transfer_confirmed(rng.randrange(1, 10**19), account=account)
            deposit["transfer"]["tx_hash"] = "0x" + uuid.uuid4().hex * 2
            money_in.append(("crypto.wallet.transfer.confirmed.v1", deposit))
            if rng.random() < 0.5:
                money_in.append(
                    (
                        "crypto.wallet.transfer.reorged.v1",
                        {
                            "metadata": metadata("crypto.wallet.transfer.reorged"),
                            "account_id": account,
                            "transfer": deposit["transfer"],
                            "replaced_by_block_hash": None,
                            "was_confirmed": True,
                        },
                    )
                )
        for k in range(rng.randrange(2, 6)):  # transfers: some fit, some overspend
            tid = f"{account}-t{k}"
            money_out.append(
                (
                    "payments.transfer.requested.v1",
                    transfer_requested(account, rng.randrange(500, 30_000), transfer_id=tid),
                )
            )
            if rng.random() < 0.7:
                completing.add(tid)
    return money_in, money_out, completing


def card_purchases(rng: random.Random, account: str) -> list[tuple[str, dict]]:
    """Up to two purchases of at most 50.00 on a card account funded with 200.00: captured (and maybe
    partly refunded) or reversed. Card networks do not ask the ledger first, so the budget is the script's."""
    out = []
    for k in range(rng.randrange(1, 3)):
        auth, units = f"iauth-{account}-{k}", rng.randrange(100, 5_000)

        def card(status: str, direction: str, ref: str, amount: int, auth: str = auth) -> dict:
            return {
                "metadata": metadata("cards.transaction.received"),
                "account_id": account,
                "transaction_id": auth,
                "card_token": "ic_rnd",
                "amount": {"units": amount, "currency": "EUR", "exponent": 2},
                "direction": direction,
                "status": status,
                "merchant_name": None,
                "merchant_category_code": None,
                "provider": "stripe",
                "provider_reference": ref,
                "inbox_id": None,
            }

        out.append(("cards.transaction.received.v1", card("AUTHORIZED", "DEBIT", auth, units)))
        if rng.random() < 0.6:
            out.append(("cards.transaction.received.v1", card("CAPTURED", "DEBIT", f"{auth}-c", units)))
            if rng.random() < 0.5:
                out.append(
                    (
                        "cards.transaction.received.v1",
                        card("REFUNDED", "CREDIT", f"{auth}-r", rng.randrange(1, units)),
                    )
                )
        else:
            out.append(("cards.transaction.received.v1", card("REVERSED", "DEBIT", auth, units)))
    return out


def report(tid: str, account: str, status: str) -> dict:
    return {
        "metadata": metadata("payments.transaction.status_reported"),
        "account_id": account,
        "transaction_id": tid,
        "status": status,
        "reason": "provider",
        "provider": "truelayer",
        "provider_update_id": None,
        "expected_version": None,
    }


def snapshot(conn) -> tuple:
    like = f"%rnd-{RUN}-%"
    return conn.execute(
        """SELECT (SELECT count(*) FROM journal_entries WHERE reference_id LIKE %(l)s),
                  (SELECT md5(string_agg(ledger_account || debits || ':' || credits, ',' ORDER BY ledger_account))
                     FROM balances WHERE ledger_account LIKE %(l)s),
                  (SELECT md5(string_agg(hold_id || status || amount, ',' ORDER BY hold_id)) FROM holds
                    WHERE account_id LIKE %(l)s),
                  (SELECT md5(string_agg(transaction_id || status || version, ',' ORDER BY transaction_id))
                     FROM transactions WHERE transaction_id LIKE %(l)s)""",
        {"l": like},
    ).fetchone()


@pytest.fixture(scope="module")
def randomized(services, catalog):
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    rng = random.Random(SEED)
    money_in, money_out, completing = script(rng)
    with (
        private_database(services) as db,
        psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn,
        ExitStack() as stack,
    ):
        group = f"rnd-{RUN}"
        money_groups_at_end(db, catalog, group)
        open_accounts(db, ACCOUNTS)
        # two workers of each, sharing their consumer group's partitions
        for work in money_workers(db, codec, catalog, group, copies=2, batch_size=50, linger=0.02):
            stack.enter_context(running(work))
        producer = EventProducer(db, codec, catalog)

        def send(events: list[tuple[str, dict]]) -> None:
            for topic, record in events:
                producer.produce(topic, record)
                if rng.random() < 0.2:  # a redelivery
                    producer.produce(topic, record)
            producer.flush()

        send(money_in)
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM balances WHERE ledger_account LIKE %s", (f"customer:%rnd-{RUN}-%",)
                ).fetchone()[0]
                >= len(ACCOUNTS) // 2
            ),
            60,
            what="deposits posted",
        )
        send(money_out)
        tids = [r["transfer_id"] for t, r in money_out if t == "payments.transfer.requested.v1"]
        decided = "SELECT count(*) FROM transactions WHERE transaction_id = ANY(%s) AND status <> 'INITIATED'"
        wait_for(
            lambda: conn.execute(decided, (tids,)).fetchone()[0] == len(tids), 90, what="transfers decided"
        )
        reserved = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT transaction_id, account_id FROM transactions WHERE transaction_id = ANY(%s) "
                "AND status = 'BALANCE_RESERVED'",
                (tids,),
            ).fetchall()
        }
        send(
            [
                ("payments.transaction.status_reported.v1", report(t, a, s))
                for t, a in sorted(reserved.items())
                for s in (HAPPY if t in completing else ["FAILED"])
            ]
        )
        final = "SELECT count(*) FROM transactions WHERE transaction_id = ANY(%s) AND status IN ('COMPLETED', 'FAILED')"
        wait_for(
            lambda: conn.execute(final, (tids,)).fetchone()[0] == len(tids), 90, what="transfers settled"
        )
        posted = "SELECT count(*) FROM journal_entries WHERE reference_id = ANY(%s)"
        done = [f"txn:{t}" for t in reserved if t in completing]
        wait_for(
            lambda: conn.execute(posted, (done,)).fetchone()[0] == len(done), 90, what="transfers posted"
        )
        cards = {
            r["provider_reference"]
            for t, r in money_out
            if t.startswith("cards") and r["status"] != "AUTHORIZED"
        }
        card_refs = [f"card:tenant-1/{ref}" for ref in cards if not ref.startswith("iauth")]
        wait_for(
            lambda: conn.execute(posted, (card_refs,)).fetchone()[0] == len(card_refs),
            90,
            what="cards posted",
        )
        reversals = [t for t, _ in money_in if t.endswith("reorged.v1")]
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM journal_entries WHERE reference_id LIKE %s",
                    (f"reversal:chain:%rnd-{RUN}-%",),
                ).fetchone()[0]
                == len(reversals)
            ),
            90,
            what="reorged deposits reversed",
        )
        yield db, conn, codec, len(tids), len(reserved)


def test_the_ledger_check_finds_nothing_after_a_random_run(randomized):
    _, conn, codec, requested, reserved = randomized
    assert 0 < reserved < requested  # some transfers fit, some overspent
    found = list(violations(conn, codec))
    assert found == [], found[:10]


def test_no_account_went_below_its_limit(randomized):
    _, conn, _, _, _ = randomized
    lowest = conn.execute(
        "SELECT min(credits - debits) FROM balances WHERE ledger_account LIKE %s", (f"customer:%rnd-{RUN}-%",)
    ).fetchone()[0]
    assert lowest is not None and lowest >= Decimal(0)


def test_replaying_every_input_topic_changes_no_row(randomized, catalog):
    db, conn, codec, _, _ = randomized
    before = snapshot(conn)
    for work in money_workers(db, codec, catalog, f"rnd-replay-{uuid.uuid4().hex[:6]}"):
        work(idle_exit=3)
    assert snapshot(conn) == before
