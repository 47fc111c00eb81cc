"""Reading a range of a topic without a consumer group: what `tail`, `dlq` and `export` share.

A range starts at a kcat-style point on every chosen partition:
- `beginning` or `end`;
- `-N`: N messages before each partition's end;
- `N`: an absolute offset;
- `@TIME`: the first message at or after TIME (an ISO 8601 time, or milliseconds since
  the epoch), found with the broker's time index.

It ends at each partition's end as it was when reading started, or never (`follow`).
Nothing is committed: the reader assigns partitions itself, so it never joins or moves a
group, and any number of readers may run beside the pipeline.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from topics.errors import LedgerstreamError
from topics.settings import Settings

CONFLUENT_MAGIC, SINGLE_OBJECT_MAGIC = 0, b"\xc3\x01"


@dataclass(frozen=True)
class Start:
    """Where reading starts on each partition: `kind` is beginning, end, tail, offset or time."""

    kind: str
    value: int = 0


def parse_start(text: str) -> Start:
    """`beginning`, `end`, `-N`, `N` or `@TIME` (ISO 8601, or epoch milliseconds)."""
    text = text.strip()
    if text in ("beginning", "end"):
        return Start(text)
    if text.startswith("@"):
        return Start("time", parse_time(text[1:]))
    try:
        number = int(text)
    except ValueError:
        raise LedgerstreamError(
            f"start {text!r}: use beginning, end, -N (N before the end), an offset, or @TIME"
        ) from None
    return Start("tail", -number) if number < 0 else Start("offset", number)


def parse_time(text: str) -> int:
    """Milliseconds since the epoch from an ISO 8601 time (UTC when it names no zone) or a number."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise LedgerstreamError(f"time {text!r}: use ISO 8601 (2026-11-29T10:00:00Z) or epoch ms") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def framing_of(value: bytes | None) -> str:
    """registry (Confluent's 5-byte header), single-object (Avro's C3 01), none, or raw."""
    if value is None:
        return "none"
    if len(value) >= 5 and value[0] == CONFLUENT_MAGIC:
        return "registry"
    if value[:2] == SINGLE_OBJECT_MAGIC:
        return "single-object"
    return "raw"


def jsonable(value: Any) -> Any:
    """A decoded Avro value as JSON: money stays exact (ints stay ints; a Decimal and a
    timestamp become strings), bytes become base64."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    return value


def field_of(record: Any, path: str) -> Any:
    """The value at a dotted path of a record (None when a step is missing)."""
    value = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


class TopicReader:
    """Reads `topic` from `start` on `partitions` (all by default), group-less.

    Args:
        settings: the Kafka connection (its principal needs Read and Describe on the topic).
        group_prefix: the client's group id prefix (never joined, but the principal's ACLs
            name groups by prefix).
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        start: Start,
        *,
        partitions: Sequence[int] | None = None,
        group_prefix: str = "ledgerstream.operator",
    ) -> None:
        self.topic = topic
        self.consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": f"{group_prefix}.reader-{uuid.uuid4().hex[:12]}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,
                }
            )
        )
        try:
            meta = self.consumer.list_topics(topic, timeout=10).topics.get(topic)
        except KafkaException as e:
            self.consumer.close()
            raise LedgerstreamError(f"{topic}: {e.args[0].str() if e.args else e}") from None
        if meta is None or meta.error is not None or not meta.partitions:
            self.consumer.close()
            why = meta.error.str() if meta is not None and meta.error is not None else "no such topic"
            raise LedgerstreamError(f"{topic}: {why}")
        every = sorted(meta.partitions)
        chosen = list(partitions) if partitions else every
        missing = [p for p in chosen if p not in every]
        if missing:
            self.consumer.close()
            raise LedgerstreamError(f"{topic} has partitions 0-{every[-1]}; no {missing[0]}")
        self.partitions = chosen
        self.low: dict[int, int] = {}
        self.high: dict[int, int] = {}
        for p in chosen:
            self.low[p], self.high[p] = self.consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=10
            )
        self.first = self._resolve(start)

    def _resolve(self, start: Start) -> dict[int, int]:
        if start.kind == "beginning":
            return dict(self.low)
        if start.kind == "end":
            return dict(self.high)
        if start.kind == "tail":
            return {p: max(self.low[p], self.high[p] - start.value) for p in self.partitions}
        if start.kind == "offset":
            return {p: min(max(start.value, self.low[p]), self.high[p]) for p in self.partitions}
        asked = [TopicPartition(self.topic, p, start.value) for p in self.partitions]
        found = self.consumer.offsets_for_times(asked, timeout=10)
        return {tp.partition: self.high[tp.partition] if tp.offset < 0 else tp.offset for tp in found}

    def pending(self) -> int:
        """Messages between the start and the end offsets read at construction."""
        return sum(max(0, self.high[p] - self.first[p]) for p in self.partitions)

    def messages(self, *, follow: bool = False, stop: threading.Event | None = None) -> Iterator[Message]:
        """Every message of the range in order per partition; with `follow`, then every new one
        until `stop` is set. A partition is done at its end offset, or at its end of partition
        (a compacted or transactional topic may have no message at the last offset)."""
        stop = stop or threading.Event()
        todo = {p for p in self.partitions if follow or self.first[p] < self.high[p]}
        if not todo:
            return
        self.consumer.assign([TopicPartition(self.topic, p, self.first[p]) for p in sorted(todo)])
        while (follow or todo) and not stop.is_set():
            for msg in self.consumer.consume(500, timeout=0.5):
                p, error = msg.partition() or 0, msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        todo.discard(p)
                    elif error.fatal():
                        raise LedgerstreamError(f"{self.topic}: {error.str()}")
                    continue
                if not follow and (msg.offset() or 0) >= self.high[p]:
                    todo.discard(p)
                    continue
                if follow or p in todo:
                    yield msg

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def message_json(msg: Message, record: Any, *, error: str | None = None) -> dict[str, Any]:
    """One line of `tail`: where the message is, its key and framing, and the decoded value."""
    kind, ms = msg.timestamp()
    key = msg.key()
    line: dict[str, Any] = {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": datetime.fromtimestamp(ms / 1000, UTC).isoformat() if kind else None,
        "key": key.decode(errors="replace") if key is not None else None,
        "framing": framing_of(msg.value()),
    }
    if error is not None:
        line["error"] = error
    else:
        line["value"] = jsonable(record)
    return line
