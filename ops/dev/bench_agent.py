"""`ledgerstream bench agent --agent fees|ledger|status|aml|fx`: an agent end to end, against a minimal loop.

N input events are produced to a scratch topic:
- fees and ledger: completed SEPA transfers (chargeable, and posted by the ledger agent);
- status and aml: transfer requests from funded accounts (reserved or refused for funds by the
  status agent; screened and added to velocity windows by the AML agent);
- fx: market orders selling EUR for USD against a cached EUR/USD rate (a hold and a conversion
  each).

Then, each as a consumer group of its own on that topic and each on fresh state:
1. the agent on the one batch runtime, in this process; its outputs go to scratch copies of
   its output topics, never to the real ones;
2. a minimal confluent-kafka loop running the same handler: consume a batch, decode, handle,
   encode and produce the outputs, flush, commit;
3. with `workers` above 1, that many `ledgerstream agent` processes in one consumer group, which
   Kafka splits the partitions between.

An agent that keeps state gets it fresh for each run (the per-event costs, the runtime, the
minimal loop, the group of processes): a scratch database migrated and funded, and an empty scratch Redis
database, all removed afterwards. Both rates are events/s from the first message to the last
commit. The per-event cost of decoding, of the handler's logic (with its database and Redis
round trips) and of encoding an output is measured in this process on the same events, in
batches of the runtime's size. Every scratch topic is deleted afterwards.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from confluent_kafka import Producer

from ops.dev.bench import (
    BenchError,
    _drop_topic,
    _produce,
    _scratch_topic,
    bench_metadata,
    group_seconds,
    keyed,
    run_group,
    small_euros,
    worker_env,
)
from ops.dev.bench_reservations import fund, transfer_requests
from ops.process_stats import peak_rss_kb
from sinks.migrate import scratch_database
from streams.base import BatchHandler
from streams.fx.pricing import Rate
from streams.fx.rates import RateCache
from streams.pricing import load_pricing
from streams.registry import AGENTS
from streams.runtime import AgentRuntime, run_agent
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.collector import settle_collector
from topics.consuming import batch_consumer
from topics.events import Event
from topics.names import (
    FX_ORDER_REQUESTED_V1,
    PAYMENTS_TRANSACTION_COMPLETED_V1,
    PAYMENTS_TRANSFER_REQUESTED_V1,
)
from topics.schemas import load_store
from topics.settings import Settings

COMPLETED = PAYMENTS_TRANSACTION_COMPLETED_V1
REQUESTED = PAYMENTS_TRANSFER_REQUESTED_V1
ORDERS = FX_ORDER_REQUESTED_V1
REDIS_CLAIM = "ledgerstream:bench:claimed"
CLAIM_EMPTY = """
if redis.call('DBSIZE') == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', 86400)
  return 1
end
return 0
"""
"""Claims a Redis database for a bench only while it holds nothing (atomic: one script)."""


@dataclass(frozen=True)
class Workload:
    """What an agent is fed, and the state it reads and writes."""

    topic: str
    """The catalog topic the scratch topic stands for."""
    unit: str
    messages: Callable[[Settings, AvroCodec, int, int], Iterator[tuple[bytes, bytes]]]
    """N events over so many accounts: key and value."""
    state: Callable[[Settings, int], AbstractContextManager[Settings]]
    """Fresh state for one run, for so many accounts: settings pointing at it."""


@dataclass
class AgentBenchResult:
    agent: str
    unit: str
    events: int
    accounts: int
    outputs: int
    produce_per_s: float
    runtime_per_s: float
    runtime_seconds: float
    minimal_per_s: float
    decode_us: float
    handle_us: float
    encode_us: float
    peak_rss_mb: float
    dead_lettered: int
    workers: int = 1
    group_per_s: float = 0.0
    """Events/s of `workers` agent processes in one group (when more than one)."""
    group_seconds: float = 0.0
    group_peak_rss_mb: float = 0.0

    def lines(self) -> list[str]:
        ratio = self.runtime_per_s / self.minimal_per_s if self.minimal_per_s else 0.0
        per_output = self.outputs / self.events if self.events else 0.0
        return [
            f"bench agent {self.agent}: {self.events:,} {self.unit} over {self.accounts:,} accounts "
            f"({per_output:.2g} outputs each)",
            f"  produce (acks=all, idempotent)   {self.produce_per_s:>10,.0f} events/s",
            f"  agent on the batch runtime       {self.runtime_per_s:>10,.0f} events/s"
            f"  ({self.runtime_seconds:.1f}s busy)",
            f"  minimal confluent-kafka loop     {self.minimal_per_s:>10,.0f} events/s   (same handler)",
            f"  runtime / minimal loop           {ratio:>10.0%}",
            *(
                [
                    f"  {self.workers} agent processes, one group {self.group_per_s:>9,.0f} events/s"
                    f"  ({self.group_seconds:.1f}s busy; "
                    f"{self.group_per_s / self.runtime_per_s if self.runtime_per_s else 0:.2f}x one worker; "
                    f"peak RSS {self.group_peak_rss_mb:.0f} MB a process)"
                ]
                if self.workers > 1
                else []
            ),
            f"  per event: decode {self.decode_us:.1f} us, handler {self.handle_us:.1f} us, "
            + (f"encode {self.encode_us:.1f} us per output" if self.outputs else "no outputs to encode"),
            f"  dead-lettered                    {self.dead_lettered:>10,}",
            f"  process peak RSS                 {self.peak_rss_mb:>10.0f} MB",
        ]


def _completed(
    settings: Settings, codec: AvroCodec, events: int, accounts: int
) -> Iterator[tuple[bytes, bytes]]:
    return keyed(
        codec,
        COMPLETED,
        events,
        accounts,
        lambda i, account: {
            "metadata": bench_metadata(settings, "payments.transaction.completed"),
            "account_id": account,
            "transaction_id": f"bench-{i}",
            "transaction_type": "TRANSFER",
            "direction": "DEBIT",
            "amount": {"units": 10_000 + i % 90_000, "currency": "EUR", "exponent": 2},
            "counterparty_account_id": None,
            "version": 7,
            "rail": "SEPA",
        },
    )


def _orders(
    settings: Settings, codec: AvroCodec, events: int, accounts: int
) -> Iterator[tuple[bytes, bytes]]:
    """Market orders of 1.00 to 39.99 EUR for USD, below every OTC threshold."""
    return keyed(
        codec,
        ORDERS,
        events,
        accounts,
        lambda i, account: {
            "metadata": bench_metadata(settings, "fx.order.requested"),
            "account_id": account,
            "order_id": f"bench-{uuid.uuid4()}",
            "sell": small_euros(i),
            "buy_currency": "USD",
            "buy_exponent": 2,
            "order_type": "MARKET",
        },
    )


@contextmanager
def scratch_redis(url: str) -> Iterator[str]:
    """Claim an empty Redis database on `url`'s server (1 to 15), yield its URL, empty it afterwards
    (benchmarks must not touch the velocity windows or the rates of a real environment)."""
    parts = urlsplit(url)
    for number in range(1, 16):
        candidate = urlunsplit(parts._replace(path=f"/{number}"))
        client = redis.Redis.from_url(candidate, socket_timeout=10)
        try:
            if client.eval(CLAIM_EMPTY, 1, REDIS_CLAIM, str(uuid.uuid4())):
                try:
                    yield candidate
                finally:
                    client.flushdb()
                return
        finally:
            client.close()
    raise BenchError(f"no empty Redis database (1 to 15) on {parts.hostname}:{parts.port} for a scratch copy")


@contextmanager
def _funded(settings: Settings, accounts: int, units: int) -> Iterator[Settings]:
    """A scratch database with `accounts` EUR accounts, each funded with `units` cents."""
    with scratch_database(settings.database_url.get_secret_value(), prefix="ledgerstream_bench") as url:
        fund(url, accounts, settings.environment, units)
        yield settings.model_copy(update={"database_url": type(settings.database_url)(url)})


@contextmanager
def _aml_state(settings: Settings, accounts: int) -> Iterator[Settings]:
    with scratch_redis(settings.redis_url) as url:
        yield settings.model_copy(update={"redis_url": url})


def cache_rate(settings: Settings, redis_url: str) -> None:
    """A EUR/USD rate quoted now, in the Redis database at `redis_url` (a scratch one)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        ttl = load_pricing(settings.pricing_file).fx.rate_ttl_seconds
        rate = Rate("EUR/USD", "EUR", "USD", Decimal("1.0842"), Decimal("1.0846"), "bench", datetime.now(UTC))
        RateCache(client, settings.environment, ttl).put_many([rate])
    finally:
        client.close()


@contextmanager
def _fx_state(settings: Settings, accounts: int) -> Iterator[Settings]:
    """Funds for every order, and a EUR/USD rate cached as quoted now (fresh for the whole run)."""
    with _funded(settings, accounts, 10_000_000_000) as funded, scratch_redis(settings.redis_url) as url:
        cache_rate(settings, url)
        yield funded.model_copy(update={"redis_url": url})


def _no_state(settings: Settings, accounts: int) -> AbstractContextManager[Settings]:
    return nullcontext(settings)


WORKLOADS: dict[str, Workload] = {
    "fees": Workload(COMPLETED, "completed transfers", _completed, _no_state),
    "ledger": Workload(COMPLETED, "completed transfers", _completed, _no_state),
    # 1,000.00 EUR an account: the first few dozen requests fit
    "status": Workload(REQUESTED, "transfer requests", transfer_requests, partial(_funded, units=100_000)),
    "aml": Workload(REQUESTED, "transfer requests", transfer_requests, _aml_state),
    "fx": Workload(ORDERS, "fx orders", _orders, _fx_state),
}


def _per_event_micros(
    handler: BatchHandler, codec: AvroCodec, topic: str, values: list[tuple[bytes, bytes]], batch_size: int
) -> tuple[float, ...]:
    """Per-event microseconds of decoding, of the handler (in batches of `batch_size`), and per
    output of encoding."""
    sample = values[: min(len(values), 20_000)]
    started = time.perf_counter()
    records = [codec.decode(v, topic=topic) for _, v in sample]
    decoded = time.perf_counter()
    events = [Event(r, topic, 0, n, k, v) for n, (r, (k, v)) in enumerate(zip(records, sample, strict=True))]
    outputs = []
    handled_at = time.perf_counter()
    for at in range(0, len(events), batch_size):
        outputs.extend(handler.handle(events[at : at + batch_size]).outputs)
    handled = time.perf_counter()
    for output in outputs:
        codec.encode(output.topic, output.record)
    encoded = time.perf_counter()
    n = len(sample)
    return (
        (decoded - started) / n * 1e6,
        (handled - handled_at) / n * 1e6,
        (encoded - handled) / max(len(outputs), 1) * 1e6,
    )


def _minimal_loop(
    settings: Settings,
    codec: AvroCodec,
    handler: BatchHandler,
    topic: str,
    stands_for: str,
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
                    codec.decode(m.value() or b"", topic=stands_for),
                    stands_for,
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


def _agent_processes(
    state: Settings,
    agent: str,
    workers: int,
    topic: str,
    stands_for: str,
    outputs: dict[str, str],
    batch_size: int,
) -> dict[str, Any]:
    """Run `workers` `ledgerstream agent` processes in one new group on `topic` until it is drained;
    their summed figures, busy from the group's first message to its last commit."""
    redirects = [arg for out, copy in outputs.items() for arg in ("--output-to", f"{out}={copy}")]
    args = ["--topic", topic, "--alias", f"{topic}={stands_for}", *redirects, "--batch-size", str(batch_size)]
    results = run_group(
        "agent", agent, worker_env(state, state.database_url.get_secret_value()), workers, args
    )
    return {
        "consumed": sum(r["consumed"] for r in results),
        "dead_lettered": sum(r["dead_lettered"] for r in results),
        "busy_seconds": group_seconds(results),
        "peak_rss_kb": max(r["peak_rss_kb"] for r in results),
    }


def bench_agent(
    settings: Settings,
    catalog: Catalog,
    agent: str,
    events: int,
    batch_size: int,
    accounts: int = 1000,
    workers: int = 1,
) -> AgentBenchResult:
    """Measure one agent on the runtime and in a minimal loop, each on fresh state, and with
    `workers` above 1 that many agent processes in one group; its input spread over `accounts`
    accounts (each funded, for the agents that spend)."""
    if agent not in WORKLOADS:
        raise BenchError(f"no workload for agent {agent!r}; bench agent measures {', '.join(WORKLOADS)}")
    work = WORKLOADS[agent]
    codec = AvroCodec(load_store(settings.avro_dir))
    consumer = catalog.consumers[f"{agent}_agent"]
    topic = _scratch_topic(settings, f"agent-{agent}", catalog.money_partitions)
    outputs = {out: _scratch_topic(settings, f"agent-{agent}-out", 12) for out in consumer.outputs}

    def handler(state: Settings) -> BatchHandler:
        return AGENTS[agent](state, codec)

    try:
        values = list(work.messages(settings, codec, events, accounts))
        settle_collector()  # as a worker process sets its collector (both loops run in this one)
        produce_rate = _produce(settings, topic, iter(values), events)
        with work.state(settings, accounts) as state:
            measuring = handler(state)
            try:
                decode_us, handle_us, encode_us = _per_event_micros(
                    measuring, codec, work.topic, values, batch_size
                )
            finally:
                measuring.close()
        with work.state(settings, accounts) as state:
            runtime = AgentRuntime(
                state,
                handler(state),
                codec,
                catalog,
                batch_size=batch_size,
                linger=0.05,
                group_id=f"bench-{uuid.uuid4()}",
                topics=[topic],
                input_aliases={topic: work.topic},
                output_topics=outputs,
            )
            stats = run_agent(runtime, idle_exit=3)
        if stats.consumed != events:
            raise BenchError(f"the agent consumed {stats.consumed} of {events} events")
        with work.state(settings, accounts) as state:
            minimal_handler = handler(state)
            try:
                minimal = _minimal_loop(
                    state, codec, minimal_handler, topic, work.topic, outputs, events, batch_size
                )
            finally:
                minimal_handler.close()
        group: dict[str, Any] = {"consumed": 0, "dead_lettered": 0, "busy_seconds": 0.0, "peak_rss_kb": 0}
        if workers > 1:
            with work.state(settings, accounts) as state:
                group = _agent_processes(state, agent, workers, topic, work.topic, outputs, batch_size)
            if group["consumed"] != events:
                raise BenchError(
                    f"the {workers} agent processes consumed {group['consumed']} of {events} events"
                )
    finally:
        for name in [topic, *outputs.values()]:
            _drop_topic(settings, name)
    return AgentBenchResult(
        agent=agent,
        unit=work.unit,
        events=events,
        accounts=accounts,
        outputs=stats.emitted,
        produce_per_s=produce_rate,
        runtime_per_s=events / stats.busy_seconds if stats.busy_seconds else 0.0,
        runtime_seconds=stats.busy_seconds,
        minimal_per_s=minimal,
        decode_us=decode_us,
        handle_us=handle_us,
        encode_us=encode_us,
        peak_rss_mb=peak_rss_kb() / 1024,
        dead_lettered=stats.dead_lettered + group["dead_lettered"],
        workers=workers,
        group_per_s=events / group["busy_seconds"] if group["busy_seconds"] else 0.0,
        group_seconds=group["busy_seconds"],
        group_peak_rss_mb=group["peak_rss_kb"] / 1024,
    )
