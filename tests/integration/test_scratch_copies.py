"""An agent reads a scratch copy as the catalog topic it stands for and writes its outputs to a
scratch copy: how benchmarks and replays run the real code without touching the real topics."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, TopicPartition

from streams.ledger.agent import LedgerHandler
from streams.runtime import AgentRuntime
from tests.fixtures.events import metadata
from tests.fixtures.kafka import fresh_topic, produce_raw, read_all
from topics.codec import AvroCodec
from topics.schemas import load_store
from topics.settings import REPO_ROOT

COMPLETED = "payments.transaction.completed.v1"
POSTED = "ledger.journal.posted.v1"


def end_offsets(settings, topic: str) -> dict[int, int]:
    consumer = Consumer(settings.kafka_config(**{"group.id": f"test-ends-{uuid.uuid4()}"}))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        consumer.close()


def test_an_agent_reads_a_copy_as_its_topic_and_writes_to_a_copy(services, catalog):
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    source, target = fresh_topic(services, "copy-in"), fresh_topic(services, "copy-out")
    records = [
        {
            "metadata": metadata("payments.transaction.completed"),
            "account_id": f"acc-copy-{i}",
            "transaction_id": f"copy-{uuid.uuid4().hex[:8]}-{i}",
            "transaction_type": "TRANSFER",
            "direction": "DEBIT",
            "amount": {"units": 1_000 + i, "currency": "EUR", "exponent": 2},
            "counterparty_account_id": None,
            "version": 7,
            "rail": "SEPA",
        }
        for i in range(20)
    ]
    produce_raw(services, source, [(r["account_id"].encode(), codec.encode(COMPLETED, r)) for r in records])
    before = end_offsets(services, POSTED)
    runtime = AgentRuntime(
        services,
        LedgerHandler(),
        codec,
        catalog,
        group_id=f"test-copy-{uuid.uuid4()}",
        topics=[source],
        input_aliases={source: COMPLETED},
        output_topics={POSTED: target},
    )
    stats = runtime.run(idle_exit=2)
    assert stats.consumed == 20 and stats.dead_lettered == 0
    journals = [codec.decode(m.value(), topic=POSTED) for m in read_all(services, target)]
    assert sorted(j["reference_id"] for j in journals) == sorted(
        f"txn:{r['transaction_id']}" for r in records
    )
    assert end_offsets(services, POSTED) == before  # the real topic saw nothing
