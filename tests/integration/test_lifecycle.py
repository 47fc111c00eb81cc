"""Transactions through their lifecycle on the real stack: status agent, ledger agent, ledger sink."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from sinks.base import SinkRunner
from sinks.ledger import LedgerSink
from streams.ledger.agent import LedgerHandler
from streams.runtime import AgentRuntime, run_agent
from streams.status.agent import StatusHandler
from streams.status.machine import HAPPY_PATH
from tests.fixtures.database import private_database
from tests.fixtures.events import metadata, transfer_requested
from tests.fixtures.kafka import read_all
from tests.fixtures.ledger import open_accounts
from tests.fixtures.running import running
from tests.fixtures.waiting import wait_for
from topics.codec import AvroCodec
from topics.deadletter import ERROR_CLASS, ERROR_MESSAGE
from topics.producer import EventProducer
from topics.schemas import load_store
from topics.settings import REPO_ROOT

RUN = uuid.uuid4().hex[:8]
HAPPY = list(HAPPY_PATH[1:])
DISPATCHED = HAPPY[HAPPY.index("SENT_TO_PROVIDER") :]
"""What providers report: the status agent itself validates and reserves."""


def tid(n: int) -> str:
    return f"tx-{RUN}-{n}"


def report(n: int, status: str, *, expected_version: int | None = None) -> dict:
    return {
        "metadata": metadata("payments.transaction.status_reported", correlation_id=f"corr-{RUN}-{n}"),
        "account_id": f"acc-{RUN}-{n}",
        "transaction_id": tid(n),
        "status": status,
        "reason": f"provider says {status.lower()}",
        "provider": "truelayer",
        "provider_update_id": f"pu-{uuid.uuid4().hex[:6]}",
        "expected_version": expected_version,
    }


@pytest.fixture(scope="module")
def codec():
    return AvroCodec(load_store(REPO_ROOT / "avro"))


def status_runtime(db, codec, catalog, group):
    return AgentRuntime(
        db,
        StatusHandler(db.as_database_role("status_agent"), codec),
        codec,
        catalog,
        batch_size=200,
        linger=0.05,
        group_id=f"{group}.status",
    )


def ledger_agent(db, codec, catalog, group):
    return AgentRuntime(
        db, LedgerHandler(), codec, catalog, batch_size=200, linger=0.05, group_id=f"{group}.ledger"
    )


def ledger_sink(db, codec, group):
    """Its own group: a member that joined a shared group but is not polled yet would stall the
    group's rebalance and get the running agent evicted (UNKNOWN_MEMBER_ID on commit)."""
    return SinkRunner(
        db.as_database_role("ledger_sink"),
        LedgerSink(),
        codec,
        batch_size=200,
        linger=0.05,
        group_id=f"{group}.ledger-sink",
    )


def statuses(conn) -> dict[str, tuple[str, int]]:
    rows = conn.execute(
        "SELECT transaction_id, status, version FROM transactions WHERE transaction_id LIKE %s",
        (f"tx-{RUN}-%",),
    )
    return {r[0]: (r[1], r[2]) for r in rows.fetchall()}


def snapshot(conn) -> tuple:
    """This run's rows (other runs' history on a developer machine may be in the same topics)."""
    like = f"%{RUN}%"
    return conn.execute(
        """SELECT (SELECT md5(string_agg(transaction_id || status || version, ',' ORDER BY transaction_id)) FROM transactions WHERE transaction_id LIKE %(l)s),
                  (SELECT count(*) FROM transaction_status_history WHERE transaction_id LIKE %(l)s),
                  (SELECT md5(string_agg(event_id::text || to_status, ',' ORDER BY event_id)) FROM transaction_status_history WHERE transaction_id LIKE %(l)s),
                  (SELECT count(*) FROM journal_entries WHERE reference_id LIKE %(l)s),
                  (SELECT count(*) FROM entries e JOIN journal_entries j USING (journal_entry_id) WHERE j.reference_id LIKE %(l)s),
                  (SELECT md5(string_agg(ledger_account || debits || ':' || credits, ',' ORDER BY ledger_account)) FROM balances WHERE ledger_account LIKE %(l)s),
                  (SELECT count(*) FROM transaction_status_parked WHERE transaction_id LIKE %(l)s)""",
        {"l": like},
    ).fetchone()


@pytest.fixture(scope="module")
def lifecycle(services, codec, catalog):
    with (
        private_database(services) as db,
        psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn,
    ):
        producer = EventProducer(db, codec, catalog)
        group = f"lifecycle-{RUN}"
        open_accounts(db, [f"acc-{RUN}-{n}" for n in (1, 2, 3, 4)], overdraft=100_000)
        agent, sink = ledger_agent(db, codec, catalog, group), ledger_sink(db, codec, group)
        with (
            running(run_agent, status_runtime(db, codec, catalog, group)),
            running(run_agent, agent),
            running(sink.run),
        ):
            for n in (1, 2, 3):
                record = transfer_requested(account=f"acc-{RUN}-{n}", units=10_000 * n, transfer_id=tid(n))
                record["metadata"]["correlation_id"] = f"corr-{RUN}-{n}"
                producer.produce("payments.transfer.requested.v1", record)
            producer.flush()
            wait_for(lambda: len(statuses(conn)) == 3, 60, what="three transactions created")

            reports = [report(1, "BALANCE_RESERVED")]  # the current status again: changes nothing
            reports += [report(1, s) for s in DISPATCHED]
            reports.append(report(1, "PROVIDER_CONFIRMING", expected_version=3))  # stale: to the DLQ
            reports += [report(2, "PROVIDER_CONFIRMING")]  # illegal from BALANCE_RESERVED: to the DLQ
            reports += [report(2, s) for s in DISPATCHED]  # later events still flow
            for r in reports:
                producer.produce("payments.transaction.status_reported.v1", r)
            producer.flush()
            wait_for(
                lambda: (
                    statuses(conn)
                    == {tid(1): ("COMPLETED", 7), tid(2): ("COMPLETED", 7), tid(3): ("BALANCE_RESERVED", 3)}
                ),
                60,
                what="lifecycles to progress",
            )
            # the block decision comes on another topic: only after the reservation is it a compensation
            producer.produce(
                "compliance.transaction.blocked.v1",
                {
                    "metadata": metadata("compliance.transaction.blocked", correlation_id=f"corr-{RUN}-3"),
                    "account_id": f"acc-{RUN}-3",
                    "transaction_id": tid(3),
                    "rule_id": "ofac-sdn",
                    "reason": "counterparty on the sanctions list",
                    "address": None,
                },
            )
            producer.flush()
            wait_for(lambda: statuses(conn)[tid(3)] == ("COMPENSATING", 4), 60, what="the block")
            # a report that overtakes its transfer request waits for it, then applies
            producer.produce("payments.transaction.status_reported.v1", report(4, "SENT_TO_PROVIDER"))
            producer.flush()
            wait_for(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM transaction_status_parked WHERE transaction_id = %s", (tid(4),)
                    ).fetchone()[0]
                    == 1
                ),
                60,
                what="the early report to be parked",
            )
            early = transfer_requested(account=f"acc-{RUN}-4", units=400, transfer_id=tid(4))
            producer.produce("payments.transfer.requested.v1", early)
            producer.produce("payments.transaction.status_reported.v1", report(3, "FAILED"))
            producer.flush()
            wait_for(lambda: statuses(conn)[tid(3)] == ("FAILED", 5), 60, what="compensation to finish")
            wait_for(
                lambda: statuses(conn).get(tid(4)) == ("SENT_TO_PROVIDER", 4),
                60,
                what="the parked report to apply",
            )
            wait_for(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM journal_entries WHERE reference_id IN (%s, %s)",
                        ("txn:" + tid(1), "txn:" + tid(2)),
                    ).fetchone()[0]
                    == 2
                ),
                60,
                what="journals posted",
            )
        yield db, conn, group


def test_a_transaction_walks_its_whole_lifecycle_with_complete_history(lifecycle):
    _, conn, _ = lifecycle
    history = conn.execute(
        "SELECT from_status, to_status, version, correlation_id FROM transaction_status_history WHERE transaction_id = %s ORDER BY version",
        (tid(1),),
    ).fetchall()
    assert [(h[0], h[1], h[2]) for h in history] == list(
        zip([None, "INITIATED", *HAPPY[:-1]], ["INITIATED", *HAPPY], range(1, 8), strict=True)
    )
    assert {h[3] for h in history} == {f"corr-{RUN}-1"}
    amount = conn.execute(
        "SELECT amount_units, currency, exponent FROM transactions WHERE transaction_id = %s", (tid(1),)
    ).fetchone()
    assert amount == (10_000, "EUR", 2)


def test_a_report_that_overtakes_its_transfer_request_is_applied_after_it(lifecycle):
    _, conn, _ = lifecycle
    history = conn.execute(
        "SELECT from_status, to_status, version FROM transaction_status_history WHERE transaction_id = %s ORDER BY version",
        (tid(4),),
    ).fetchall()
    assert history == [
        (None, "INITIATED", 1),
        ("INITIATED", "VALIDATING", 2),
        ("VALIDATING", "BALANCE_RESERVED", 3),
        ("BALANCE_RESERVED", "SENT_TO_PROVIDER", 4),
    ]
    assert (
        conn.execute(
            "SELECT count(*) FROM transaction_status_parked WHERE transaction_id = %s", (tid(4),)
        ).fetchone()[0]
        == 0
    )


def test_a_block_after_reservation_compensates_then_fails(lifecycle):
    _, conn, _ = lifecycle
    tail = conn.execute(
        "SELECT to_status, reason FROM transaction_status_history WHERE transaction_id = %s ORDER BY version DESC LIMIT 2",
        (tid(3),),
    ).fetchall()
    assert tail[0][0] == "FAILED"
    assert tail[1] == ("COMPENSATING", "blocked by ofac-sdn: counterparty on the sanctions list")
    hold = conn.execute("SELECT status, reason FROM holds WHERE hold_id = %s", ("txn:" + tid(3),)).fetchone()
    assert hold[0] == "RELEASED" and "blocked by ofac-sdn" in hold[1]


def test_each_reservation_holds_its_amount_plus_fees_and_the_posting_completes_it(lifecycle):
    _, conn, _ = lifecycle
    holds = {
        hold: (status, int(amount))
        for hold, status, amount in conn.execute(
            "SELECT hold_id, status, amount FROM holds WHERE hold_id LIKE %s", (f"txn:tx-{RUN}-%",)
        ).fetchall()
    }
    # 10_000 EUR cents and their default fees (0.25% platform + 10 provider + 2 compliance): 25 + 12
    assert holds["txn:" + tid(1)] == ("COMPLETED", 10_037)
    assert holds["txn:" + tid(4)][0] == "ACTIVE"  # at the provider: held until its posting
    assert conn.execute(
        "SELECT expires_at = 'infinity' FROM holds WHERE hold_id = %s", ("txn:" + tid(4),)
    ).fetchone() == (True,)


def test_illegal_and_stale_reports_go_to_the_dead_letter_topic_with_the_reason(services, lifecycle):
    messages = read_all(services, "dlq.status_agent.dead_lettered.v1")
    reasons = [
        dict(m.headers())[ERROR_MESSAGE].decode()
        for m in messages
        if RUN in dict(m.headers())[ERROR_MESSAGE].decode()
    ]
    assert sorted(reasons) == sorted(
        [
            f"transaction {tid(1)}: stale report: it expected version 3, the transaction is at version 7 (COMPLETED)",
            f"transaction {tid(2)}: illegal transition BALANCE_RESERVED -> PROVIDER_CONFIRMING",
        ]
    )
    assert {
        dict(m.headers())[ERROR_CLASS] for m in messages if RUN.encode() in dict(m.headers())[ERROR_MESSAGE]
    } == {b"Refused"}


def test_completed_transactions_are_posted_balanced_and_accounts_sum_to_zero(lifecycle):
    _, conn, _ = lifecycle
    lines = conn.execute(
        """SELECT e.ledger_account, e.side, e.amount FROM entries e JOIN journal_entries j USING (journal_entry_id)
           WHERE j.reference_id = %s ORDER BY e.line_no""",
        ("txn:" + tid(2),),
    ).fetchall()
    assert lines == [
        (f"customer:tenant-1/acc-{RUN}-2:EUR", "DEBIT", 20_000),
        ("clearing:tenant-1/sepa:EUR", "CREDIT", 20_000),
    ]
    trial = conn.execute("SELECT currency, sum(debits - credits) FROM balances GROUP BY currency").fetchall()
    assert trial and all(total == 0 for _, total in trial)
    assert (
        conn.execute(
            "SELECT count(*) FROM journal_entries WHERE reference_id = %s", ("txn:" + tid(3),)
        ).fetchone()[0]
        == 0
    )


def test_replaying_every_input_topic_changes_no_table(services, codec, catalog, lifecycle):
    db, conn, _ = lifecycle
    before = snapshot(conn)
    replay = f"replay-{uuid.uuid4().hex[:6]}"
    consumed = [
        run_agent(status_runtime(db, codec, catalog, replay), idle_exit=3).consumed,
        run_agent(ledger_agent(db, codec, catalog, replay), idle_exit=3).consumed,
        ledger_sink(db, codec, replay).run(idle_exit=3).consumed,
    ]
    assert all(n > 0 for n in consumed), consumed  # each stage replayed something
    assert snapshot(conn) == before
