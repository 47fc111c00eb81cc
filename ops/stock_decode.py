"""Every message of every catalog topic through confluent-kafka's stock `AvroDeserializer`.

The check a registry-based consumer (kcat, Kafbat UI, a Kafka Connect sink, a team's own
service) would make: it reads only the registry framing. A topic holding an event in
Avro's single-object framing, or under a schema id the registry does not know, fails it.
Dead-letter topics (sealed values) are left out.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from topics.catalog import Catalog
from topics.errors import LedgerstreamError
from topics.settings import Settings


@dataclass
class TopicDecode:
    topic: str
    decoded: int = 0
    failed: int = 0
    first_failures: list[str] = field(default_factory=list)


def stock_decode(
    settings: Settings,
    catalog: Catalog,
    progress: Callable[[str], None] | None = None,
    *,
    topics: list[str] | None = None,
    from_ms: int | None = None,
) -> list[TopicDecode]:
    """Decode every message of every catalog topic but the dead letters (or of `topics`) with the
    stock deserializer; with `from_ms`, only those timestamped at or after it (epoch ms)."""
    if not settings.schema_registry_url:
        raise LedgerstreamError(
            "no schema registry configured (SCHEMA_REGISTRY_URL): nothing to check against"
        )
    registry = SchemaRegistryClient(settings.registry_config())
    deserializer = AvroDeserializer(registry)
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"ledgerstream.operator.decode-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
    )
    results = []
    try:
        names = topics if topics is not None else [t for t, s in catalog.topics.items() if s.dlq_of is None]
        for name in sorted(names):
            if progress is not None:
                progress(name)
            result = TopicDecode(name)
            results.append(result)
            partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
            starts, ends = {}, {}
            if from_ms is not None:
                found = consumer.offsets_for_times([TopicPartition(name, p, from_ms) for p in partitions], 10)
                starts = {tp.partition: tp.offset for tp in found}  # -1: nothing at or after it
            for p in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                start = starts.get(p, low)
                if start >= 0 and high > max(low, start):
                    ends[p] = high
                    starts[p] = max(low, start)
            if not ends:
                continue
            consumer.assign([TopicPartition(name, p, starts[p]) for p in ends])
            context = SerializationContext(name, MessageField.VALUE)
            while ends:
                for msg in consumer.consume(500, timeout=1.0):
                    p, error = msg.partition() or 0, msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            ends.pop(p, None)
                        continue
                    try:
                        deserializer(msg.value(), context)
                        result.decoded += 1
                    except Exception as e:  # the stock deserializer raises several kinds
                        result.failed += 1
                        if len(result.first_failures) < 3:
                            result.first_failures.append(f"{name}/{p}/{msg.offset()}: {e}")
                    if (msg.offset() or 0) + 1 >= ends.get(p, 0):
                        ends.pop(p, None)
            consumer.unassign()
    finally:
        consumer.close()
        registry.close()
    return results
