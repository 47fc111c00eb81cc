"""A sink killed with SIGKILL in the middle of its work loses and duplicates nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import psycopg

from streams.ledger.postings import fee_assessed, transaction_completed
from tests.fixtures.database import private_database
from tests.fixtures.events import metadata
from tests.fixtures.kafka import fresh_topic, produce_raw
from tests.fixtures.waiting import wait_for
from topics.codec import AvroCodec
from topics.journals import journal_entry_id, journal_record
from topics.schemas import load_store
from topics.settings import REPO_ROOT

TOTAL = 30_000


def sink_process(
    settings, topic: str, group: str, *extra: str, capture: bool = True, fault: str | None = None
) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SCHEMA_REGISTRY_URL": "",
    }
    env.pop("LEDGERSTREAM_FAULT", None)
    if fault is not None:
        env["LEDGERSTREAM_FAULT"] = fault
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ops.cli",
            "sink",
            "ledger",
            "--topic",
            topic,
            "--group",
            group,
            "--batch-size",
            "500",
            "--linger",
            "0.05",
            "--operator",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.PIPE if capture else subprocess.DEVNULL,
    )


def count(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # table names are literals here


def journals(codec: AvroCodec) -> list[tuple[bytes, bytes]]:
    """TOTAL journals over 97 accounts, fees and completed transfers alternating."""
    messages = []
    for i in range(TOTAL):
        account = f"acc-{i % 97}"
        journal = (
            fee_assessed(
                tenant="tenant-1",
                fee_id=f"k{i}",
                account_id=account,
                units=1 + i % 300,
                currency="EUR",
                exponent=2,
            )
            if i % 2
            else transaction_completed(
                tenant="tenant-1",
                transaction_id=f"k{i}",
                account_id=account,
                direction="CREDIT",
                units=10_000 + i,
                currency="EUR",
                exponent=2,
                rail="sepa",
            )
        )
        record = journal_record(
            journal,
            journal_entry_id=journal_entry_id(journal.reference_id),
            account_id=account,
            metadata=metadata("ledger.journal.posted"),
        )
        messages.append((account.encode(), codec.encode("ledger.journal.posted.v1", record)))
    return messages


def test_sigkill_mid_batch_then_restart_loses_and_duplicates_nothing(services):
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    topic = fresh_topic(services, "crash")
    messages = journals(codec)
    produce_raw(services, topic, messages)

    with (
        private_database(services) as db,
        psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn,
    ):
        group = f"crash-{uuid.uuid4()}"
        first = sink_process(db, topic, group, capture=False)
        try:
            at_kill = wait_for(
                lambda: (n := count(conn, "journal_entries")) >= 3000 and n, timeout=120, what="first batches"
            )
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode == -signal.SIGKILL
        assert at_kill < TOTAL, "the sink finished before it could be killed mid-stream"

        second = sink_process(db, topic, group, "--idle-exit", "3")
        _, errs = second.communicate(timeout=300)
        assert second.returncode == 0, errs.decode()[-2000:]

        assert_posted_once(conn)


def assert_posted_once(conn: psycopg.Connection) -> None:
    """Every journal posted once, its entries and the balances agreeing with them."""
    expected_fees = sum(1 + i % 300 for i in range(1, TOTAL, 2))
    assert count(conn, "journal_entries") == TOTAL
    assert count(conn, "entries") == 2 * TOTAL
    assert conn.execute("SELECT count(DISTINCT reference_id) FROM journal_entries").fetchone()[0] == TOTAL
    revenue = conn.execute(
        "SELECT credits FROM balances WHERE ledger_account = 'fee_revenue:tenant-1/platform:EUR'"
    ).fetchone()[0]
    assert revenue == expected_fees
    mismatched = conn.execute(
        """SELECT b.ledger_account FROM balances b
             JOIN (SELECT ledger_account, sum(CASE WHEN side = 'DEBIT' THEN amount ELSE 0 END) d,
                          sum(CASE WHEN side = 'CREDIT' THEN amount ELSE 0 END) c
                     FROM entries GROUP BY ledger_account) e USING (ledger_account)
            WHERE b.debits <> e.d OR b.credits <> e.c"""
    ).fetchall()
    assert mismatched == []


def test_a_crash_after_the_database_commit_before_the_offset_commit_loses_and_duplicates_nothing(services):
    """#16's scenario 2: the third batch's transaction commits, then the process dies (the fault
    hook, as a kill -9) before its offsets are committed; the restart works that batch again."""
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    topic = fresh_topic(services, "crash-commit")
    produce_raw(services, topic, journals(codec))
    with (
        private_database(services) as db,
        psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn,
    ):
        group = f"crash-{uuid.uuid4()}"
        first = sink_process(db, topic, group, fault="after_work@3")
        _, errs = first.communicate(timeout=120)
        assert first.returncode == 137, errs.decode()[-2000:]
        assert b"fault: after_work #3 reached" in errs
        at_crash = count(conn, "journal_entries")
        assert 0 < at_crash < TOTAL  # three batches' journals committed, their offsets not

        second = sink_process(db, topic, group, "--idle-exit", "3")
        _, errs = second.communicate(timeout=300)
        assert second.returncode == 0, errs.decode()[-2000:]
        assert_posted_once(conn)
