"""The one batch runtime agents and sinks share: consume, decode, work, emit, commit.

A `BatchWork` is what differs: an agent's handler (events in, events out) or a sink's
mapping and SQL (events in, rows written). The runtime does everything else, once:
1. consume what has arrived, up to `batch_size` messages, in polls of at most `linger`: a
   worker that is idle gets a batch as soon as events arrive, and while one is busy the next
   batch fills (natural batching: large batches under load, small and prompt ones when quiet);
2. decode each (an undecodable value, a tombstone or an event of the other environment
   is dead-lettered here), or, for a sink with a native row writer (`FastRows`), let that
   writer make the value's row straight from its bytes; what it is not certain of is decoded;
3. hand the batch to the work on a worker thread, while this thread consumes and decodes
   the next one. One batch is worked at a time, unless the work's `overlap` allows more: then,
   under a backlog, the next whole batch is worked beside it (a sink's on a second database
   connection, its COPY overlapping the first one's commit);
4. produce the work's outputs and dead letters, flush both, and only then commit the
   batch's offsets, batch after batch in the order they were consumed.

A dependency that is down (PostgreSQL, Redis: the work raises one of its `transient`
errors) is retried with backoff on the worker thread. Meanwhile this thread pauses every
assigned partition and keeps polling, so the worker stays in its group however long the
outage lasts (`max.poll.interval.ms` counts time between polls), and resumes once the
batch went through. Messages the consumer had already fetched are kept, in order.

An offset commit the group refuses (the member was evicted, a rebalance is under way) is
logged and skipped: the batch is worked again by whoever owns its partition next, and
every work is idempotent. A commit the coordinator cannot take yet is retried while polling.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import psycopg
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.consuming import batch_consumer
from topics.database import refused_by_schema
from topics.deadletter import DeadLetters
from topics.errors import DecodeError, LedgerstreamError
from topics.events import Event
from topics.faults import fault_point
from topics.producer import EventProducer, Unacknowledged
from topics.settings import Settings

log = logging.getLogger(__name__)


EVENTS = Counter("ledgerstream_consumer_events_total", "Events a consumer handled", ["consumer", "outcome"])
BATCH_SECONDS = Histogram("ledgerstream_consumer_batch_seconds", "Time to work one batch", ["consumer"])
PAUSED = Gauge("ledgerstream_consumer_paused", "1 while a consumer waits for a dependency", ["consumer"])
RETRIES = Counter(
    "ledgerstream_consumer_retries_total", "Batches retried after a transient error", ["consumer"]
)
# named as kafka-exporter names them, so its dashboards and alerts work unchanged
CURRENT_OFFSET = Gauge(
    "kafka_consumergroup_current_offset",
    "The group's committed offset, as this member committed it",
    ["consumergroup", "topic", "partition"],
)
LAG = Gauge(
    "kafka_consumergroup_lag",
    "Messages behind the partition's high watermark after this member's commit",
    ["consumergroup", "topic", "partition"],
)
BATCH_SIZE = Histogram(
    "ledgerstream_consumer_batch_size",
    "Events per batch",
    ["consumer"],
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
LAST_EVENT = Gauge(
    "ledgerstream_consumer_last_event_timestamp_seconds",
    "Kafka timestamp of the newest event consumed",
    ["consumer"],
)
STUCK = Gauge(
    "ledgerstream_consumer_partition_stuck",
    "1 while a partition has events waiting and its offset has not moved for STUCK_SECONDS",
    ["consumergroup", "topic", "partition"],
)
STALL_SECONDS = 60.0
"""A loop that has not polled Kafka for this long is not alive (`/healthz` answers 503)."""
STUCK_SECONDS = 120.0
"""A partition with events waiting whose offset has not moved for this long is stuck."""
WATCH_SECONDS = 5.0
"""How often lag and stuck partitions are looked at again between commits."""

REFUSED_COMMIT = {
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError._ASSIGNMENT_LOST,
}
"""The group no longer gives this member the partitions: another member works the batch again."""
CANNOT_HEAL = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError._AUTHENTICATION,
}
"""Consumer errors no wait mends: the worker stops and says what to fix."""
MAX_POLL_INTERVAL_MS = 300_000
DEFAULT_BATCH_SIZE = 2000
"""Most messages per batch, by default (an agent's; a sink's is `sinks.base.DEFAULT_BATCH_SIZE`)."""
SWITCH_INTERVAL = 0.0005
"""Seconds a thread may hold the GIL while another waits for it (Python's default is 5 ms): the
worker thread's database I/O gets the GIL back soon after each wait, instead of queueing behind
the decoding of the next batch (measured: a sink's database time per batch fell by a third)."""
REVOKE_WAIT_SECONDS = 10.0
"""How long a revocation waits for the batch in flight before leaving it to be settled later."""


def _after(deadline: float) -> bool:
    return time.monotonic() >= deadline


class EventRefused(LedgerstreamError):
    """An event the runtime itself refuses (no value, another environment)."""


class WorkerStopped(LedgerstreamError):
    """A fault that does not heal by waiting (a refused authorization, bad credentials)."""


@dataclass
class Outcome:
    """What one batch's work produced: events to emit, and events refused (to the DLQ) with why."""

    outputs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refused: list[tuple[Event, BaseException]] = field(default_factory=list)
    written: int = 0


class BatchWork(Protocol):
    """An agent's or a sink's part of the work."""

    name: str
    """The consumer's name in the catalog (group `ledgerstream.<name>`, DLQ `dlq.<name>...`)."""
    topics: tuple[str, ...]
    transient: tuple[type[BaseException], ...]
    """Errors of a dependency that is down: retried, never dead-lettered."""
    overlap: int
    """How many batches may be worked at once, each on a worker thread of its own; their outputs
    are emitted and their offsets committed in the order they were consumed. 1 for a work whose
    batch decides on what the batch before it left (every agent's, the ledger sink's)."""

    def prepare(self, events: list[Event]) -> list[Any]:
        """Pure per-event work (e.g. a sink's mapping), one result per event, done on the consumer
        thread as events arrive, while the previous batch is worked; handed to `work`."""

    def start(self) -> None:
        """Get ready before the first batch (e.g. an agent's host), so it does not wait for it."""

    def work(self, events: list[Event], prepared: list[Any]) -> Outcome:
        """Process a batch (ordered per partition); runs on a worker thread; idempotent. With an
        `overlap` above 1, batches are worked on several threads at once."""

    def close(self) -> None:
        """Release connections."""


class FastRows(Protocol):
    """Makes a work's item (a sink's binary COPY tuple) straight from the bytes of a value, without
    decoding it into a record (`sinks.rows`)."""

    def accept(self, header: bytes) -> None:
        """Values framed with `header` were written with the schema this writer reads."""

    def row(self, value: bytes, topic: str, partition: int, offset: int) -> bytes | None:
        """The item, or None: the value is decoded and prepared instead."""


UNDECODED: dict[str, Any] = {}
"""The record of an event whose item was made from its bytes (`FastRows`): never read."""


@dataclass
class BatchStats:
    """One run of a consumer, agent or sink."""

    consumed: int = 0
    emitted: int = 0
    written: int = 0
    dead_lettered: int = 0
    fast: int = 0
    """Events whose item was made straight from their bytes (`FastRows`)."""
    batches: int = 0
    retries: int = 0
    paused_seconds: float = 0.0
    """Time spent paused, waiting for a dependency."""
    seconds: float = 0.0
    busy_seconds: float = 0.0
    """From the first message consumed to the last batch committed."""
    first_at: float = 0.0
    last_at: float = 0.0
    """When the first message was consumed and the last batch committed (Unix time: several
    processes' runs are compared by them)."""
    db_seconds: float = 0.0
    """Time during which a batch was being worked (the handler or the database transaction), on a
    worker thread; batches worked at once count once."""
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)


class _Working:
    """Measures the time during which at least one batch is being worked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._since = 0.0
        self.seconds = 0.0

    def __enter__(self) -> None:
        with self._lock:
            if self._count == 0:
                self._since = time.monotonic()
            self._count += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._count -= 1
            if self._count == 0:
                self.seconds += time.monotonic() - self._since


@dataclass
class _Batch:
    events: list[Event] = field(default_factory=list)
    messages: dict[tuple[str, int, int], Message] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    consumed: int = 0
    dead: int = 0
    fast: int = 0
    prepared: list[Any] = field(default_factory=list)


class BatchRuntime:
    """Runs one `BatchWork` as its own consumer group.

    Args:
        settings: connections, the environment this process serves, and its Kafka principal.
        work: the agent's or sink's part.
        codec: decodes inputs and encodes outputs.
        catalog: output keys (for a work that emits; None for one that only writes).
        batch_size: most messages per batch.
        linger: the longest one poll waits for events (what arrived then goes to an idle worker).
        group_id: overrides `ledgerstream.<name>` (a new group replays from the start).
        topics: overrides the work's input topics.
        consumer_config: extra librdkafka consumer settings.
        output_topics: writes an output topic's events to another topic (a scratch copy).
        input_aliases: reads a topic as another (a scratch copy as the catalog topic it stands
            for): its events are decoded with, and handed to the work under, the catalog name;
            offsets are the copy's.
        fast_rows: per (catalog) topic, a writer of the work's items from a value's bytes.
    """

    def __init__(
        self,
        settings: Settings,
        work: BatchWork,
        codec: AvroCodec,
        catalog: Catalog | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        linger: float = 0.01,
        group_id: str | None = None,
        topics: Sequence[str] | None = None,
        consumer_config: dict[str, Any] | None = None,
        output_topics: Mapping[str, str] | None = None,
        input_aliases: Mapping[str, str] | None = None,
        fast_rows: Mapping[str, FastRows] | None = None,
    ) -> None:
        self.settings, self.work, self.codec = settings, work, codec
        self.fast_rows = dict(fast_rows or {})
        self.batch_size, self.linger = batch_size, linger
        self.aliases = dict(input_aliases or {})
        self.group_id = group_id or f"ledgerstream.{work.name}"
        self.topics = list(topics or work.topics)
        # no delivery timeout: outputs wait for an unreachable broker while the member keeps polling
        self.producer = (
            EventProducer(settings, codec, catalog, output_topics, **{"message.timeout.ms": 0})
            if catalog is not None
            else None
        )
        self.dead_letters = DeadLetters(settings, work.name)
        self.consumer = batch_consumer(
            settings,
            self.group_id,
            batch_size,
            **{
                "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
                **(consumer_config or {}),
            },
        )
        self.assigned = threading.Event()
        self.assignments = 0
        """How many times the group gave this member partitions (1 unless a rebalance happened)."""
        self._on_revoke: Callable[[list[TopicPartition]], None] = lambda parts: None
        self.consumer.subscribe(
            self.topics, on_assign=self._assigned, on_revoke=lambda c, parts: self._on_revoke(parts)
        )
        self._degraded = threading.Event()
        self._pausing = False
        """True while the loop polls with its partitions paused (`keep_alive`)."""
        self._progress: dict[tuple[str, int], tuple[int, float]] = {}
        """Per partition: the next offset to commit, and when it last moved."""
        self._watched_at = 0.0
        self._newest_ms = 0
        self._polled_at = time.monotonic()
        self._running = False
        self.stats = BatchStats()
        self._working = _Working()

    def _assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assignments += 1
        consumer.assign(partitions)
        # librdkafka keeps a partition's pause across its revocation and a new assignment: a member
        # that lost its group while paused (waiting for a broker that was away) and got its
        # partitions back after the wait ended would never fetch them again
        if self._pausing:
            consumer.pause(partitions)
        else:
            consumer.resume(partitions)
        self.assigned.set()

    # probes (answered on the health server's thread) --------------------------------

    def live(self) -> tuple[bool, dict[str, Any]]:
        """Alive while the loop polls Kafka: a wedged loop answers False."""
        since = time.monotonic() - self._polled_at
        return since < STALL_SECONDS, {"consumer": self.work.name, "seconds_since_poll": round(since, 1)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready while running with partitions assigned and no dependency down."""
        assigned = self.assigned.is_set()
        degraded = self._degraded.is_set()
        return self._running and assigned and not degraded, {
            "consumer": self.work.name,
            "group": self.group_id,
            "running": self._running,
            "assigned": assigned,
            "dependency_down": degraded,
            "consumed": self.stats.consumed,
        }

    def _report_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        now = time.monotonic()
        for (topic, partition), offset in offsets.items():
            labels = (self.group_id, topic, str(partition))
            CURRENT_OFFSET.labels(*labels).set(offset + 1)
            self._progress[(topic, partition)] = (offset + 1, now)
            STUCK.labels(*labels).set(0)
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                LAG.labels(*labels).set(max(high - offset - 1, 0))

    def _watch_partitions(self) -> None:
        """Between commits: each partition's lag against the latest high watermark the consumer
        saw, and whether it is stuck (events waiting, its offset unmoved for `STUCK_SECONDS`)."""
        now = time.monotonic()
        if now - self._watched_at < WATCH_SECONDS:
            return
        self._watched_at = now
        for (topic, partition), (position, since) in list(self._progress.items()):
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if high < 0:
                continue
            labels = (self.group_id, topic, str(partition))
            behind = max(high - position, 0)
            LAG.labels(*labels).set(behind)
            STUCK.labels(*labels).set(1 if behind and now - since >= STUCK_SECONDS else 0)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if self._progress.pop((tp.topic, tp.partition), None) is not None:
                STUCK.labels(self.group_id, tp.topic, str(tp.partition)).set(0)

    def _refuse_if_unhealable(self, error: KafkaError) -> None:
        if error.code() in CANNOT_HEAL:
            raise WorkerStopped(
                f"{self.work.name} ({self.group_id}, principal {self.settings.kafka_principal or 'none'}): "
                f"{error.str()}; the principal's credentials or ACLs are wrong "
                "(`ledgerstream topics apply` grants the catalog's)"
            )

    # decoding ------------------------------------------------------------------

    def _decode(self, messages: list[Message], batch: _Batch) -> None:
        """Decode and prepare `messages` into `batch` (their items, in order, in `prepared`)."""
        waiting: list[int] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._refuse_if_unhealable(err)
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: consumer error %s", self.work.name, err)
                continue
            physical, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            batch.offsets[(physical, partition)] = offset
            if (physical, partition) not in self._progress:  # where this member found the partition
                self._progress[(physical, partition)] = (offset, time.monotonic())
            kind, ms = msg.timestamp()
            if kind and ms > self._newest_ms:
                self._newest_ms = ms
                LAST_EVENT.labels(self.work.name).set(ms / 1000)
            topic = self.aliases.get(physical, physical)
            batch.consumed += 1
            value = msg.value()
            fast = self.fast_rows.get(topic)
            if fast is not None and value is not None:
                item = fast.row(value, topic, partition, offset)
                if item is not None:
                    batch.events.append(Event(UNDECODED, topic, partition, offset, msg.key(), value))
                    batch.messages[(topic, partition, offset)] = msg
                    batch.prepared.append(item)
                    batch.fast += 1
                    continue
            try:
                if value is None:
                    raise EventRefused("no value (tombstone)")
                record, writer = self.codec.decode_with_schema(
                    value, topic=topic, partition=partition, offset=offset
                )
                environment = record.get("metadata", {}).get("environment")
                if environment != self.settings.environment:
                    raise EventRefused(
                        f"event environment {environment!r} differs from this consumer's "
                        f"{self.settings.environment!r}"
                    )
            except (DecodeError, EventRefused) as e:
                self.dead_letters.send_message(msg, e)
                batch.dead += 1
                continue
            if fast is not None:
                header = self.codec.current_header(value, topic, writer)
                if header is not None:
                    fast.accept(header)
            waiting.append(len(batch.events))
            batch.events.append(Event(record, topic, partition, offset, msg.key(), value))
            batch.messages[(topic, partition, offset)] = msg
            batch.prepared.append(None)
        if waiting:
            for at, item in zip(waiting, self.work.prepare([batch.events[i] for i in waiting]), strict=True):
                batch.prepared[at] = item

    # working (on the worker thread) -------------------------------------------

    def _work(self, batch: _Batch, stopping: threading.Event, halt: threading.Event) -> Outcome:
        """The work of one batch, retrying transient failures until they pass, we stop, or the
        loop has ended (`halt`: a batch worked beside one that failed is not retried forever)."""
        if not batch.events:
            return Outcome()
        delay = 0.2
        while True:
            started = time.monotonic()
            try:
                with self._working:
                    outcome = self.work.work(batch.events, batch.prepared)
                elapsed = time.monotonic() - started
                self.stats.db_seconds = self._working.seconds
                BATCH_SECONDS.labels(self.work.name).observe(elapsed)
                BATCH_SIZE.labels(self.work.name).observe(len(batch.events))
                self._degraded.clear()
                return outcome
            except self.work.transient as e:
                self.stats.retries += 1
                RETRIES.labels(self.work.name).inc()
                self._degraded.set()
                log.warning(
                    "%s: a dependency is unavailable (%s); retrying in %.1fs", self.work.name, e, delay
                )
                if stopping.is_set() or halt.wait(delay) or stopping.is_set():
                    raise
                delay = min(2 * delay, 10.0)
            except psycopg.Error as e:
                if not refused_by_schema(e):
                    raise
                raise LedgerstreamError(
                    f"{self.work.name}: the database refused the work: {e.diag.message_primary or e} "
                    "(a grant missing from sinks/roles.toml, or a schema `db migrate` has not brought up)"
                ) from e

    # emitting and committing (on this thread) -----------------------------------

    def _finish(
        self, batch: _Batch, outcome: Outcome, keep_alive: Callable[[Callable[[], bool]], None]
    ) -> None:
        fault_point("after_work")
        for topic, record in outcome.outputs:
            if self.producer is None:
                raise LedgerstreamError(
                    f"{self.work.name} emitted to {topic} without a catalog to produce with"
                )
            self.producer.produce(topic, record)
        for event, error in outcome.refused:
            msg = batch.messages.get((event.topic, event.partition, event.offset))
            if msg is not None:
                self.dead_letters.send_message(msg, error)
            else:  # an event the work kept from an earlier batch (e.g. parked)
                self.dead_letters.send(
                    topic=event.topic,
                    partition=event.partition,
                    offset=event.offset,
                    key=event.key,
                    value=event.value,
                    headers=None,
                    error_class=type(error).__name__,
                    reason=str(error),
                )
        fault_point("before_flush")
        if self.producer is not None and outcome.outputs:
            self._flushed(self.producer.flush, keep_alive)
        if batch.dead or outcome.refused:
            self._flushed(self.dead_letters.flush, keep_alive)
        if batch.offsets:
            self._commit(batch.offsets, keep_alive)
            self._report_offsets(batch.offsets)
        dead = batch.dead + len(outcome.refused)
        self.stats.consumed += batch.consumed
        self.stats.emitted += len(outcome.outputs)
        self.stats.written += outcome.written
        self.stats.dead_lettered += dead
        self.stats.fast += batch.fast
        self.stats.batches += 1
        self.stats.last_offsets.update(batch.offsets)
        EVENTS.labels(self.work.name, "emitted").inc(len(outcome.outputs))
        EVENTS.labels(self.work.name, "written").inc(outcome.written)
        EVENTS.labels(self.work.name, "dead_lettered").inc(dead)

    def _flushed(
        self, flush: Callable[[float], None], keep_alive: Callable[[Callable[[], bool]], None]
    ) -> None:
        """Flush until every queued event is acknowledged, polling (paused) in between while the
        broker cannot be reached; a refused event still raises."""
        while True:
            try:
                flush(5.0)
                return
            except Unacknowledged as e:
                log.warning("%s: %s; waiting for the broker", self.work.name, e)
                keep_alive(partial(_after, time.monotonic() + 1.0))

    def _commit(
        self, offsets: dict[tuple[str, int], int], keep_alive: Callable[[Callable[[], bool]], None]
    ) -> None:
        positions = [TopicPartition(t, p, o + 1) for (t, p), o in offsets.items()]
        delay = 0.2
        while True:
            try:
                self.consumer.commit(offsets=positions, asynchronous=False)
                return
            except KafkaException as e:
                error: KafkaError = e.args[0]
                if error.code() in REFUSED_COMMIT:
                    log.warning(
                        "%s: the group refused a commit (%s); the batch is worked again",
                        self.work.name,
                        error.str(),
                    )
                    return
                if not error.retriable() and error.code() not in (
                    KafkaError._WAIT_COORD,
                    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                    KafkaError.COORDINATOR_NOT_AVAILABLE,
                    KafkaError.NOT_COORDINATOR,
                    KafkaError._TRANSPORT,
                ):
                    raise
                log.warning(
                    "%s: commit not taken yet (%s); retrying in %.1fs", self.work.name, error.str(), delay
                )
                keep_alive(partial(_after, time.monotonic() + delay))
                delay = min(2 * delay, 5.0)

    # the loop ----------------------------------------------------------------------

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        idle_exit: float | None = None,
        max_events: int | None = None,
    ) -> BatchStats:
        """Consume until `stop` is set, `idle_exit` seconds pass with nothing new (counted once
        partitions are assigned), or `max_events` events were handled."""
        self.stats = stats = BatchStats()
        self._working = _Working()
        sys.setswitchinterval(SWITCH_INTERVAL)
        stopping = stop or threading.Event()
        started = time.monotonic()
        last_seen = started
        first: float | None = None
        depth = self.work.overlap
        worker = ThreadPoolExecutor(max_workers=depth, thread_name_prefix=f"{self.work.name}-work")
        halt = threading.Event()
        flights: deque[tuple[Future[Outcome], _Batch]] = deque()
        """The batches being worked, oldest first: each is emitted and committed after those before it."""
        ready = _Batch()

        def poll_into_ready(timeout: float) -> bool:
            self._polled_at = time.monotonic()
            self._watch_partitions()
            try:
                messages = self.consumer.consume(self.batch_size, timeout=timeout)
            except KafkaException as e:
                error: KafkaError = e.args[0]
                if error.fatal():
                    raise
                self._refuse_if_unhealable(error)
                log.warning("%s: consumer error %s; polling on", self.work.name, error.str())
                return False
            if messages:
                self._decode(messages, ready)
            return bool(messages)

        def keep_alive(done: Callable[[], bool]) -> None:
            """Poll (the partitions paused) until `done`: the member stays in its group. Inside a
            rebalance callback the consumer must not be polled: there it only waits, bounded."""
            if rebalancing.is_set():
                deadline = time.monotonic() + REVOKE_WAIT_SECONDS
                while not done() and time.monotonic() < deadline:
                    time.sleep(0.05)
                return
            self._pausing = True
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.pause(assignment)
            PAUSED.labels(self.work.name).set(1)
            since = time.monotonic()
            try:
                while not done() and not stopping.is_set():
                    poll_into_ready(0.2)
            finally:
                stats.paused_seconds += time.monotonic() - since
                PAUSED.labels(self.work.name).set(0)
                self._pausing = False
                assignment = self.consumer.assignment()
                if assignment:
                    self.consumer.resume(assignment)

        def settle(*, waiting: bool = True) -> None:
            """Emit and commit the batches in flight, oldest first, waiting for each (polling,
            paused, while a dependency is down); without `waiting`, only those already worked
            before the first that is not."""
            while flights:
                future, batch = flights[0]
                if not future.done():
                    if not waiting:
                        return
                    keep_alive(future.done)
                    if not future.done():
                        return  # stopping, or a rebalance that could not wait: settled later
                flights.popleft()
                self._finish(batch, future.result(), keep_alive)
                if first is not None:
                    stats.busy_seconds = time.monotonic() - first
                    stats.last_at = time.time()

        def revoked(partitions: list[TopicPartition]) -> None:
            nonlocal ready
            rebalancing.set()
            try:
                settle()  # the batch in flight is committed while the partitions are still ours
            finally:
                rebalancing.clear()
            ready = _Batch()  # fetched, not worked: the next owner reads them from the committed offsets
            self._forget(partitions)

        rebalancing = threading.Event()
        self._on_revoke = revoked
        self.work.start()
        self._running = True
        try:
            while not stopping.is_set():
                busy = any(not future.done() for future, _ in flights)
                if busy and self._degraded.is_set():
                    settle()  # pauses and keeps polling until the dependency is back
                    continue
                got = False
                if ready.consumed < self.batch_size and (busy or ready.consumed == 0):
                    got = poll_into_ready(self.linger)
                elif busy and len(flights) >= depth:
                    # nothing can start or be committed before the oldest batch is worked
                    wait([flights[0][0]], timeout=self.linger)
                now = time.monotonic()
                if not self.assigned.is_set():
                    last_seen = now
                if got:
                    last_seen = now
                    if first is None:
                        first, stats.first_at = now, time.time()
                settle(waiting=False)
                # a batch starts once the one before it is worked, or beside it when a whole
                # batch is waiting (a backlog) and the work may overlap
                if ready.consumed and (
                    not flights or (len(flights) < depth and ready.consumed >= self.batch_size)
                ):
                    batch, ready = ready, _Batch()
                    flights.append((worker.submit(self._work, batch, stopping, halt), batch))
                elif (
                    not flights
                    and ready.consumed == 0
                    and idle_exit is not None
                    and now - last_seen >= idle_exit
                ):
                    break
                if max_events is not None and stats.consumed >= max_events:
                    break
            settle()
        finally:
            self._running = False
            self._on_revoke = lambda parts: None
            halt.set()
            worker.shutdown(wait=True)
            stats.seconds = time.monotonic() - started
            self.consumer.close()
            self.work.close()
        return stats
