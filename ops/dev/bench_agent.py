"""`ledgerstream bench agent --agent fees|ledger`: an agent end to end, against a minimal loop.

N completed SEPA transfers (chargeable, and posted by the ledger agent) are produced to a
scratch topic. Then, each as a consumer group of its own on that topic:
1. the agent on the one batch runtime, in this process; its outputs go to scratch copies of
   its output topics, never to the real ones;
2. a minimal confluent-kafka loop running the same handler: consume a batch, decode, handle,
   encode and produce the outputs, flush, commit.

Both rates are events/s from the first message to the last commit. The per-event cost of
decoding, of the handler's logic and of encoding an output is measured in this process on the
same events. Every scratch topic is deleted afterwards.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from confluent_kafka import Producer

from ops.dev.bench import BenchError, _drop_topic, _produce, _scratch_topic
from ops.process_stats import peak_rss_kb
from streams.base import BatchHandler
from streams.registry import AGENTS
from streams.runtime import AgentRuntime, run_agent
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.consuming import batch_consumer
from topics.events import Event, new_metadata
from topics.names import PAYMENTS_TRANSACTION_COMPLETED_V1
from topics.schemas import load_store
from topics.settings import Settings

TENANT = "tenant-bench"
COMPLETED = PAYMENTS_TRANSACTION_COMPLETED_V1
PURE = ("fees", "ledger")
"""Agents whose handler needs no database or Redis state to be measured."""


@dataclass
class AgentBenchResult:
    agent: str
    events: int
    outputs: int
    produce_per_s: float
    runtime_per_s: float
    runtime_seconds: float
    minimal_per_s: float
    decode_us: float
    handle_us: float
    encode_us: float
    peak_rss_mb: float

    def lines(self) -> list[str]:
        ratio = self.runtime_per_s / self.minimal_per_s if self.minimal_per_s else 0.0
        per_output = self.outputs / self.events if self.events else 0.0
        return [
            f"bench agent {self.agent}: {self.events:,} completed transfers ({per_output:g} outputs each)",
            f"  produce (acks=all, idempotent)   {self.produce_per_s:>10,.0f} events/s",
            f"  agent on the batch runtime       {self.runtime_per_s:>10,.0f} events/s"
            f"  ({self.runtime_seconds:.1f}s busy)",
            f"  minimal confluent-kafka loop     {self.minimal_per_s:>10,.0f} events/s   (same handler)",
            f"  runtime / minimal loop           {ratio:>10.0%}",
            f"  per event: decode {self.decode_us:.1f} us, handler {self.handle_us:.1f} us, "
            f"encode {self.encode_us:.1f} us per output",
            f"  process peak RSS                 {self.peak_rss_mb:>10.0f} MB",
        ]


def _completed(settings: Settings, codec: AvroCodec, events: int) -> Iterator[tuple[bytes, bytes]]:
    for i in range(events):
        account = f"acc-{i % 5000}"
        record = {
            "metadata": new_metadata(
                "payments.transaction.completed",
                tenant_id=TENANT,
                environment=settings.environment,
                source="ops.dev.bench",
            ),
            "account_id": account,
            "transaction_id": f"bench-{i}",
            "transaction_type": "TRANSFER",
            "direction": "DEBIT",
            "amount": {"units": 10_000 + i % 90_000, "currency": "EUR", "exponent": 2},
            "counterparty_account_id": None,
            "version": 7,
            "rail": "SEPA",
        }
        yield account.encode(), codec.encode(COMPLETED, record)


def _per_event_micros(
    handler: BatchHandler, codec: AvroCodec, values: list[tuple[bytes, bytes]]
) -> tuple[float, ...]:
    """Per-event microseconds of decoding, of the handler, and per output of encoding."""
    sample = values[: min(len(values), 20_000)]
    started = time.perf_counter()
    records = [codec.decode(v, topic=COMPLETED) for _, v in sample]
    decoded = time.perf_counter()
    events = [
        Event(r, COMPLETED, 0, n, k, v) for n, (r, (k, v)) in enumerate(zip(records, sample, strict=True))
    ]
    handled_at = time.perf_counter()
    result = handler.handle(events)
    handled = time.perf_counter()
    for output in result.outputs:
        codec.encode(output.topic, output.record)
    encoded = time.perf_counter()
    n, outputs = len(sample), max(len(result.outputs), 1)
    return (
        (decoded - started) / n * 1e6,
        (handled - handled_at) / n * 1e6,
        (encoded - handled) / outputs * 1e6,
    )


def _minimal_loop(
    settings: Settings,
    codec: AvroCodec,
    handler: BatchHandler,
    topic: str,
    outputs: dict[str, str],
    events: int,
    batch_size: int,
) -> float:
    """The same handler behind the least a correct consumer does: events/s, first message to last commit."""
    consumer = batch_consumer(settings, f"bench-minimal-{uuid.uuid4()}", batch_size)
    producer = Producer(
        settings.kafka_config(
            **{"acks": "all", "enable.idempotence": True, "linger.ms": 5, "compression.type": "lz4"}
        )
    )
    consumer.subscribe([topic])
    seen, first, deadline = 0, 0.0, time.monotonic() + 600
    try:
        while seen < events:
            if time.monotonic() > deadline:
                raise BenchError(f"the minimal loop consumed {seen} of {events} events in 600 s")
            messages = [m for m in consumer.consume(batch_size, timeout=0.05) if m.error() is None]
            if not messages:
                continue
            first = first or time.monotonic()
            batch = [
                Event(
                    codec.decode(m.value() or b"", topic=COMPLETED),
                    COMPLETED,
                    m.partition() or 0,
                    m.offset() or 0,
                    m.key(),
                    m.value(),
                )
                for m in messages
            ]
            result = handler.handle(batch)
            for output in result.outputs:
                value = codec.encode(output.topic, output.record)
                producer.produce(outputs.get(output.topic, output.topic), value=value)
            if producer.flush(60):
                raise BenchError("the minimal loop's outputs were not acknowledged")
            consumer.commit(asynchronous=False)
            seen += len(messages)
        return events / (time.monotonic() - first)
    finally:
        consumer.close()


def bench_agent(
    settings: Settings, catalog: Catalog, agent: str, events: int, batch_size: int
) -> AgentBenchResult:
    """Measure one pure agent (fees or ledger) on the runtime and in a minimal loop."""
    if agent not in PURE:
        raise BenchError(
            f"agent {agent!r} keeps state in PostgreSQL or Redis; bench agent measures {', '.join(PURE)}"
        )
    codec = AvroCodec(load_store(settings.avro_dir))
    make: Callable[[], BatchHandler] = lambda: AGENTS[agent](settings, codec)  # noqa: E731
    consumer = catalog.consumers[f"{agent}_agent"]
    topic = _scratch_topic(settings, f"agent-{agent}", catalog.money_partitions)
    outputs = {out: _scratch_topic(settings, f"agent-{agent}-out", 12) for out in consumer.outputs}
    try:
        values = list(_completed(settings, codec, events))
        produce_rate = _produce(settings, topic, iter(values), events)
        decode_us, handle_us, encode_us = _per_event_micros(make(), codec, values)
        runtime = AgentRuntime(
            settings,
            make(),
            codec,
            catalog,
            batch_size=batch_size,
            linger=0.05,
            group_id=f"bench-{uuid.uuid4()}",
            topics=[topic],
            input_aliases={topic: COMPLETED},
            output_topics=outputs,
        )
        stats = run_agent(runtime, idle_exit=3)
        if stats.consumed != events:
            raise BenchError(f"the agent consumed {stats.consumed} of {events} events")
        minimal = _minimal_loop(settings, codec, make(), topic, outputs, events, batch_size)
    finally:
        for name in [topic, *outputs.values()]:
            _drop_topic(settings, name)
    return AgentBenchResult(
        agent=agent,
        events=events,
        outputs=stats.emitted,
        produce_per_s=produce_rate,
        runtime_per_s=events / stats.busy_seconds if stats.busy_seconds else 0.0,
        runtime_seconds=stats.busy_seconds,
        minimal_per_s=minimal,
        decode_us=decode_us,
        handle_us=handle_us,
        encode_us=encode_us,
        peak_rss_mb=peak_rss_kb() / 1024,
    )
