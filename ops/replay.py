"""`ledgerstream replay`: re-feed exactly one range of a topic while the groups keep running.

The range is read group-less (no consumer group is joined or moved), optionally only one
account's events (its key), and goes either into a sink, written with the sink's own
mapping and SQL in this process, or byte for byte onto another topic. Into a sink, each
batch is one transaction whose changes are counted per table from PostgreSQL's own
per-transaction statistics (`pg_stat_xact_user_tables`) before it commits: a pure replay
changes 0 rows, and a replay after a fix shows what the fix changed. `--dry-run` does all
of it and rolls every transaction back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import Message, Producer

from ops.topic_reader import TopicReader
from sinks import staging
from sinks.base import Sink
from sinks.errors import PoisonEvent
from topics.codec import AvroCodec, DecodeError
from topics.errors import LedgerstreamError
from topics.events import Event
from topics.settings import Settings

REPLAY_OF = "ledgerstream.replay.of"
CHANGES = """
SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_xact_user_tables
 WHERE schemaname NOT LIKE 'pg_temp%' AND n_tup_ins + n_tup_upd + n_tup_del > 0
"""


@dataclass
class ReplayResult:
    read: int = 0
    """Messages of the range read."""
    replayed: int = 0
    """Of them, those replayed (the account's, when one was named)."""
    refused: list[str] = field(default_factory=list)
    """Events the sink refused, each with why (a replay does not dead-letter)."""
    changes: dict[str, list[int]] = field(default_factory=dict)
    """Table -> [inserted, updated, deleted] rows."""
    seconds: float = 0.0

    @property
    def rows_changed(self) -> int:
        return sum(sum(c) for c in self.changes.values())


def selected(
    reader: TopicReader,
    account: str | None,
    until_ms: int | None,
    to_offset: int | None,
    result: ReplayResult,
    progress: Callable[[int, int], None] | None,
) -> Iterator[Message]:
    total = reader.pending()
    for msg in reader.messages():
        result.read += 1
        if progress is not None:
            progress(result.read, total)
        if to_offset is not None and (msg.offset() or 0) > to_offset:
            continue
        kind, ms = msg.timestamp()
        if until_ms is not None and kind and ms >= until_ms:
            continue
        key = msg.key()
        if account is not None and (key is None or key.decode(errors="replace") != account):
            continue
        result.replayed += 1
        yield msg


def to_topic(settings: Settings, messages: Iterator[Message], target: str, result: ReplayResult) -> None:
    """Copy each message, key, value and headers, onto `target`, with its origin in a header."""
    producer = Producer(settings.kafka_config(**{"acks": "all", "enable.idempotence": True, "linger.ms": 5}))
    failures: list[str] = []
    for msg in messages:
        headers: list[tuple[str, Any]] = list(msg.headers() or [])  # type: ignore[arg-type]
        headers.append((REPLAY_OF, f"{msg.topic()}/{msg.partition()}/{msg.offset()}".encode()))
        while True:
            try:
                producer.produce(
                    target,
                    key=msg.key(),
                    value=msg.value(),
                    headers=headers,
                    on_delivery=lambda err, _m: failures.append(err.str()) if err else None,
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or failures:
        raise LedgerstreamError(
            f"replay: {remaining} unacknowledged, failures: {'; '.join(failures[:3]) or 'none'}"
        )


def into_sink(
    settings: Settings,
    codec: AvroCodec,
    sink: Sink[Any],
    messages: Iterator[Message],
    result: ReplayResult,
    *,
    batch_size: int = 500,
    dry_run: bool = False,
    as_topic: str | None = None,
) -> None:
    """Write the events with `sink`'s mapping and SQL, a transaction per batch, counting rows
    changed per table; `dry_run` rolls each batch back."""
    sink.bind(codec, settings)
    staging.STAGING_ONLY = True  # no COPY attempted straight into a table: only real changes are counted
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        batch: list[tuple[Event, Any]] = []

        def flush() -> None:
            if not batch:
                return
            try:
                _write(conn, sink, [item for _, item in batch], result, dry_run)
            except psycopg.Error:
                conn.rollback()
                for event, item in batch:  # one by one: which event the database refuses
                    try:
                        _write(conn, sink, [item], result, dry_run)
                    except psycopg.Error as e:
                        conn.rollback()
                        result.refused.append(f"{event.topic}/{event.partition}/{event.offset}: {e}".strip())
            batch.clear()

        for msg in messages:
            topic, partition, offset = as_topic or msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            try:
                record = codec.decode(msg.value() or b"", topic=topic, partition=partition, offset=offset)
                environment = record.get("metadata", {}).get("environment")
                if environment != settings.environment:
                    raise PoisonEvent(f"event environment {environment!r} is not {settings.environment!r}")
                event = Event(record, topic, partition, offset, msg.key(), msg.value())
                batch.append((event, sink.prepare(event)))
            except (DecodeError, PoisonEvent) as e:
                result.refused.append(f"{topic}/{partition}/{offset}: {e}")
                continue
            if len(batch) >= batch_size:
                flush()
        flush()


def _counts(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, int, int]]:
    return {t: (i, u, d) for t, i, u, d in conn.execute(CHANGES).fetchall()}


def _write(
    conn: psycopg.Connection[Any], sink: Sink[Any], items: list[Any], result: ReplayResult, dry_run: bool
) -> None:
    # the backend's counters may still hold earlier transactions' counts not yet reported to
    # the statistics system, so this write's changes are the difference across it
    before = _counts(conn)
    sink.write(conn, items)
    for table, after in _counts(conn).items():
        was = before.get(table, (0, 0, 0))
        delta = [now - then for now, then in zip(after, was, strict=True)]
        if any(delta):
            counts = result.changes.setdefault(table, [0, 0, 0])
            for i, n in enumerate(delta):
                counts[i] += n
    if dry_run:
        conn.rollback()
    else:
        conn.commit()


def run_replay(
    settings: Settings,
    codec: AvroCodec,
    reader: TopicReader,
    *,
    account: str | None,
    until_ms: int | None,
    to_offset: int | None,
    sink: Sink[Any] | None,
    target: str | None,
    dry_run: bool,
    as_topic: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    result = ReplayResult()
    started = time.monotonic()
    messages = selected(reader, account, until_ms, to_offset, result, progress)
    if sink is not None:
        into_sink(settings, codec, sink, messages, result, dry_run=dry_run, as_topic=as_topic)
    elif target is not None:
        if dry_run:
            for _ in messages:
                pass
        else:
            to_topic(settings, messages, target, result)
    result.seconds = time.monotonic() - started
    return result
