"""A round trip through the real broker: produce keyed events, read them back,
decode them and check that each account's events arrived in order.

The events are transfer requests (their schema and keying), but they go to a scratch topic
of their own, made for the run with the catalog's partition count and deleted after it: a
topic has one framing, set by whether the deployment has a registry, and a check of both
framings must not mix them into `payments.transfer.requested.v1` (whose consumers would
also act on the requests)."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ops.topic_admin import wait_for_leaders
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.events import new_metadata
from topics.headers import header_map, routing_headers
from topics.names import PAYMENTS_TRANSFER_REQUESTED_V1
from topics.producer import EventProducer
from topics.settings import Settings

TOPIC = PAYMENTS_TRANSFER_REQUESTED_V1
"""The contract the round trip's events follow (schema, key); they are written to a scratch topic."""


@dataclass
class RoundTrip:
    framing: str
    topic: str = ""
    produced: int = 0
    consumed: int = 0
    accounts: int = 0
    out_of_order: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    partitions: set[int] = field(default_factory=set)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.produced == self.consumed and not self.out_of_order and not self.mismatched


def transfer(run: str, account: str, seq: int, settings: Settings) -> dict:
    """One transfer request; the amount encodes the sequence so order is checkable."""
    return {
        "metadata": new_metadata(
            "payments.transfer.requested",
            tenant_id="tenant-demo",
            environment=settings.environment,
            source="ops.dev.roundtrip",
            correlation_id=run,
            idempotency_key=f"{run}:{account}:{seq}",
        ),
        "account_id": account,
        "transfer_id": f"{run}-{account}-{seq}",
        "amount": {"units": 10_000 + seq, "currency": "EUR", "exponent": 2},
        "destination_account_id": None,
        "beneficiary_reference": "GB33BUKB20201555555555",
        "rail": "SEPA",
        "reference": f"seq {seq}",
        "travel_rule": None,
    }


def watermarks(consumer: Consumer, topic: str, partitions: int) -> list[TopicPartition]:
    """Current end offsets of every partition: reading from here sees only new events."""
    marks = []
    for p in range(partitions):
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        marks.append(TopicPartition(topic, p, high))
    return marks


def round_trip(
    settings: Settings,
    codec: AvroCodec,
    catalog: Catalog,
    *,
    accounts: int = 8,
    per_account: int = 25,
    timeout: float = 60.0,
) -> RoundTrip:
    """Produce `accounts x per_account` transfers in `codec`'s framing and read them back."""
    started = time.monotonic()
    run = f"roundtrip-{uuid.uuid4()}"
    spec = catalog.topic(TOPIC)
    scratch = f"ops.dev.roundtrip.{run.removeprefix('roundtrip-').replace('-', '')}.v1"
    report = RoundTrip(codec.framing, scratch)
    admin = AdminClient(settings.kafka_config())
    admin.create_topics([NewTopic(scratch, num_partitions=spec.partitions, replication_factor=1)])[
        scratch
    ].result(30)
    consumer = Consumer(
        settings.kafka_config(
            **{"group.id": run, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
        )
    )
    try:
        wait_for_leaders(admin, [scratch])
        start = watermarks(consumer, scratch, spec.partitions)
        producer = EventProducer(settings, codec, catalog)
        names = [f"acc-{run[-6:]}-{i}" for i in range(accounts)]
        fullname = codec.store.for_topic(TOPIC).fullname
        for seq in range(per_account):
            for account in names:
                record = transfer(run, account, seq, settings)
                producer.produce_encoded(
                    scratch,
                    spec.key_of(record),
                    codec.encode(TOPIC, record),
                    routing_headers(record["metadata"], fullname),
                )
                report.produced += 1
        producer.flush()
        consumer.assign(start)
        seen: dict[str, list[int]] = defaultdict(list)
        deadline = time.monotonic() + timeout
        while report.consumed < report.produced and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                value = msg.value()
                if msg.error() or value is None or header_map(msg.headers()).get("correlation_id") != run:
                    continue
                record = codec.decode(value, topic=TOPIC, partition=msg.partition(), offset=msg.offset())
                account = record["account_id"]
                if msg.key() != account.encode():
                    report.mismatched.append(f"key {msg.key()!r} != account {account}")
                if record["amount"] != {
                    "units": 10_000 + len(seen[account]),
                    "currency": "EUR",
                    "exponent": 2,
                }:
                    report.mismatched.append(f"{account}: amount {record['amount']}")
                seen[account].append(int(record["reference"].split()[-1]))
                report.partitions.add(msg.partition() or 0)
                report.consumed += 1
        report.accounts = len(seen)
        for account, seqs in seen.items():
            if seqs != sorted(seqs) or len(seqs) != per_account:
                report.out_of_order.append(f"{account}: {seqs}")
    finally:
        consumer.close()
        for future in admin.delete_topics([scratch], operation_timeout=30).values():
            future.result(30)
    report.seconds = time.monotonic() - started
    return report
