"""Dead letters as operators see them: where each came from, why it was refused, and its
original value once opened with the dead-letter key."""

from __future__ import annotations

import getpass
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import KafkaError, Message, Producer
from psycopg.types.json import Jsonb

from ops.topic_reader import Start, TopicReader
from topics.catalog import dlq_topic
from topics.deadletter import (
    CONSUMER,
    ERROR_CLASS,
    ERROR_MESSAGE,
    ORIGIN_OFFSET,
    ORIGIN_PARTITION,
    ORIGIN_TOPIC,
    TIME,
    SealError,
    open_value,
)
from topics.errors import LedgerstreamError
from topics.settings import Settings


@dataclass(frozen=True)
class DeadLetter:
    """One message of a `dlq.<consumer>.dead_lettered.v1` topic."""

    partition: int
    offset: int
    consumer: str
    origin_topic: str
    origin_partition: int
    origin_offset: int
    error_class: str
    reason: str
    time_ms: int
    key: bytes | None

    @property
    def origin(self) -> str:
        return f"{self.origin_topic}/{self.origin_partition}/{self.origin_offset}"

    def summary(self) -> dict[str, Any]:
        """What `tail` prints of a dead letter (its value stays sealed)."""
        return {
            "origin": {
                "topic": self.origin_topic,
                "partition": self.origin_partition,
                "offset": self.origin_offset,
            },
            "consumer": self.consumer,
            "error_class": self.error_class,
            "reason": self.reason,
            "value": "sealed",
        }


def headers_of(msg: Message) -> dict[str, str]:
    raw: list[tuple[str, Any]] = msg.headers() or []  # type: ignore[assignment]
    return {k: bytes(v).decode(errors="replace") for k, v in raw if v is not None}


def _int(text: str | None, default: int = -1) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def dead_letter(msg: Message) -> DeadLetter:
    """The dead letter a DLQ message holds (fields it lacks are empty or -1)."""
    h = headers_of(msg)
    return DeadLetter(
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        consumer=h.get(CONSUMER, ""),
        origin_topic=h.get(ORIGIN_TOPIC, ""),
        origin_partition=_int(h.get(ORIGIN_PARTITION)),
        origin_offset=_int(h.get(ORIGIN_OFFSET)),
        error_class=h.get(ERROR_CLASS, ""),
        reason=h.get(ERROR_MESSAGE, ""),
        time_ms=_int(h.get(TIME), msg.timestamp()[1]),
        key=msg.key(),
    )


REDRIVE_OF, REDRIVE_OPERATION = "ledgerstream.redrive.of", "ledgerstream.redrive.operation"
"""Headers a redriven message carries: the dead letter it came from, and the operation."""
RECORD_REDRIVE = (
    "INSERT INTO dlq_redrives (dlq_topic, dlq_partition, dlq_offset, operation_id, target_topic, forced) "
    "VALUES (%s, %s, %s, %s, %s, %s)"
)
DROPPED_HEADER_PREFIXES = ("dlq.", "__streams.errors.", "__connect.errors.", "ledgerstream.redrive.")


def read_dead_letters(settings: Settings, consumer: str) -> list[Message]:
    """Every message of `consumer`'s dead-letter topic, oldest first per partition."""
    with TopicReader(settings, dlq_topic(consumer), Start("beginning")) as reader:
        return list(reader.messages())


def pattern(reason: str) -> str:
    """A reason with its particulars (ids, numbers, offsets) blanked, to group alike failures."""
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", reason)
    text = re.sub(r"\b[0-9a-f]{16,}\b", "<hex>", text)
    text = re.sub(r"\d+", "<n>", text)
    return text[:160]


@dataclass
class Group:
    """Dead letters of one consumer that failed alike."""

    consumer: str
    error_class: str
    reason: str
    count: int = 0
    redriven: int = 0
    first_ms: int = 0
    last_ms: int = 0
    origins: set[str] = field(default_factory=set)


def group_dead_letters(letters: Iterable[DeadLetter], redriven: set[tuple[int, int]]) -> list[Group]:
    """Dead letters grouped by consumer, error class and reason pattern, most frequent first."""
    groups: dict[tuple[str, str, str], Group] = {}
    for d in letters:
        key = (d.consumer, d.error_class, pattern(d.reason))
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(*key, first_ms=d.time_ms, last_ms=d.time_ms)
        g.count += 1
        g.redriven += (d.partition, d.offset) in redriven
        g.first_ms, g.last_ms = min(g.first_ms, d.time_ms), max(g.last_ms, d.time_ms)
        g.origins.add(d.origin_topic)
    return sorted(groups.values(), key=lambda g: (-g.count, g.consumer, g.reason))


def redriven_offsets(conn: psycopg.Connection[Any], topic: str) -> dict[tuple[int, int], int]:
    """(partition, offset) of each dead letter of `topic` already redriven, and how often."""
    rows = conn.execute(
        "SELECT dlq_partition, dlq_offset, count(*) FROM dlq_redrives WHERE dlq_topic = %s "
        "GROUP BY dlq_partition, dlq_offset",
        (topic,),
    ).fetchall()
    return {(p, o): n for p, o, n in rows}


def log_operation(
    conn: psycopg.Connection[Any],
    *,
    operator: str,
    action: str,
    target: str,
    reason: str,
    detail: dict[str, Any],
) -> int:
    """Append an operator's action to the operations log; returns its id."""
    row = conn.execute(
        "INSERT INTO operations_log (operator, action, target, reason, detail) VALUES (%s, %s, %s, %s, %s) "
        "RETURNING id",
        (operator, action, target, reason, Jsonb(detail)),
    ).fetchone()
    assert row is not None
    return int(row[0])


def operator_name(settings: Settings) -> str:
    """Who acts: the OS user and the Kafka principal they act as."""
    return f"{getpass.getuser()} as {settings.kafka_principal or 'no principal'}"


@dataclass
class Redrive:
    """What a redrive did."""

    operation_id: int = 0
    sent: int = 0
    skipped: list[str] = field(default_factory=list)
    """Dead letters left alone, each with why (already redriven, unreadable seal)."""


def redrive(
    settings: Settings,
    conn: psycopg.Connection[Any],
    consumer: str,
    letters: Sequence[Message],
    *,
    reason: str,
    to_topic: str | None = None,
    per_second: float = 100.0,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Redrive:
    """Send `letters` (messages of `consumer`'s dead-letter topic) back to where they came from,
    or to `to_topic`: the original key, headers and exact original value (opened with the
    dead-letter key), at most `per_second` a second.

    Each dead letter is redriven once: one already redriven is skipped unless `force`. The
    operation and every dead letter it sent are recorded in one transaction, committed only
    after Kafka acknowledged every message (acks=all); a failure records nothing, and what was
    sent before it reaches consumers that drop repeats by event id.
    """
    topic = dlq_topic(consumer)
    key = settings.dead_letter_key()
    done = redriven_offsets(conn, topic)
    result = Redrive()
    chosen: list[tuple[Message, DeadLetter, bytes | None]] = []
    for msg in letters:
        d = dead_letter(msg)
        if (d.partition, d.offset) in done and not force:
            result.skipped.append(
                f"{topic}/{d.partition}/{d.offset}: already redriven (--force sends it again)"
            )
            continue
        try:
            value = open_value(key, msg)
        except SealError as e:
            result.skipped.append(f"{topic}/{d.partition}/{d.offset}: {e}")
            continue
        chosen.append((msg, d, value))
    if not chosen:
        return result
    producer = Producer(settings.kafka_config(**{"acks": "all", "enable.idempotence": True, "linger.ms": 5}))
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err.str())

    with conn.transaction():
        targets = sorted({to_topic or d.origin_topic for _, d, _ in chosen})
        result.operation_id = log_operation(
            conn,
            operator=operator_name(settings),
            action="dlq.redrive",
            target=topic,
            reason=reason,
            detail={
                "consumer": consumer,
                "to": targets,
                "count": len(chosen),
                "forced": force,
                "dead_letters": [f"{d.partition}/{d.offset}" for _, d, _ in chosen],
            },
        )
        interval, next_at = 1.0 / per_second, time.monotonic()
        for i, (msg, d, value) in enumerate(chosen):
            if not d.origin_topic and to_topic is None:
                raise LedgerstreamError(f"{topic}/{d.partition}/{d.offset} names no origin topic; use --to")
            raw: list[tuple[str, Any]] = msg.headers() or []  # type: ignore[assignment]
            headers = [(k, v) for k, v in raw if not k.startswith(DROPPED_HEADER_PREFIXES)]
            headers += [
                (REDRIVE_OF, f"{topic}/{d.partition}/{d.offset}".encode()),
                (REDRIVE_OPERATION, str(result.operation_id).encode()),
            ]
            target = to_topic or d.origin_topic
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # the rate limit
            next_at = max(next_at, time.monotonic()) + interval
            producer.produce(target, key=msg.key(), value=value, headers=headers, on_delivery=delivered)
            producer.poll(0)
            conn.execute(
                RECORD_REDRIVE,
                (topic, d.partition, d.offset, result.operation_id, target, (d.partition, d.offset) in done),
            )
            if progress is not None:
                progress(i + 1)
        remaining = producer.flush(60)
        if remaining or failures:
            raise LedgerstreamError(
                f"redrive: {remaining} unacknowledged, failures: {'; '.join(failures[:3]) or 'none'}; "
                "nothing recorded (consumers drop any repeat by event id)"
            )
    result.sent = len(chosen)
    return result
