"""PostgreSQL stopped for longer than `max.poll.interval.ms` under a running agent and two sinks
(the ledger sink, one batch at a time; the transfers sink, which may write two at once).

Each pauses their partitions and keep polling while the database is down, so neither leaves
its group (no rebalance); once it is back they resume. Nothing is lost and nothing is
duplicated. The poll interval is cut to 10 s here (librdkafka's floor is the session timeout)
so the outage outlasts it without a five-minute test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import psycopg
import pytest

from ops.stack.services import Postgres, port_open
from sinks.base import SinkRunner
from sinks.ledger import LedgerSink
from sinks.transfers import TransferRequestSink
from streams.ledger.postings import fee_assessed
from streams.runtime import AgentRuntime
from streams.status.agent import StatusHandler
from tests.fixtures.database import private_database
from tests.fixtures.events import metadata, transfer_requested
from tests.fixtures.kafka import fresh_topic, produce_raw
from tests.fixtures.ledger import open_accounts
from tests.fixtures.running import running
from tests.fixtures.waiting import wait_for
from topics.codec import AvroCodec
from topics.consuming import start_at_end
from topics.health import HealthServer
from topics.journals import journal_entry_id, journal_record
from topics.schemas import load_store
from topics.settings import REPO_ROOT

RUN = uuid.uuid4().hex[:8]
POLL_INTERVAL_MS = 10_000
OUTAGE_SECONDS = 15
EACH = 200
CONFIG = {"max.poll.interval.ms": POLL_INTERVAL_MS, "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


def stack_postgres(settings) -> Postgres:
    pg = Postgres(settings.stack_dir, settings.cache_dir)
    if pg.process.pid() is None:
        pytest.skip("PostgreSQL is not the local stack's (a container): this test stops and starts it")
    return pg


def journals(codec, first: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(first, first + EACH):
        account = f"acc-out-{RUN}-{i % 7}"
        journal = fee_assessed(
            tenant="tenant-1",
            fee_id=f"out-{RUN}-{i}",
            account_id=account,
            units=1 + i % 50,
            currency="EUR",
            exponent=2,
        )
        record = journal_record(
            journal,
            journal_entry_id=journal_entry_id(journal.reference_id),
            account_id=account,
            metadata=metadata("ledger.journal.posted"),
        )
        out.append((account.encode(), codec.encode("ledger.journal.posted.v1", record)))
    return out


def requests(codec, first: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(first, first + EACH):
        account = f"acc-out-{RUN}-{i % 7}"
        record = transfer_requested(account, 100 + i, transfer_id=f"out-{RUN}-{i}")
        out.append((account.encode(), codec.encode("payments.transfer.requested.v1", record)))
    return out


def test_a_database_outage_longer_than_the_poll_interval_loses_and_duplicates_nothing(services, catalog):
    pg = stack_postgres(services)
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    journal_topic, request_topic = fresh_topic(services, "outage-journals"), "payments.transfer.requested.v1"
    # every input of the agent from now on: not other tests' history
    start_at_end(services, f"outage-agent-{RUN}", catalog.consumers["status_agent"].inputs)
    start_at_end(services, f"outage-transfers-{RUN}", [request_topic])
    with private_database(services) as db:
        open_accounts(db, [f"acc-out-{RUN}-{i}" for i in range(7)], overdraft=10**9)
        sink = SinkRunner(
            db.as_database_role("ledger_sink"),
            LedgerSink(),
            codec,
            batch_size=100,
            linger=0.05,
            group_id=f"outage-sink-{RUN}",
            topics=[journal_topic],
            consumer_config=CONFIG,
        )
        transfers = SinkRunner(
            db.as_database_role("transfers_sink"),
            TransferRequestSink(),
            codec,
            batch_size=EACH // 4,
            linger=0.05,
            group_id=f"outage-transfers-{RUN}",
            consumer_config=CONFIG,
        )
        agent = AgentRuntime(
            db,
            StatusHandler(db.as_database_role("status_agent"), codec),
            codec,
            catalog,
            batch_size=100,
            linger=0.05,
            group_id=f"outage-agent-{RUN}",
            consumer_config=CONFIG,
        )
        url = db.database_url.get_secret_value()

        def counts() -> tuple[int, int, int]:
            with psycopg.connect(url, connect_timeout=3) as conn:
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM journal_entries), "
                    "(SELECT count(*) FROM transactions WHERE status = 'BALANCE_RESERVED'), "
                    "(SELECT count(*) FROM transaction_status_history), "
                    "(SELECT count(*) FROM transfer_requests), "
                    "(SELECT count(DISTINCT event_id) FROM transfer_requests)"
                ).fetchone()
            assert row is not None
            journals, reserved, steps, requests, distinct = (int(v) for v in row)
            assert steps <= 3 * reserved + 3 * EACH  # INITIATED, VALIDATING, BALANCE_RESERVED once each
            assert requests == distinct  # no request stored twice
            return journals, reserved, requests

        health = HealthServer(0, sink.live, sink.ready, host="127.0.0.1")

        def probe(path: str) -> int:
            return httpx.get(f"http://127.0.0.1:{health.port}{path}", timeout=5).status_code

        with running(sink.run), running(agent.run), running(transfers.run):
            produce_raw(services, journal_topic, journals(codec, 0))
            produce_raw(services, request_topic, requests(codec, 0))
            wait_for(
                lambda: counts() == (EACH, EACH, EACH), 60, what=f"the first events written (now {counts()})"
            )
            assert (probe("/healthz"), probe("/readyz")) == (200, 200)
            pid = pg.process.pid()
            assert pid is not None
            os.kill(pid, signal.SIGINT)  # fast shutdown: every connection is cut
            assert wait_for(lambda: not port_open(pg.port), 30, what="PostgreSQL stopped")
            down = time.monotonic()
            produce_raw(services, journal_topic, journals(codec, EACH))  # arrives while the database is down
            produce_raw(services, request_topic, requests(codec, EACH))
            wait_for(
                lambda: sink.stats.retries > 0 and agent.stats.retries > 0 and transfers.stats.retries > 0,
                30,
                what="all three retrying",
            )
            assert wait_for(lambda: probe("/readyz") == 503, 10, what="the paused sink not ready")
            assert probe("/healthz") == 200  # alive: it keeps polling Kafka while paused
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down)))  # the outage itself, not a sync
            restarted = subprocess.run(
                [sys.executable, "-m", "ops.cli", "stack", "up", "--no-registry"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert restarted.returncode == 0, restarted.stderr
            assert wait_for(pg.healthy, 60, what="PostgreSQL back")
            wait_for(
                lambda: counts() == (2 * EACH, 2 * EACH, 2 * EACH),
                90,
                what="everything written after the outage",
            )
            assert time.monotonic() - down > POLL_INTERVAL_MS / 1000
            assert wait_for(lambda: probe("/readyz") == 200, 10, what="the sink ready again")
            metrics = httpx.get(f"http://127.0.0.1:{health.port}/metrics", timeout=5).text
        health.close()
        lag = [
            line
            for line in metrics.splitlines()
            if line.startswith("kafka_consumergroup_lag{") and f'consumergroup="outage-sink-{RUN}"' in line
        ]
        assert lag and all(line.endswith(" 0.0") for line in lag), lag  # every partition caught up
        assert f'kafka_consumergroup_current_offset{{consumergroup="outage-sink-{RUN}"' in metrics
        # none left its group: no rebalance
        assert (sink.assignments, agent.assignments, transfers.assignments) == (1, 1, 1)
        assert all(w.stats.paused_seconds > POLL_INTERVAL_MS / 1000 for w in (sink, agent, transfers))
        assert counts() == (2 * EACH, 2 * EACH, 2 * EACH)  # nothing lost, nothing duplicated
        with psycopg.connect(url) as conn:
            history = conn.execute(
                "SELECT count(*), count(DISTINCT (transaction_id, version)) FROM transaction_status_history"
            ).fetchone()
        assert history == (3 * 2 * EACH, 3 * 2 * EACH)
        assert sink.stats.written == 2 * EACH and sink.stats.dead_lettered == 0
        assert agent.stats.consumed == 2 * EACH and agent.stats.dead_lettered == 0
        assert transfers.stats.written == 2 * EACH and transfers.stats.dead_lettered == 0
