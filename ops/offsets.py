"""Consumer group offsets: where a group is, and where a reset would move it.

`kafka-consumer-groups --reset-offsets` semantics: the targets `earliest`, `latest`, an
offset, a time, a duration back from now, or a shift; a target outside a partition's
range is clamped to it, with a warning; a reset is refused while the group has members
(they would overwrite it with their next commit). Beyond it, a plan says per partition how
many events and how much money per currency the move would make the group reprocess
(moved back) or skip (moved forward), read from the range itself, before anything changes.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from topics.codec import AvroCodec, DecodeError
from topics.errors import LedgerstreamError
from topics.settings import Settings


@dataclass(frozen=True)
class Target:
    """Where to move: `kind` is earliest, latest, offset, time, duration or shift."""

    kind: str
    value: int = 0


def parse_duration(text: str) -> int:
    """Milliseconds in `90s`, `15m`, `2h`, `1d` or an ISO 8601 duration such as `PT1H30M`."""
    simple = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if simple:
        return int(simple.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[simple.group(2)] * 1000
    iso = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", text.strip().upper())
    if iso and any(iso.groups()):
        d, h, m, s = (int(g or 0) for g in iso.groups())
        return ((d * 24 + h) * 60 + m) * 60_000 + s * 1000
    raise LedgerstreamError(f"duration {text!r}: use 90s, 15m, 2h, 1d or ISO 8601 (PT1H30M)")


@dataclass
class PartitionPlan:
    topic: str
    partition: int
    current: int
    """The committed offset (-1: none; the group would start at its reset policy)."""
    low: int
    high: int
    target: int
    clamped: str = ""
    events: int = 0
    """Events between the current and the target offset: reprocessed when moving back."""
    money: dict[str, Decimal] = field(default_factory=dict)
    undecodable: int = 0

    @property
    def direction(self) -> str:
        start = self.current if self.current >= 0 else self.high
        return "reprocess" if self.target < start else "skip" if self.target > start else "stay"


def group_of(name: str, consumers: Sequence[str]) -> str:
    """A catalog consumer's group (`fees_agent` -> `ledgerstream.fees_agent`), or `name` itself."""
    return f"ledgerstream.{name}" if name in consumers else name


def members(admin: AdminClient, group: str) -> tuple[str, int]:
    """The group's state and how many members it has."""
    described = admin.describe_consumer_groups([group])[group].result(timeout=15)
    return str(described.state.name), len(described.members)


def committed(
    admin: AdminClient, group: str, partitions: Sequence[TopicPartition]
) -> dict[tuple[str, int], int]:
    asked = ConsumerGroupTopicPartitions(group, list(partitions))
    result = admin.list_consumer_group_offsets([asked])[group].result(timeout=15)
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions}


def money_of(record: Any) -> list[tuple[str, Decimal]]:
    """The money an event moves, per currency: a journal's debit lines, else each top-level
    amount (units, currency and exponent; or units, asset and decimals for crypto)."""

    def amount(value: Any) -> tuple[str, Decimal] | None:
        if isinstance(value, dict) and {"units", "currency", "exponent"} <= value.keys():
            return str(value["currency"]), Decimal(int(value["units"])).scaleb(-int(value["exponent"]))
        if isinstance(value, dict) and {"units", "asset", "decimals"} <= value.keys():  # a crypto amount
            return str(value["asset"]), Decimal(int(value["units"])).scaleb(-int(value["decimals"]))
        return None

    if not isinstance(record, dict):
        return []
    if isinstance(record.get("lines"), list):
        found = [amount(line.get("amount")) for line in record["lines"] if line.get("side") == "DEBIT"]
    else:
        found = [amount(v) for v in record.values()]
    return [a for a in found if a is not None]


class OffsetPlanner:
    """Plans (and applies) a reset of `group` on `topics`' partitions.

    Args:
        settings: the operator's Kafka and database connection.
        codec: decodes the events of a range to count their money.
    """

    def __init__(self, settings: Settings, codec: AvroCodec, group: str, topics: Sequence[str]) -> None:
        self.settings, self.codec, self.group, self.topics = settings, codec, group, list(topics)
        self.admin = AdminClient(settings.kafka_config())
        self.consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": f"ledgerstream.operator.offsets-{uuid.uuid4().hex[:12]}",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                }
            )
        )

    def close(self) -> None:
        self.consumer.close()

    def partitions(self, only: Sequence[int] | None = None) -> list[TopicPartition]:
        found = []
        for topic in self.topics:
            meta = self.consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None:
                raise LedgerstreamError(
                    f"{topic}: {meta.error.str() if meta and meta.error else 'no such topic'}"
                )
            found += [TopicPartition(topic, p) for p in sorted(meta.partitions) if not only or p in only]
        if not found:
            raise LedgerstreamError(f"no partition {only} on {', '.join(self.topics)}")
        return found

    def show(self, only: Sequence[int] | None = None) -> list[PartitionPlan]:
        """Where the group is on each partition (target = current)."""
        parts = self.partitions(only)
        current = committed(self.admin, self.group, parts)
        plans = []
        for tp in parts:
            low, high = self.consumer.get_watermark_offsets(tp, timeout=10)
            at = current.get((tp.topic, tp.partition), -1)
            plans.append(PartitionPlan(tp.topic, tp.partition, at, low, high, at))
        return plans

    def plan(
        self,
        target: Target,
        only: Sequence[int] | None = None,
        *,
        count_money: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> list[PartitionPlan]:
        plans = self.show(only)
        times: dict[tuple[str, int], int] = {}
        if target.kind in ("time", "duration"):
            ms = target.value if target.kind == "time" else int(time.time() * 1000) - target.value
            asked = [TopicPartition(p.topic, p.partition, ms) for p in plans]
            times = {
                (tp.topic, tp.partition): tp.offset
                for tp in self.consumer.offsets_for_times(asked, timeout=15)
            }
        for p in plans:
            start = p.current if p.current >= 0 else p.high
            wanted = {
                "earliest": p.low,
                "latest": p.high,
                "offset": target.value,
                "shift": start + target.value,
            }.get(target.kind)
            if wanted is None:  # a time: the first offset at or after it, else the end
                found = times.get((p.topic, p.partition), -1)
                wanted = found if found >= 0 else p.high
            if wanted < p.low:
                p.clamped = f"{wanted} is before the first offset {p.low}: clamped"
                wanted = p.low
            elif wanted > p.high:
                p.clamped = f"{wanted} is past the end {p.high}: clamped"
                wanted = p.high
            p.target = wanted
            low, high = sorted((start, wanted))
            p.events = high - low
        if count_money:
            self._count_money(plans, progress)
        return plans

    def _count_money(self, plans: Sequence[PartitionPlan], progress: Callable[[int], None] | None) -> None:
        done = 0
        for p in plans:
            if not p.events:
                continue
            start = p.current if p.current >= 0 else p.high
            first, end = sorted((start, p.target))
            self.consumer.assign([TopicPartition(p.topic, p.partition, first)])
            position = first
            while position < end:
                for msg in self.consumer.consume(500, timeout=1.0):
                    error = msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            position = end  # a compacted or transactional range ends early
                        continue
                    position = (msg.offset() or 0) + 1
                    if (msg.offset() or 0) >= end:
                        break
                    try:
                        record = self.codec.decode(msg.value() or b"", topic=p.topic)
                    except DecodeError:
                        p.undecodable += 1
                    else:
                        for currency, units in money_of(record):
                            p.money[currency] = p.money.get(currency, Decimal(0)) + units
                    done += 1
                    if progress is not None:
                        progress(done)
            self.consumer.unassign()

    def apply(self, plans: Sequence[PartitionPlan]) -> None:
        """Commit each plan's target as the group's offset; refused while it has members."""
        state, count = members(self.admin, self.group)
        if count:
            raise LedgerstreamError(
                f"group {self.group} has {count} active members ({state}): stop its workers first "
                "(`ledgerstream run stop`, or scale it to zero), or they overwrite the reset"
            )
        moved = [TopicPartition(p.topic, p.partition, p.target) for p in plans if p.target != p.current]
        if not moved:
            return
        request = ConsumerGroupTopicPartitions(self.group, moved)
        result = self.admin.alter_consumer_group_offsets([request])[self.group].result(timeout=15)
        failed = [tp for tp in result.topic_partitions if tp.error is not None]
        if failed:
            raise LedgerstreamError(f"reset of {self.group} refused: {failed[0].error}")
