"""`ledgerstream status`: the pipeline at a glance, as the broker sees it.

Per consumer group: its state and members, its lag in all and per partition, and its dead
letters. Per topic: how many messages it keeps, when the last one was written, and which
framings it holds. A topic has one framing, set by whether the deployment has a schema
registry; the first and the last message of every partition are sampled, and a topic
whose samples differ is reported as mixed (a registry-based consumer fails on the rest).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from ops.topic_reader import framing_of
from topics.catalog import Catalog, ConsumerSpec
from topics.errors import LedgerstreamError
from topics.settings import Settings


@dataclass
class GroupStatus:
    consumer: str
    group: str
    state: str
    members: int
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    """Per input partition: end minus committed offset (the whole partition when nothing is committed)."""
    dead_letters: int = 0

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())


@dataclass
class TopicStatus:
    topic: str
    messages: int = 0
    last_ms: int | None = None
    framings: set[str] = field(default_factory=set)

    @property
    def mixed(self) -> bool:
        """Both Avro framings seen (a dead-letter topic's sealed values are raw, and not counted)."""
        return {"registry", "single-object"} <= self.framings


@dataclass
class PipelineStatus:
    groups: list[GroupStatus]
    topics: list[TopicStatus]


def pipeline_status(
    settings: Settings,
    catalog: Catalog,
    *,
    topics: Sequence[str] | None = None,
    consumers: Sequence[ConsumerSpec] | None = None,
    sample_timeout: float = 15.0,
) -> PipelineStatus:
    """Ask the broker about every catalog consumer group and topic (or only `topics` and
    `consumers`)."""
    admin = AdminClient(settings.kafka_config())
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"ledgerstream.operator.status-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
    )
    try:
        names = sorted(topics if topics is not None else catalog.topics)
        metadata = consumer.list_topics(timeout=15).topics
        watermarks: dict[tuple[str, int], tuple[int, int]] = {}
        for name in names:
            meta = metadata.get(name)
            if meta is None or meta.error is not None:
                continue
            for p in meta.partitions:
                watermarks[(name, p)] = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
        found = {name: TopicStatus(name) for name in names}
        for (name, _), (low, high) in watermarks.items():
            found[name].messages += high - low
        _sample(consumer, watermarks, found, sample_timeout)
        specs = list(consumers) if consumers is not None else list(catalog.consumers.values())
        groups = _groups(admin, catalog, specs, watermarks)
    finally:
        consumer.close()
    return PipelineStatus(groups, [found[n] for n in names])


def consumer_lags(
    settings: Settings, catalog: Catalog, consumers: Sequence[ConsumerSpec] | None = None
) -> list[GroupStatus]:
    """Every catalog consumer group's lag and dead letters, without sampling the topics."""
    admin = AdminClient(settings.kafka_config())
    consumer = Consumer(
        settings.kafka_config(
            **{"group.id": f"ledgerstream.operator.lag-{uuid.uuid4().hex[:12]}", "enable.auto.commit": False}
        )
    )
    try:
        metadata = consumer.list_topics(timeout=15).topics
        watermarks: dict[tuple[str, int], tuple[int, int]] = {}
        for name in sorted(catalog.topics):
            meta = metadata.get(name)
            if meta is None or meta.error is not None:
                continue
            for p in meta.partitions:
                watermarks[(name, p)] = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
        specs = list(consumers) if consumers is not None else list(catalog.consumers.values())
        return _groups(admin, catalog, specs, watermarks)
    finally:
        consumer.close()


def _sample(
    consumer: Consumer,
    watermarks: dict[tuple[str, int], tuple[int, int]],
    topics: dict[str, TopicStatus],
    timeout: float,
) -> None:
    """Read the first and the last message of every partition: framings and the last write time."""
    for edge in ("first", "last"):
        wanted = {
            (t, p): low if edge == "first" else high - 1
            for (t, p), (low, high) in watermarks.items()
            if high > low
        }
        if not wanted:
            return
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in wanted.items()])
        deadline = time.monotonic() + timeout
        while wanted and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                where = (msg.topic() or "", msg.partition() or 0)
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        wanted.pop(where, None)
                    continue
                if where not in wanted:
                    continue
                del wanted[where]
                status = topics[where[0]]
                status.framings.add(framing_of(msg.value()))
                kind, ms = msg.timestamp()
                if edge == "last" and kind and (status.last_ms is None or ms > status.last_ms):
                    status.last_ms = ms
        consumer.unassign()


def _groups(
    admin: AdminClient,
    catalog: Catalog,
    specs: Sequence[ConsumerSpec],
    watermarks: dict[tuple[str, int], tuple[int, int]],
) -> list[GroupStatus]:
    found = []
    described = admin.describe_consumer_groups([c.group_id for c in specs])
    for spec in specs:
        try:
            info = described[spec.group_id].result(timeout=15)
            state, members = str(info.state.name), len(info.members)
        except Exception as e:  # a group the broker does not know yet
            state, members = f"unknown ({e})", 0
        inputs = catalog.expand(spec.inputs)
        parts = [TopicPartition(t, p) for (t, p) in watermarks if t in inputs]
        status = GroupStatus(spec.name, spec.group_id, state, members)
        if parts:
            asked = ConsumerGroupTopicPartitions(spec.group_id, parts)
            try:
                result = admin.list_consumer_group_offsets([asked])[spec.group_id].result(timeout=15)
            except TimeoutError as e:
                raise LedgerstreamError(
                    f"the broker did not give {spec.group_id}'s committed offsets within 15 s; is it up?"
                ) from e
            for tp in result.topic_partitions:
                low, high = watermarks[(tp.topic, tp.partition)]
                status.lag[(tp.topic, tp.partition)] = high - (tp.offset if tp.offset >= 0 else low)
        status.dead_letters = sum(high - low for (t, _), (low, high) in watermarks.items() if t == spec.dlq)
        found.append(status)
    return found
