"""The ledger decides, on the real stack: money that comes in is posted, card authorizations hold,
transfers reserve their amount plus fees against the posted balance, and `ledger check` holds."""

from __future__ import annotations

import re
import threading
import uuid
from contextlib import ExitStack
from decimal import Decimal

import psycopg
import pytest

from connectors.accounts import set_status
from ops.cli import main
from streams.status.agent import StatusHandler
from tests.fixtures.database import private_database
from tests.fixtures.events import metadata, transfer_confirmed, transfer_requested
from tests.fixtures.ledger import money_groups_at_end, money_workers, open_accounts
from tests.fixtures.running import running
from tests.fixtures.waiting import wait_for
from topics.codec import AvroCodec
from topics.events import Event
from topics.producer import EventProducer
from topics.schemas import load_store
from topics.settings import REPO_ROOT

RUN = uuid.uuid4().hex[:8]
BANK, CARDS = "banking.transaction.received.v1", "cards.transaction.received.v1"
CHAIN, REQUESTED = "crypto.wallet.transfer.confirmed.v1", "payments.transfer.requested.v1"


DEPOSITS: list[dict] = []
AUTHORIZATIONS: list[dict] = []


def acct(name: str) -> str:
    return f"mf-{RUN}-{name}"


def bank(name: str, units: int, status: str = "POSTED", direction: str = "CREDIT") -> dict:
    return {
        "metadata": metadata("banking.transaction.received"),
        "account_id": acct(name),
        "transaction_id": f"bt-{uuid.uuid4().hex[:10]}",
        "amount": {"units": units, "currency": "EUR", "exponent": 2},
        "direction": direction,
        "status": status,
        "counterparty_reference": None,
        "booking_date": None,
        "value_date": None,
        "provider": "truelayer",
        "provider_reference": f"tl-{uuid.uuid4().hex[:8]}",
        "inbox_id": None,
    }


def card(
    name: str, txn: str, units: int, status: str, direction: str = "DEBIT", ref: str | None = None
) -> dict:
    return {
        "metadata": metadata("cards.transaction.received"),
        "account_id": acct(name),
        "transaction_id": txn,
        "card_token": "ic_1",
        "amount": {"units": units, "currency": "EUR", "exponent": 2},
        "direction": direction,
        "status": status,
        "merchant_name": None,
        "merchant_category_code": None,
        "provider": "stripe",
        "provider_reference": ref or txn,
        "inbox_id": None,
    }


def transfer(name: str, n: int, units: int) -> dict:
    return transfer_requested(account=acct(name), units=units, transfer_id=f"mf-{RUN}-{name}-{n}")


def report_event(codec, transaction_id: str, status: str) -> Event:
    topic = "payments.transaction.status_reported.v1"
    record = {
        "metadata": metadata("payments.transaction.status_reported"),
        "account_id": acct("race"),
        "transaction_id": transaction_id,
        "status": status,
        "reason": "given up",
        "provider": "test",
        "provider_update_id": None,
        "expected_version": None,
    }
    return Event(codec.decode(codec.encode(topic, record)), topic, 0, 0, None, b"")


def status_of(conn, name: str, n: int) -> tuple | None:
    return conn.execute(
        "SELECT status, (SELECT reason FROM transaction_status_history h WHERE h.transaction_id = t.transaction_id "
        "ORDER BY version DESC LIMIT 1) FROM transactions t WHERE transaction_id = %s",
        (f"mf-{RUN}-{name}-{n}",),
    ).fetchone()


def posted(conn, name: str, currency: str = "EUR") -> int:
    row = conn.execute(
        "SELECT credits - debits FROM balances WHERE ledger_account = %s",
        (f"customer:tenant-1/{acct(name)}:{currency}",),
    ).fetchone()
    return int(row[0]) if row else 0


def snapshot(conn) -> tuple:
    like = f"%{RUN}%"
    return conn.execute(
        """SELECT (SELECT count(*) FROM journal_entries WHERE reference_id LIKE %(l)s OR description LIKE %(l)s),
                  (SELECT md5(string_agg(ledger_account || debits || ':' || credits, ',' ORDER BY ledger_account))
                     FROM balances WHERE ledger_account LIKE %(l)s),
                  (SELECT md5(string_agg(hold_id || status || amount, ',' ORDER BY hold_id)) FROM holds
                    WHERE account_id LIKE %(l)s),
                  (SELECT count(*) FROM transaction_status_history WHERE transaction_id LIKE %(l)s)""",
        {"l": like},
    ).fetchone()


@pytest.fixture(scope="module")
def codec():
    return AvroCodec(load_store(REPO_ROOT / "avro"))


@pytest.fixture(scope="module")
def flow(services, codec, catalog):
    with (
        private_database(services) as db,
        psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn,
        ExitStack() as stack,
    ):
        group = f"money-{RUN}"
        money_groups_at_end(db, catalog, group)
        for work in money_workers(db, codec, catalog, group):
            stack.enter_context(running(work))
        open_accounts(db, [acct(n) for n in ("bank", "card", "poor", "frozen", "race", "race2")])
        open_accounts(db, [acct("wallet")], "ETH")
        producer = EventProducer(db, codec, catalog)
        send = producer.produce
        # money in: a booked bank credit, a pending one (not money yet), a card load, a crypto deposit
        send(BANK, bank("bank", 100_000))
        send(BANK, bank("bank", 99_999, status="PENDING"))
        send(BANK, bank("poor", 1_000))
        send(BANK, bank("frozen", 50_000))
        for name in ("race", "race2"):
            send(BANK, bank(name, 100_000))
        send(CARDS, card("card", f"ch-{RUN}", 20_000, "CAPTURED", "CREDIT"))
        deposit = transfer_confirmed(3 * 10**18, account=acct("wallet"))
        deposit["transfer"]["tx_hash"] = "0x" + uuid.uuid4().hex * 2
        DEPOSITS.append(deposit)
        send(CHAIN, deposit)
        outbound = transfer_confirmed(10**18, account=acct("wallet"))
        outbound["transfer"].update(direction="OUTBOUND", tx_hash="0x" + uuid.uuid4().hex * 2)
        send(CHAIN, outbound)  # money out posts through its transfer, never from the chain
        producer.flush()
        wait_for(
            lambda: (
                posted(conn, "bank") == 100_000
                and posted(conn, "card") == 20_000
                and posted(conn, "race") == posted(conn, "race2") == 100_000
                and posted(conn, "poor") == 1_000
                and posted(conn, "wallet", "ETH") == 3 * 10**18
            ),
            60,
            what="the deposits posted",
        )
        # a card purchase: authorized (held), captured (posted, the hold completed), partly refunded
        auth = f"iauth_{RUN}"
        AUTHORIZATIONS.append(card("card", auth, 5_000, "AUTHORIZED"))
        send(CARDS, AUTHORIZATIONS[0])
        producer.flush()
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT status FROM holds WHERE hold_id = %s", (f"card:tenant-1/{auth}",)
                ).fetchone()
                == ("ACTIVE",)
            ),
            60,
            what="the authorization's hold",
        )
        held = posted(conn, "card")
        send(CARDS, card("card", auth, 5_000, "CAPTURED", ref=f"ipi_{RUN}_1"))
        send(CARDS, card("card", auth, 1_500, "REFUNDED", "CREDIT", ref=f"ipi_{RUN}_2"))
        # a second authorization, reversed: its hold is released
        send(CARDS, card("card", f"iauth_{RUN}_r", 700, "AUTHORIZED"))
        send(CARDS, card("card", f"iauth_{RUN}_r", 700, "REVERSED"))
        # transfers: one fits, one does not, one from a frozen account
        set_status(
            conn,
            codec,
            catalog,
            tenant="tenant-1",
            environment=db.environment,
            account_id=acct("frozen"),
            status="frozen",
            reason="test",
        )
        send(REQUESTED, transfer("bank", 1, 60_000))
        send(REQUESTED, transfer("bank", 2, 60_000))  # 60k + fees no longer fit after the first
        send(REQUESTED, transfer("poor", 1, 1_000))  # the amount fits, not with its fees
        send(REQUESTED, transfer("frozen", 1, 100))
        producer.flush()
        wait_for(
            lambda: all(status_of(conn, *t) for t in (("bank", 1), ("bank", 2), ("poor", 1), ("frozen", 1))),
            60,
            what="the transfers decided",
        )
        wait_for(lambda: posted(conn, "card") == held - 5_000 + 1_500, 60, what="capture and refund posted")
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT status FROM holds WHERE hold_id = %s", (f"card:tenant-1/iauth_{RUN}_r",)
                ).fetchone()
                == ("RELEASED",)
            ),
            60,
            what="the reversal",
        )
        yield db, conn


def test_money_in_is_posted_and_pending_money_is_not(flow):
    _, conn = flow
    assert posted(conn, "bank") == 100_000  # the PENDING credit of 999.99 is not money yet
    assert posted(conn, "wallet", "ETH") == 3 * 10**18
    custody = conn.execute(
        "SELECT debits - credits FROM balances WHERE ledger_account = 'custody:tenant-1/ethereum:ETH'"
    ).fetchone()
    assert custody == (Decimal(3 * 10**18),)


def test_a_transfer_reserves_its_amount_plus_fees_and_an_overspend_fails(flow):
    _, conn = flow
    assert status_of(conn, "bank", 1)[0] == "BALANCE_RESERVED"
    failed, reason = status_of(conn, "bank", 2)
    assert failed == "FAILED" and reason.startswith("INSUFFICIENT_FUNDS")
    poor, poor_reason = status_of(conn, "poor", 1)
    assert poor == "FAILED"
    assert re.fullmatch(
        r"INSUFFICIENT_FUNDS: 10\d\d EUR needed \(1000 \+ fees \d+\), 1000 available", poor_reason
    )
    frozen, frozen_reason = status_of(conn, "frozen", 1)
    assert frozen == "FAILED" and frozen_reason.startswith("ACCOUNT_FROZEN")
    hold = conn.execute(
        "SELECT status, amount FROM holds WHERE hold_id = %s", (f"txn:mf-{RUN}-bank-1",)
    ).fetchone()
    reserved = conn.execute(
        "SELECT reason FROM transaction_status_history WHERE transaction_id = %s AND to_status = 'BALANCE_RESERVED'",
        (f"mf-{RUN}-bank-1",),
    ).fetchone()[0]
    fee = int(re.fullmatch(r"reserved \d+ \(60000 \+ fees (\d+)\) EUR", reserved).group(1))
    assert fee > 0 and hold == ("ACTIVE", Decimal(60_000 + fee))


def test_a_card_capture_completes_its_authorizations_hold(flow):
    _, conn = flow
    hold = conn.execute(
        "SELECT status, amount FROM holds WHERE hold_id = %s", (f"card:tenant-1/iauth_{RUN}",)
    )
    assert hold.fetchone() == ("COMPLETED", Decimal(5_000))


def test_each_committed_balance_change_is_announced_with_posted_held_and_available(flow, codec):
    _, conn = flow
    events = [
        codec.decode(bytes(value), topic="accounts.balance.updated.v1")
        for (value,) in conn.execute(
            "SELECT value FROM outbox WHERE topic = 'accounts.balance.updated.v1' AND aggregate_id = %s ORDER BY id",
            (acct("card"),),
        ).fetchall()
    ]
    money = [(e["total"]["units"], e["reserved"]["units"], e["available"]["units"]) for e in events]
    assert money[0] == (20_000, 0, 20_000)  # the card load
    assert (20_000, 5_000, 15_000) in money  # the authorization's hold
    meta = events[money.index((20_000, 5_000, 15_000))]["metadata"]
    authorized = AUTHORIZATIONS[0]["metadata"]  # the hold's change is traced to the card event
    assert (meta["correlation_id"], meta["causation_id"]) == (
        authorized["correlation_id"],
        authorized["event_id"],
    )
    assert money[-1] == (
        posted(conn, "card"),
        0,
        posted(conn, "card"),
    )  # captured, refunded, reversal released
    wallet = conn.execute(
        "SELECT value FROM outbox WHERE topic = 'accounts.balance.updated.v1' AND aggregate_id = %s",
        (acct("wallet"),),
    ).fetchone()[0]
    assert codec.decode(bytes(wallet), topic="accounts.balance.updated.v1")["total"]["units"] == Decimal(
        3 * 10**18
    )


def test_two_workers_racing_for_the_same_money_reserve_it_once(flow, codec):
    db, conn = flow
    status = db.as_database_role("status_agent")
    handlers = [StatusHandler(status, codec), StatusHandler(status, codec)]
    reserved_per_round = []
    for n in range(15):
        events = [
            Event(
                codec.decode(codec.encode(REQUESTED, transfer("race", 100 * n + w, 60_000))),
                REQUESTED,
                0,
                w,
                acct("race").encode(),
                b"",
            )
            for w in range(2)
        ]
        barrier = threading.Barrier(2)

        def decide(handler: StatusHandler, event: Event, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            handler.handle([event])

        threads = [
            threading.Thread(target=decide, args=(h, e)) for h, e in zip(handlers, events, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        statuses = [status_of(conn, "race", 100 * n + w)[0] for w in range(2)]
        reserved_per_round.append(statuses.count("BALANCE_RESERVED"))
        for w in range(2):  # the winner is given up, through its lifecycle: its hold is released
            if statuses[w] == "BALANCE_RESERVED":
                handlers[0].handle([report_event(codec, f"mf-{RUN}-race-{100 * n + w}", "FAILED")])
    for h in handlers:
        h.close()
    # 100,000 available and 60,000 + fees asked twice at once: exactly one is reserved, every round
    assert reserved_per_round == [1] * 15


def test_two_workers_never_overspend_between_them(flow, codec):
    db, conn = flow
    status = db.as_database_role("status_agent")
    handlers = [StatusHandler(status, codec), StatusHandler(status, codec)]
    barrier = threading.Barrier(2)

    def spend(w: int) -> None:
        for n in range(10):
            event = Event(
                codec.decode(codec.encode(REQUESTED, transfer("race2", 10 * w + n, 9_000))),
                REQUESTED,
                0,
                n,
                acct("race2").encode(),
                b"",
            )
            if n == 0:
                barrier.wait()
            handlers[w].handle([event])

    threads = [threading.Thread(target=spend, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for h in handlers:
        h.close()
    count, total, each = conn.execute(
        "SELECT count(*), sum(amount), max(amount) FROM holds WHERE account_id = %s AND status = 'ACTIVE'",
        (acct("race2"),),
    ).fetchone()
    # twenty requests of 9,000 + fees from two workers: as many as fit in 100,000, and not one more
    assert total <= 100_000 < total + each
    assert count == 100_000 // each


def test_ledger_check_passes_and_names_a_violation(flow, monkeypatch, capsys):
    db, conn = flow
    monkeypatch.setenv("DATABASE_URL", db.database_url.get_secret_value())
    monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)
    assert main(["ledger", "check"]) == 0, capsys.readouterr().err
    assert "ledger check: ok" in capsys.readouterr().out
    # a completed transfer without its posting is a violation
    conn.execute(
        "INSERT INTO transactions VALUES (%s, 'a', 'tenant-1', 'sandbox', 'TRANSFER', 'DEBIT', 5, 'EUR', 2, NULL, "
        "'COMPLETED', 7, 'c', now(), now(), 'SEPA')",
        (f"mf-{RUN}-unposted",),
    )
    try:
        assert main(["ledger", "check"]) == 1
        err = capsys.readouterr().err
        assert f"completed transaction mf-{RUN}-unposted (TRANSFER) has no journal entry" in err
        assert "FAILED, 1 violation(s)" in err
    finally:
        conn.execute("DELETE FROM transactions WHERE transaction_id = %s", (f"mf-{RUN}-unposted",))


def test_replaying_every_input_changes_no_row(flow, codec, catalog):
    db, conn = flow
    before = snapshot(conn)
    replay = f"replay-{uuid.uuid4().hex[:6]}"
    for work in money_workers(db, codec, catalog, replay):
        work(idle_exit=3)
    assert snapshot(conn) == before


def test_a_report_from_another_tenant_moves_nothing(flow, codec):
    db, conn = flow
    before = status_of(conn, "bank", 1)
    foreign = report_event(codec, f"mf-{RUN}-bank-1", "SENT_TO_PROVIDER")
    foreign.record["metadata"]["tenant_id"] = "tenant-2"
    handler = StatusHandler(db, codec)
    try:
        result = handler.handle([foreign])
    finally:
        handler.close()
    assert [reason for _, reason in result.refused] == [
        f"transaction mf-{RUN}-bank-1 is not tenant 'tenant-2''s: its report is refused"
    ]
    assert status_of(conn, "bank", 1) == before


def test_a_deposit_reorged_off_the_chain_after_its_confirmation_is_reversed(flow, codec, catalog):
    db, conn = flow
    reorged = {
        "metadata": metadata("crypto.wallet.transfer.reorged"),
        "account_id": acct("wallet"),
        "transfer": DEPOSITS[0]["transfer"],
        "replaced_by_block_hash": "0x" + "ee" * 32,
        "was_confirmed": True,
    }
    producer = EventProducer(db, codec, catalog)
    producer.produce("crypto.wallet.transfer.reorged.v1", reorged)
    producer.flush()
    wait_for(lambda: posted(conn, "wallet", "ETH") == 0, 60, what="the deposit reversed")
    reversed_by = conn.execute(
        "SELECT reference_id, reverses FROM journal_entries WHERE reverses LIKE %s",
        (f"chain:%{acct('wallet')}@%",),
    ).fetchall()
    assert len(reversed_by) == 1 and reversed_by[0][0] == f"reversal:{reversed_by[0][1]}"
