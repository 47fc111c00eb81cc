"""The sink framework: topic to PostgreSQL, in batches, idempotently.

A sink is `prepare(event) -> item` (the only per-table mapping; raise PoisonEvent
for an event that cannot be stored) and `write(conn, items)` (SQL for one batch,
inside one transaction, idempotent on the event's id). `SinkWork` maps and writes a
batch, dead-letters what cannot be prepared and any single event the database refuses
(a failing batch is split in halves until the culprit is alone), and raises transient
database errors for the runtime to retry. Everything else (consume, decode, pause while
the database is down, commit after the database commit and the dead letters) is the one
batch runtime's, `topics.runtime.BatchRuntime`, which the agents use too.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import psycopg

from sinks.errors import PoisonEvent
from topics.codec import AvroCodec
from topics.database import Database, refused_by_schema
from topics.events import Event
from topics.runtime import BatchRuntime, FastRows, Outcome
from topics.settings import Settings

Item = TypeVar("Item")

TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError)
DEFAULT_BATCH_SIZE = 5000
"""Most events per transaction, by default: past it, `bench sink` and `bench ledger` gained
nothing more (10,000 and 20,000 ran as fast), and below it the per-transaction cost showed
(2,000: 94.9k against 130.6k events/s for the transfers sink). Batches only grow this large
under a backlog: a worker that is keeping up writes what arrived within one linger."""


class Sink(ABC, Generic[Item]):
    """What one table (or group of tables) needs: mapping and batch SQL."""

    name: str
    """The consumer's name in the catalog (its group and dead-letter topic derive from it)."""
    topics: tuple[str, ...]
    outbox_outputs: tuple[str, ...] = ()
    """What it writes to the outbox in its own transaction (the relay publishes them)."""
    overlap: int = 1
    """How many batches it may write at once, each in its own transaction on its own connection
    (`BatchWork.overlap`). More than 1 only for a sink whose write inserts rows new by a unique
    key and reads nothing: a later batch cannot depend on an earlier one it does not see yet
    (a row both insert waits for the earlier transaction, then conflicts or goes in)."""

    @abstractmethod
    def prepare(self, event: Event) -> Item:
        """Map one event to what `write` stores; raise PoisonEvent to dead-letter it."""

    @abstractmethod
    def write(self, conn: psycopg.Connection, items: Sequence[Item]) -> None:
        """Store a batch inside the caller's transaction; must be idempotent."""

    def bind(self, codec: AvroCodec, settings: Settings) -> None:
        """Called once by the runner with this deployment's codec and settings, for a sink that
        also enqueues events to the outbox in its own transaction, or seals a field."""

    def fast_rows(self, codec: AvroCodec, settings: Settings) -> dict[str, FastRows]:
        """Per input topic, a writer of items straight from the bytes of a value (after `bind`);
        none by default: every event is decoded and `prepare`d."""
        return {}


class SinkWork(Generic[Item]):
    """A sink's part of a batch: map each event, then write them in one transaction. A batch the
    database refuses is split in halves until each refused event is alone (it is dead-lettered);
    a transient error is raised for the runtime to retry."""

    transient: tuple[type[BaseException], ...] = TRANSIENT

    def __init__(self, settings: Settings, sink: Sink[Item]) -> None:
        self.settings, self.sink = settings, sink
        self.name, self.topics, self.overlap = sink.name, sink.topics, sink.overlap
        self._local = threading.local()
        self._connections: list[Database] = []

    @property
    def db(self) -> Database:
        """This worker thread's connection (batches worked at once each have their own)."""
        db: Database | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = Database(self.settings)
            self._connections.append(db)
        return db

    def _write_once(self, items: Sequence[Item]) -> None:
        conn = self.db.connection()
        try:
            with conn.transaction():
                self.sink.write(conn, items)
        except TRANSIENT:
            self.db.discard()
            raise

    def _write_isolating(self, batch: list[tuple[Event, Item]]) -> list[tuple[Event, BaseException]]:
        try:
            self._write_once([item for _, item in batch])
            return []
        except TRANSIENT:
            raise
        except psycopg.Error as e:
            if refused_by_schema(e):  # not the events' fault: the worker stops, nothing is dead-lettered
                raise
            if len(batch) == 1:
                return [(batch[0][0], e)]
            half = len(batch) // 2
            return self._write_isolating(batch[:half]) + self._write_isolating(batch[half:])

    def start(self) -> None:
        """Nothing to get ready: the connection is made by the first batch (it may be down now)."""

    def prepare(self, events: list[Event]) -> list[Item | PoisonEvent]:
        """Each event's item, or why it cannot be stored (on the consumer thread)."""
        prepared: list[Item | PoisonEvent] = []
        for event in events:
            try:
                prepared.append(self.sink.prepare(event))
            except PoisonEvent as e:
                prepared.append(e)
        return prepared

    def work(self, events: list[Event], prepared: list[Item | PoisonEvent]) -> Outcome:
        good: list[tuple[Event, Item]] = []
        refused: list[tuple[Event, BaseException]] = []
        for event, item in zip(events, prepared, strict=True):
            if isinstance(item, PoisonEvent):
                refused.append((event, item))
            else:
                good.append((event, item))
        written = len(good)
        if good:
            rejected = self._write_isolating(good)
            refused += rejected
            written -= len(rejected)
        return Outcome(refused=refused, written=written)

    def close(self) -> None:
        for db in self._connections:
            db.close()


class SinkRunner(BatchRuntime):
    """Runs one sink as its own consumer group, on the one batch runtime.

    Args:
        settings: connections, the environment this process serves, and its Kafka principal.
        sink: the mapping and SQL.
        codec: decodes values (either framing).
        batch_size: most messages per database transaction.
        linger: the longest one poll waits for events (what arrived then goes to an idle worker).
        group_id: overrides the catalog's group (a new group replays from the start).
        topics: overrides the sink's topics (e.g. a copy of a topic to replay).
        consumer_config: extra librdkafka consumer settings.
        input_aliases: reads a topic as the catalog topic it stands for (a scratch copy).
    """

    def __init__(
        self,
        settings: Settings,
        sink: Sink[Item],
        codec: AvroCodec,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        linger: float = 0.01,
        group_id: str | None = None,
        topics: Sequence[str] | None = None,
        consumer_config: dict[str, Any] | None = None,
        input_aliases: dict[str, str] | None = None,
    ) -> None:
        self.sink = sink
        sink.bind(codec, settings)
        super().__init__(
            settings,
            SinkWork(settings, sink),
            codec,
            None,
            batch_size=batch_size,
            linger=linger,
            group_id=group_id,
            topics=topics,
            consumer_config=consumer_config,
            input_aliases=input_aliases,
            fast_rows=sink.fast_rows(codec, settings),
        )
