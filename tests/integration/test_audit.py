"""The audit trail on the real stack: a transfer's whole path, masking, append-only, replay."""

from __future__ import annotations

import re
import uuid
from contextlib import ExitStack
from functools import partial

import psycopg
import pytest
from psycopg import sql

from connectors.outbox import OutboxRelay
from ops.audit_trace import trace
from ops.cli import main
from sinks.audit import WRITER_ROLE, AuditSink
from sinks.base import SinkRunner
from sinks.ledger import LedgerSink
from streams.fees.agent import FeesHandler
from streams.ledger.agent import LedgerHandler
from streams.pricing import load_pricing
from streams.runtime import AgentRuntime, run_agent
from streams.status.agent import StatusHandler
from streams.status.machine import HAPPY_PATH
from tests.fixtures.database import private_database
from tests.fixtures.events import metadata, transfer_requested
from tests.fixtures.ledger import open_accounts
from tests.fixtures.running import running
from tests.fixtures.waiting import wait_for
from topics.codec import AvroCodec
from topics.consuming import start_at_end
from topics.producer import EventProducer
from topics.schemas import load_store
from topics.settings import REPO_ROOT

RUN = uuid.uuid4().hex[:8]
CORRELATION = f"corr-audit-{RUN}"
TID = f"tx-audit-{RUN}"
IBAN = "GB33BUKB20201555555555"
PAN = "4242 4242 4242 4242"
HAPPY = list(HAPPY_PATH[1:])
DISPATCHED = HAPPY[HAPPY.index("SENT_TO_PROVIDER") :]
"""The reports providers send; the status agent validates and reserves by itself."""
BALANCE = "accounts.balance.updated.v1"
PATH = f"AND topic <> '{BALANCE}'"
"""The transfer's path: its events but the balance announcements, which the outbox relays."""


@pytest.fixture(scope="module")
def codec():
    return AvroCodec(load_store(REPO_ROOT / "avro"))


def audit_runner(db, codec, catalog, group):
    return SinkRunner(
        db.as_database_role("audit_sink"),
        AuditSink(catalog),
        codec,
        batch_size=1000,
        linger=0.05,
        group_id=f"{group}.audit",
    )


def rows(conn, *where: str) -> int:
    return int(
        conn.execute(
            "SELECT count(*) FROM audit_log WHERE correlation_id = %s " + " ".join(where), (CORRELATION,)
        ).fetchone()[0]
    )


@pytest.fixture(scope="module")
def audited(services, codec, catalog):
    pricing = load_pricing(REPO_ROOT / "streams" / "pricing.toml")
    with (
        private_database(services) as db,
        psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn,
        ExitStack() as stack,
    ):
        group = f"audit-{RUN}"

        def agent(handler):
            return partial(
                run_agent,
                AgentRuntime(
                    db,
                    handler,
                    codec,
                    catalog,
                    batch_size=300,
                    linger=0.05,
                    group_id=f"{group}.{handler.name}",
                ),
            )

        open_accounts(db, [f"acc-audit-{RUN}"], overdraft=100_000)
        start_at_end(db, f"{group}.audit", catalog.schema_topics())  # this run's events, not history
        for work in (
            agent(StatusHandler(db.as_database_role("status_agent"), codec)),
            agent(FeesHandler(pricing.fees)),
            agent(LedgerHandler()),
            SinkRunner(
                db.as_database_role("ledger_sink"),
                LedgerSink(),
                codec,
                batch_size=300,
                linger=0.05,
                group_id=f"{group}.ledger",
            ).run,
            audit_runner(db, codec, catalog, group).run,
            partial(OutboxRelay(db.as_database_role("outbox_relay"), codec, catalog).run, poll=0.05),
        ):
            stack.enter_context(running(work))
        producer = EventProducer(db, codec, catalog)
        producer.produce(
            "audit.events.log.v1",
            {
                "metadata": metadata("audit.events.log", correlation_id=CORRELATION, user_id="user-7"),
                "service": "command-api",
                "action": "transfer.accepted",
                "entity_type": "transaction",
                "entity_id": TID,
                "actor": "user-7",
                "outcome": "accepted",
                "details": {
                    "iban": IBAN,
                    "memo": f"paid with card {PAN}",
                    "before": "none",
                    "after": "accepted",
                },
            },
        )
        request = transfer_requested(
            account=f"acc-audit-{RUN}", units=50_000, transfer_id=TID, beneficiary_reference=IBAN
        )
        request["metadata"]["correlation_id"] = CORRELATION
        producer.produce("payments.transfer.requested.v1", request)
        producer.flush()
        wait_for(
            lambda: rows(conn, "AND topic = 'payments.transaction.created.v1'") == 1, 60, what="creation"
        )
        for status in DISPATCHED:
            producer.produce(
                "payments.transaction.status_reported.v1",
                {
                    "metadata": metadata("payments.transaction.status_reported", correlation_id=CORRELATION),
                    "account_id": f"acc-audit-{RUN}",
                    "transaction_id": TID,
                    "status": status,
                    "reason": None,
                    "provider": "truelayer",
                    "provider_update_id": None,
                    "expected_version": None,
                },
            )
        producer.flush()
        # the trace event, the request, its creation and seven status changes, four reports, the
        # completion, the fee, and two journals (the transfer's and the fee's)
        wait_for(lambda: rows(conn, PATH) == 18, 90, what="the whole path audited")
        # both journals stored: every balance change is in the outbox, and is then relayed and audited
        wait_for(
            lambda: journals(conn) == 2 and balances_audited(conn), 60, what="the balance changes audited"
        )
        yield db, conn


def journals(conn) -> int:
    return int(
        conn.execute(
            "SELECT count(*) FROM journal_entries WHERE correlation_id = %s", (CORRELATION,)
        ).fetchone()[0]
    )


def balances_audited(conn) -> bool:
    """Every balance change of the transfer's account is published and audited under its correlation id."""
    outbox = conn.execute(
        "SELECT count(*) FILTER (WHERE status <> 'published'), count(*) FROM outbox WHERE topic = %s AND key = %s",
        (BALANCE, f"acc-audit-{RUN}".encode()),
    ).fetchone()
    return outbox[0] == 0 and rows(conn, f"AND topic = '{BALANCE}'") == outbox[1] > 0


def test_audit_trace_shows_the_transfer_from_command_to_ledger(audited, monkeypatch, capsys):
    db, conn = audited
    topics = [s.topic for s in trace(conn, CORRELATION, db.environment) if s.topic != BALANCE]
    path = [t for i, t in enumerate(topics) if i == 0 or topics[i - 1] != t]
    reported, changed = "payments.transaction.status_reported.v1", "payments.transaction.status_changed.v1"
    assert path == [
        "audit.events.log.v1",
        "payments.transfer.requested.v1",
        "payments.transaction.created.v1",
        changed,
        *[reported, changed] * len(DISPATCHED),
        "payments.transaction.completed.v1",
        "billing.fee.assessed.v1",
        "ledger.journal.posted.v1",
    ]
    assert topics[0] == "audit.events.log.v1" and topics[-1] == "ledger.journal.posted.v1"
    assert topics.index("payments.transaction.completed.v1") < topics.index("ledger.journal.posted.v1")
    monkeypatch.setenv("DATABASE_URL", db.database_url.get_secret_value())
    assert main(["audit", "trace", CORRELATION]) == 0
    printed = capsys.readouterr().out
    assert "ledger.journal.posted.v1" in printed and "COMPLETED" in printed and "PAN redacted" in printed
    assert main(["audit", "trace", f"nobody-{RUN}"]) == 1


def test_the_balance_changes_the_transfer_made_are_traced_to_the_events_that_made_them(audited):
    db, conn = audited

    def ids(topic: str) -> set[str]:
        found = conn.execute(
            "SELECT event_id::text FROM audit_log WHERE correlation_id = %s AND topic = %s",
            (CORRELATION, topic),
        ).fetchall()
        return {i for (i,) in found}

    announced = conn.execute(
        "SELECT causation_id, payload FROM audit_log WHERE correlation_id = %s AND topic = %s "
        "ORDER BY occurred_at, kafka_offset",
        (CORRELATION, BALANCE),
    ).fetchall()
    [request], posted = ids("payments.transfer.requested.v1"), ids("ledger.journal.posted.v1")
    reserved = [int(payload["reserved"]["units"]) for _, payload in announced]
    assert announced[0][0] == request and reserved[0] > 50_000  # the reservation: amount plus fees
    assert {cause for cause, _ in announced[1:]} <= posted and len(announced) >= 2  # the postings
    assert reserved[-1] == 0  # the posting completed the hold
    changes = [s.change for s in trace(conn, CORRELATION, db.environment) if s.topic == BALANCE]
    assert len(changes) == len(announced)
    assert re.fullmatch(r"available \d+\.\d\d EUR \(total -\d+\.\d\d, reserved 0\.00\)", changes[-1]), changes


def test_every_event_is_audited_once_with_its_context(audited):
    _, conn = audited
    changes = conn.execute(
        "SELECT before->>'status', after->>'status', actor, entity_type, entity_id FROM audit_log "
        "WHERE correlation_id = %s AND topic = 'payments.transaction.status_changed.v1' "
        # the steps one request takes share its time: the topic's order (one partition per account) decides
        "ORDER BY occurred_at, kafka_partition, kafka_offset",
        (CORRELATION,),
    ).fetchall()
    assert [(b, a) for b, a, *_ in changes] == list(
        zip([None, "INITIATED", *HAPPY[:-1]], ["INITIATED", *HAPPY], strict=True)
    )
    assert {(e, i) for *_, e, i in changes} == {("transaction", TID)}
    dupes = conn.execute(
        "SELECT event_id FROM audit_log WHERE correlation_id = %s GROUP BY event_id HAVING count(*) > 1",
        (CORRELATION,),
    ).fetchall()
    assert dupes == []


def test_account_numbers_are_masked_and_pans_never_stored(audited):
    _, conn = audited
    payloads = conn.execute(
        "SELECT topic, payload::text, pan_redacted FROM audit_log WHERE correlation_id = %s", (CORRELATION,)
    ).fetchall()
    assert all(IBAN not in p and "4242" * 4 not in p.replace(" ", "") for _, p, _ in payloads)
    flagged = {t for t, _, pan in payloads if pan}
    assert flagged == {"audit.events.log.v1"}
    trace_payload = conn.execute(
        "SELECT payload FROM audit_log WHERE correlation_id = %s AND topic = 'audit.events.log.v1'",
        (CORRELATION,),
    ).fetchone()[0]
    assert trace_payload["details"]["iban"] == "****5555"
    assert trace_payload["details"]["memo"] == "paid with card [PAN REDACTED]"


def test_the_audit_log_is_append_only(audited):
    db, owner = audited
    with psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE correlation_id = %s", (CORRELATION,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute("DELETE FROM audit_log WHERE correlation_id = %s", (CORRELATION,))
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(WRITER_ROLE)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE correlation_id = %s", (CORRELATION,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            conn.execute("DELETE FROM audit_log WHERE correlation_id = %s", (CORRELATION,))
    partitions = owner.execute(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_log'::regclass"
    ).fetchone()[0]
    assert partitions >= 37  # 36 months ahead plus the default


def test_replaying_every_topic_adds_no_audit_row(services, codec, catalog, audited):
    db, conn = audited
    mine = "SELECT count(*), md5(string_agg(event_id::text, ',' ORDER BY event_id)) FROM audit_log WHERE correlation_id = %s"
    before = conn.execute(mine, (CORRELATION,)).fetchone()
    stats = audit_runner(db, codec, catalog, f"replay-{uuid.uuid4().hex[:6]}").run(idle_exit=3)
    assert stats.consumed >= 18  # at least this transfer's whole path was read again
    assert conn.execute(mine, (CORRELATION,)).fetchone() == before
    assert before[0] == 18 + rows(conn, f"AND topic = '{BALANCE}'")
