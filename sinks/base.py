"""The sink framework: topic to PostgreSQL, in batches, idempotently.

A sink is `prepare(event) -> item` (the only per-table mapping; raise PoisonEvent
for an event that cannot be stored) and `write(conn, items)` (SQL for one batch,
inside one transaction, idempotent on the event's id). The runner does the rest:
- consume up to `batch_size` messages or until `linger` passes (confluent-kafka);
- decode with the codec; refuse events of the other environment;
- dead-letter what cannot be decoded or prepared, and any single event the
  database refuses (a failing batch is split in halves until the culprit is alone);
- retry transient database errors (connection lost, server restarting) with
  backoff, forever, never dead-lettering them;
- commit each partition's offset only after the database commit and after the
  dead letters are acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import psycopg
from confluent_kafka import KafkaError, Message, TopicPartition
from prometheus_client import Counter, Histogram

from sinks.errors import PoisonEvent
from topics.codec import AvroCodec
from topics.consuming import batch_consumer
from topics.deadletter import DeadLetters
from topics.errors import DecodeError
from topics.events import Event
from topics.settings import Settings

log = logging.getLogger(__name__)

Item = TypeVar("Item")

WRITTEN = Counter("ledgerstream_sink_events_total", "Events handled by a sink", ["sink", "outcome"])
BATCH_SECONDS = Histogram("ledgerstream_sink_batch_seconds", "Time to write one batch", ["sink"])

TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError)


class Sink(ABC, Generic[Item]):
    """What one table (or group of tables) needs: mapping and batch SQL."""

    name: str
    """The consumer's name in the catalog (its group and dead-letter topic derive from it)."""
    topics: tuple[str, ...]

    @abstractmethod
    def prepare(self, event: Event) -> Item:
        """Map one event to what `write` stores; raise PoisonEvent to dead-letter it."""

    @abstractmethod
    def write(self, conn: psycopg.Connection, items: Sequence[Item]) -> None:
        """Store a batch inside the caller's transaction; must be idempotent."""

    def bind(self, codec: AvroCodec) -> None:
        """Called once by the runner with this deployment's codec, for a sink that also enqueues
        events to the outbox in its own transaction."""


@dataclass
class Batch(Generic[Item]):
    """One consumed batch on its way to the database."""

    good: list[tuple[Message, Item]] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    handled: int = 0
    dead: int = 0
    refused: int = 0


@dataclass
class RunStats:
    consumed: int = 0
    written: int = 0
    dead_lettered: int = 0
    batches: int = 0
    retries: int = 0
    seconds: float = 0.0
    busy_seconds: float = 0.0
    """From the first message consumed to the last batch committed."""
    db_seconds: float = 0.0
    """Time spent writing batches (the database transaction), on the writer thread."""
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)


class SinkRunner(Generic[Item]):
    """Runs one sink as its own consumer group.

    Args:
        settings: connections and the environment this process serves.
        sink: the mapping and SQL.
        codec: decodes values (either framing).
        batch_size: most messages per database transaction.
        linger: seconds to wait for a batch to fill.
        group_id: overrides the catalog's group (a new group replays from the start).
        topics: overrides the sink's topics (e.g. a copy of a topic to replay).
    """

    def __init__(
        self,
        settings: Settings,
        sink: Sink[Item],
        codec: AvroCodec,
        *,
        batch_size: int = 2000,
        linger: float = 0.2,
        group_id: str | None = None,
        topics: Sequence[str] | None = None,
        consumer_config: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.codec = codec
        self.batch_size = batch_size
        self.linger = linger
        sink.bind(codec)
        self.group_id = group_id or f"ledgerstream.{sink.name}"
        self.dead_letters = DeadLetters(settings, sink.name)
        self.consumer = batch_consumer(
            settings,
            self.group_id,
            batch_size,
            linger,
            **{"fetch.min.bytes": 65536, **(consumer_config or {})},
        )
        self.topics = list(topics or sink.topics)
        self.assigned = threading.Event()
        self._before_revoke: Callable[[], None] = lambda: None
        self.consumer.subscribe(
            self.topics,
            on_assign=lambda consumer, partitions: self.assigned.set(),
            on_revoke=lambda consumer, partitions: self._before_revoke(),
        )
        self._conn: psycopg.Connection | None = None

    # database ------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.settings.database_url.get_secret_value(), connect_timeout=10)
        return self._conn

    def _write_once(self, items: Sequence[Item]) -> None:
        conn = self._connection()
        try:
            with conn.transaction():
                self.sink.write(conn, items)
        except TRANSIENT:
            conn.close()
            raise

    def _write_retrying(self, items: Sequence[Item], stats: RunStats, stop: Callable[[], bool]) -> None:
        """Write, retrying transient failures with backoff until they pass (or we stop)."""
        delay = 0.2
        while True:
            try:
                self._write_once(items)
                return
            except TRANSIENT as e:
                stats.retries += 1
                log.warning("%s: database unavailable (%s); retrying in %.1fs", self.sink.name, e, delay)
                if stop():
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _write_isolating(
        self, batch: list[tuple[Message, Item]], stats: RunStats, stop: Callable[[], bool]
    ) -> list[tuple[Message, psycopg.Error]]:
        """Write a batch; if the database refuses it, split it until each refused
        event is alone. Returns the events the database refused."""
        try:
            self._write_retrying([item for _, item in batch], stats, stop)
            return []
        except TRANSIENT:
            raise
        except psycopg.Error as e:
            if len(batch) == 1:
                return [(batch[0][0], e)]
            half = len(batch) // 2
            return self._write_isolating(batch[:half], stats, stop) + self._write_isolating(
                batch[half:], stats, stop
            )

    # the loop ------------------------------------------------------------------

    def _prepare(self, msg: Message) -> Item:
        value = msg.value()
        if value is None:
            raise PoisonEvent("no value (tombstone)")
        record = self.codec.decode(value, topic=msg.topic(), partition=msg.partition(), offset=msg.offset())
        environment = record.get("metadata", {}).get("environment")
        if environment != self.settings.environment:
            raise PoisonEvent(
                f"event environment {environment!r} differs from this consumer's "
                f"{self.settings.environment!r}"
            )
        return self.sink.prepare(
            Event(record, msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg.key())
        )

    def prepare_batch(self, messages: list[Message]) -> Batch[Item]:
        """Decode and map a batch (dead-lettering what cannot be); no database work."""
        batch: Batch[Item] = Batch()
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: consumer error %s", self.sink.name, err)
                continue
            batch.offsets[(msg.topic() or "", msg.partition() or 0)] = msg.offset() or 0
            batch.handled += 1
            try:
                batch.good.append((msg, self._prepare(msg)))
            except (DecodeError, PoisonEvent) as e:
                self.dead_letters.send_message(msg, e)
                batch.dead += 1
        return batch

    def write_batch(self, batch: Batch[Item], stats: RunStats, stop: Callable[[], bool]) -> None:
        """The database part of a batch (runs on the writer thread)."""
        if not batch.good:
            return
        started = time.monotonic()
        for msg, error in self._write_isolating(batch.good, stats, stop):
            self.dead_letters.send_message(msg, error)
            batch.refused += 1
        elapsed = time.monotonic() - started
        stats.db_seconds += elapsed
        BATCH_SECONDS.labels(self.sink.name).observe(elapsed)

    def finish_batch(self, batch: Batch[Item], stats: RunStats) -> None:
        """After the database commit: confirm dead letters, then commit the offsets."""
        if batch.dead or batch.refused:
            self.dead_letters.flush()
        if batch.offsets:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in batch.offsets.items()],
                asynchronous=False,
            )
            stats.last_offsets.update(batch.offsets)
        written = len(batch.good) - batch.refused
        stats.consumed += batch.handled
        stats.written += written
        stats.dead_lettered += batch.dead + batch.refused
        stats.batches += 1
        WRITTEN.labels(self.sink.name, "written").inc(written)
        WRITTEN.labels(self.sink.name, "dead_lettered").inc(batch.dead + batch.refused)

    def process(
        self, messages: list[Message], stats: RunStats, stop: Callable[[], bool] = lambda: False
    ) -> None:
        """Handle one batch of consumed messages, then commit their offsets."""
        batch = self.prepare_batch(messages)
        self.write_batch(batch, stats, stop)
        self.finish_batch(batch, stats)

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        idle_exit: float | None = None,
        max_events: int | None = None,
    ) -> RunStats:
        """Consume until `stop` is set, `idle_exit` seconds pass with nothing new
        (counted once partitions are assigned), or `max_events` events were handled.

        One batch is written by a writer thread while the next is consumed and
        decoded; its offsets are committed (on this thread) only once it is in the
        database, and a rebalance first finishes the batch in flight.
        """
        stats = RunStats()
        started = time.monotonic()
        last_seen = time.monotonic()
        first: float | None = None
        stopping = stop or threading.Event()
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.sink.name}-writer")
        in_flight: tuple[Future[None], Batch[Item]] | None = None

        def settle() -> None:
            nonlocal in_flight
            if in_flight is not None:
                future, batch = in_flight
                in_flight = None
                future.result()
                self.finish_batch(batch, stats)
                if first is not None:
                    stats.busy_seconds = time.monotonic() - first

        self._before_revoke = settle
        try:
            while not stopping.is_set():
                messages = self.consumer.consume(self.batch_size, timeout=self.linger)
                if not self.assigned.is_set():
                    last_seen = time.monotonic()
                if messages:
                    last_seen = time.monotonic()
                    first = first or last_seen
                    batch = self.prepare_batch(messages)
                    settle()
                    in_flight = (writer.submit(self.write_batch, batch, stats, stopping.is_set), batch)
                else:
                    settle()
                    if idle_exit is not None and time.monotonic() - last_seen >= idle_exit:
                        break
                if max_events is not None and stats.consumed >= max_events:
                    break
            settle()
        finally:
            self._before_revoke = lambda: None
            writer.shutdown(wait=True)
            stats.seconds = time.monotonic() - started
            self.close()
        return stats

    def close(self) -> None:
        self.consumer.close()
        if self._conn is not None:
            self._conn.close()
