"""A sink that may overlap its batches (`Sink.overlap`) writes the next batch while the one
before it is still open, and still commits offsets batch after batch in the order they were
consumed: a later batch written first commits no offset until the earlier one is written."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from ops.offsets import committed
from sinks.base import SinkRunner
from sinks.staging import Row
from sinks.transfers import TransferRequestSink
from tests.fixtures.database import private_database
from tests.fixtures.events import transfer_requested
from tests.fixtures.kafka import fresh_topic, produce_raw
from tests.fixtures.running import running
from tests.fixtures.waiting import wait_for
from topics.codec import AvroCodec
from topics.errors import LedgerstreamError
from topics.names import PAYMENTS_TRANSFER_REQUESTED_V1
from topics.schemas import load_store
from topics.settings import REPO_ROOT

pytestmark = pytest.mark.integration

BATCH = 50
BATCHES = 4


def _requests_topic(services: Any, codec: AvroCodec, prefix: str, account: str, count: int) -> str:
    """A one-partition topic holding `count` transfer requests of `account`."""
    topic = fresh_topic(services, prefix, partitions=1)
    produce_raw(
        services,
        topic,
        [
            (b"k", codec.encode(PAYMENTS_TRANSFER_REQUESTED_V1, transfer_requested(account, 100 + i)))
            for i in range(count)
        ],
    )
    return topic


def _python_rows_runner(
    db: Any, sink: TransferRequestSink, codec: AvroCodec, topic: str, group: str
) -> SinkRunner:
    """The sink on `topic` in batches of BATCH, its rows made by the Python path (each carries its
    offset, which `_FirstBatchKnown` reads)."""
    runner = SinkRunner(
        db.as_database_role("transfers_sink"),
        sink,
        codec,
        batch_size=BATCH,
        linger=0.05,
        group_id=group,
        topics=[topic],
        input_aliases={topic: PAYMENTS_TRANSFER_REQUESTED_V1},
    )
    runner.fast_rows = {}
    return runner


def _committed_offset(admin: AdminClient, group: str, topic: str) -> int:
    return committed(admin, group, [TopicPartition(topic, 0)])[(topic, 0)]


OFFSET_AT = TransferRequestSink.columns.index("kafka_offset")


class _FirstBatchKnown(TransferRequestSink):
    """The transfers sink, knowing the batch consumed first (the one holding offset 0) when it
    writes it: batches are written on two threads, in no set order. Its rows are the Python
    path's (the runner's native writer is turned off), so each carries its offset."""

    def _first(self, items: Sequence[Row]) -> bool:
        return any(row[OFFSET_AT] == 0 for row in items)


class HeldFirstBatch(_FirstBatchKnown):
    """The transfers sink, its first batch held open (its rows written, not committed) until
    the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.holding = threading.Event()

    def write(self, conn: psycopg.Connection, items: Sequence[Row]) -> None:
        first = self._first(items)
        super().write(conn, items)
        if first:
            self.holding.set()
            assert self.release.wait(60), "the test never let the first batch go"


def test_a_later_batch_written_first_commits_nothing_before_the_earlier_one(services):
    assert TransferRequestSink.overlap == 2
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    run = uuid.uuid4().hex[:8]
    total = BATCH * BATCHES
    topic = _requests_topic(services, codec, "overlap", f"acc-ov-{run}", total)
    group = f"overlap-{run}"
    admin = AdminClient(services.kafka_config())

    def committed_offset() -> int:
        return _committed_offset(admin, group, topic)

    with private_database(services) as db:
        url = db.database_url.get_secret_value()

        def stored() -> tuple[int, int]:
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT count(*), count(DISTINCT event_id) FROM transfer_requests WHERE account_id = %s",
                    (f"acc-ov-{run}",),
                ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

        sink = HeldFirstBatch()
        runner = _python_rows_runner(db, sink, codec, topic, group)
        with running(runner.run):
            assert sink.holding.wait(60), "the first batch never reached the database"
            # the second batch is written and committed beside the first, which stays open
            wait_for(lambda: stored()[0] >= BATCH, 60, what="the second batch committed to the database")
            assert stored()[0] < total
            assert committed_offset() < 0  # and yet no offset is committed: the first is not written
            # while it waits for the first batch, the worker polls and waits; it does not spin
            window = threading.Event()
            cpu, wall = time.process_time(), time.monotonic()
            window.wait(2.0)  # a window to measure over, not a synchronisation
            assert (time.process_time() - cpu) / (time.monotonic() - wall) < 0.5
            sink.release.set()
            wait_for(lambda: committed_offset() == total, 60, what="every offset committed")
            assert stored() == (total, total)  # nothing lost, nothing twice
        stats: Any = runner.stats
        assert stats.consumed == total and stats.written == total and stats.dead_lettered == 0
        assert stats.batches >= BATCHES


class RefusedBesideAnOutage(_FirstBatchKnown):
    """The first batch is refused by the schema (a grant missing) while the second one, worked
    beside it, meets a database that is down for as long as it retries."""

    def __init__(self) -> None:
        super().__init__()
        self.retrying = threading.Event()

    def write(self, conn: psycopg.Connection, items: Sequence[Row]) -> None:
        if self._first(items):
            assert self.retrying.wait(60), "the second batch never started"
            raise psycopg.errors.InsufficientPrivilege("permission denied for table transfer_requests")
        self.retrying.set()
        raise psycopg.OperationalError("connection refused")


def test_a_worker_stops_on_a_refused_batch_without_waiting_out_the_one_beside_it(services):
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    run = uuid.uuid4().hex[:8]
    topic = _requests_topic(services, codec, "overlap-refused", f"acc-or-{run}", BATCH * BATCHES)
    with private_database(services) as db:
        sink = RefusedBesideAnOutage()
        runner = _python_rows_runner(db, sink, codec, topic, f"overlap-refused-{run}")
        started = time.monotonic()
        with pytest.raises(LedgerstreamError, match="the database refused the work"):
            runner.run(idle_exit=30)
        assert time.monotonic() - started < 25  # not the 30 s idle exit, nor a retry loop without end
        assert sink.retrying.is_set() and runner.stats.retries >= 1
        # nothing committed: neither batch was written
        assert _committed_offset(AdminClient(services.kafka_config()), f"overlap-refused-{run}", topic) < 0
