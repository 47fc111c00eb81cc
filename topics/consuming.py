"""The consumer every agent and sink uses: its own group, batches, manual commits."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from topics.settings import Settings


def batch_consumer(settings: Settings, group_id: str, batch_size: int, **extra: Any) -> Consumer:
    """A consumer for batch processing: offsets are committed by the caller, after its work.

    Prefetch is bounded to about two batches per partition (librdkafka would queue
    100k messages per partition), refilled as soon as there is room, and a killed
    worker's partitions move to the others within seconds.
    """
    return Consumer(
        settings.kafka_config(
            **{
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                # the broker answers a fetch as soon as any data is there: this only bounds how
                # long an idle partition's fetch waits
                "fetch.wait.max.ms": 100,
                "queued.min.messages": max(1000, 2 * batch_size),
                "queued.max.messages.kbytes": 16384,
                # librdkafka waits this long before fetching again once a partition's queue is
                # full (1 s by default): with a bounded prefetch that capped a worker at ~80k/s
                "fetch.queue.backoff.ms": 10,
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 2000,
                **extra,
            }
        )
    )


def own_group(settings: Settings, component: str, suffix: str, topics: Iterable[str]) -> str:
    """`ledgerstream.<component>.<suffix>`, a group of the component's own (its principal may use
    it) started at the end of `topics`: it works only what is produced from now on."""
    group = f"ledgerstream.{component}.{suffix}"
    start_at_end(settings.as_principal(component), group, topics)
    return group


def start_at_end(settings: Settings, group: str, topics: Iterable[str]) -> None:
    """Commit `group`'s offsets at the current end of every partition of `topics`, so a consumer
    of that group sees only what is produced from now on, not what the topics already hold."""
    consumer = Consumer(settings.kafka_config(**{"group.id": group, "enable.auto.commit": False}))
    try:
        offsets = []
        for topic in topics:
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                offsets.append(TopicPartition(topic, p, high))
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


def drop_own_groups(settings: Settings, suffix: str) -> list[str]:
    """Delete the groups `ledgerstream.<component>.<suffix>` (a demo's own, once its workers
    stopped), so they do not stay on the broker for its offsets' retention (7 days); returns
    those deleted. A group that still has members, or that the broker refuses to delete, stays,
    and is named in the LedgerstreamError raised."""
    from topics.errors import LedgerstreamError

    admin = AdminClient(settings.kafka_config())
    listed = admin.list_consumer_groups(request_timeout=10).result()
    names = sorted(
        g.group_id
        for g in listed.valid
        if g.group_id.startswith("ledgerstream.") and g.group_id.endswith(f".{suffix}")
    )
    if not names:
        return []
    refused = []
    for name, future in admin.delete_consumer_groups(names, request_timeout=30).items():
        try:
            future.result()
        except KafkaException as e:
            refused.append(f"{name} ({e.args[0].str()})")
    if refused:
        raise LedgerstreamError(f"consumer groups not deleted: {', '.join(refused)}")
    return names
