"""`ledgerstream bench sink | ledger`: throughput on the local stack, against raw COPY.

Each run uses a scratch database and a scratch topic (both removed afterwards):
1. encode N events and produce them (acks=all, idempotent);
2. run the sink as its own process (`ledgerstream sink ... --json`), which reports
   its busy time (first message to last commit) and its peak RSS;
3. in this process, COPY the same rows straight into an unconstrained copy of the
   target table: the raw rate the sink is compared with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg import sql
from rich.progress import Progress

from ops.topic_admin import wait_for_leaders
from sinks.ledger import TOPIC as JOURNAL_TOPIC
from sinks.migrate import scratch_database
from sinks.transfers import TOPIC as TRANSFER_TOPIC
from streams.ledger.postings import fee_assessed, transaction_completed
from topics.codec import AvroCodec
from topics.errors import LedgerstreamError
from topics.events import new_metadata
from topics.journals import Journal, check_balanced, journal_entry_id, journal_record, opened_account
from topics.schemas import load_store
from topics.settings import REPO_ROOT, Settings


class BenchError(LedgerstreamError):
    """A benchmark run could not complete."""


TENANT = "tenant-bench"


def bench_metadata(settings: Settings, event_type: str) -> dict[str, Any]:
    """The metadata of an event a bench makes: the bench's tenant, this environment."""
    return new_metadata(
        event_type, tenant_id=TENANT, environment=settings.environment, source="ops.dev.bench"
    )


def small_euros(i: int) -> dict[str, Any]:
    """The i-th of a spread of amounts from 1.00 to 39.99 EUR, the same in every bench."""
    return {"units": 100 + (i * 7919) % 3_900, "currency": "EUR", "exponent": 2}


def keyed(
    codec: AvroCodec, topic: str, events: int, accounts: int, record: Callable[[int, str], dict[str, Any]]
) -> Iterator[tuple[bytes, bytes]]:
    """`events` events of `topic`, the i-th `record(i, account)` of account `acc-<i mod accounts>`
    (its key): key and value."""
    for i in range(events):
        account = f"acc-{i % accounts}"
        yield account.encode(), codec.encode(topic, record(i, account))


@dataclass
class BenchResult:
    name: str
    events: int
    produce_per_s: float
    sink_per_s: float
    sink_seconds: float
    copy_rows: int
    copy_per_s: float
    sink_peak_rss_mb: float
    dead_lettered: int
    db_seconds: float = 0.0
    workers: int = 1
    fast: int = 0
    """Events whose row the native writer made from their bytes (`sinks.rows`)."""
    binary_copy_per_s: float = 0.0

    @property
    def _db_share(self) -> float:
        return self.db_seconds / self.sink_seconds if self.sink_seconds else 0.0

    def lines(self) -> list[str]:
        rows_per_event = self.copy_rows / self.events if self.events else 1.0
        copy_events_per_s = self.copy_per_s / rows_per_event if rows_per_event else 0.0
        ratio = self.sink_per_s / copy_events_per_s if copy_events_per_s else 0.0
        binary_events_per_s = self.binary_copy_per_s / rows_per_event if rows_per_event else 0.0
        binary_ratio = self.sink_per_s / binary_events_per_s if binary_events_per_s else 0.0
        return [
            f"bench {self.name}: {self.events:,} events",
            f"  produce (acks=all, idempotent) {self.produce_per_s:>10,.0f} events/s",
            f"  sink x{self.workers} (decode+write+commit) {self.sink_per_s:>10,.0f} events/s"
            f"  ({self.sink_seconds:.1f}s busy)",
            f"  raw COPY, same rows             {self.copy_per_s:>10,.0f} rows/s"
            f"    ({self.copy_rows:,} rows, {rows_per_event:g} per event: {copy_events_per_s:,.0f} events/s)",
            f"  sink / raw COPY (events/s)      {ratio:>10.0%}",
            *(
                [
                    f"  raw COPY in binary, same rows   {self.binary_copy_per_s:>10,.0f} rows/s",
                    f"  sink / raw binary COPY          {binary_ratio:>10.0%}",
                ]
                if self.binary_copy_per_s
                else []
            ),
            f"  of the busy time, database      {self._db_share:>10.0%}   (the rest: consume, decode, map)",
            f"  sink process peak RSS           {self.sink_peak_rss_mb:>10.0f} MB",
            f"  dead-lettered                   {self.dead_lettered:>10}",
            f"  rows made natively              {self.fast / self.events if self.events else 0.0:>10.0%}"
            "   (ledgerstream_native, from the Avro bytes)",
        ]


def _scratch_topic(settings: Settings, kind: str, partitions: int) -> str:
    name = f"bench.{kind}.r{uuid.uuid4().hex[:10]}.v1"
    admin = AdminClient(settings.kafka_config())
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)
    wait_for_leaders(admin, [name])
    return name


def _drop_topic(settings: Settings, name: str) -> None:
    admin = AdminClient(settings.kafka_config())
    admin.delete_topics([name])[name].result(30)


def _produce(settings: Settings, topic: str, messages: Iterator[tuple[bytes, bytes]], total: int) -> float:
    producer = Producer(
        settings.kafka_config(
            **{
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 20,
                "batch.size": 1_000_000,
                "compression.type": "lz4",
                "queue.buffering.max.messages": 500_000,
            }
        )
    )
    started = time.monotonic()
    with Progress(transient=True) as progress:
        task = progress.add_task(f"producing {total:,} events", total=total)
        for n, (key, value) in enumerate(messages, start=1):
            while True:
                try:
                    producer.produce(topic, key=key, value=value)
                    break
                except BufferError:
                    producer.poll(0.05)
            if n % 10_000 == 0:
                producer.poll(0)
                progress.update(task, completed=n)
        if producer.flush(120):
            raise BenchError("events were not acknowledged")
    return total / (time.monotonic() - started)


def run_group(
    kind: str, name: str, env: Mapping[str, str], workers: int, args: Sequence[str]
) -> list[dict[str, Any]]:
    """Run `workers` `ledgerstream sink|agent NAME ARGS` processes in one new consumer group, each
    until it has been idle for 3 s, and return the figures each prints (`--json`)."""
    command = [
        sys.executable,
        "-m",
        "ops.cli",
        kind,
        name,
        *args,
        "--group",
        f"bench-{uuid.uuid4()}",
        "--idle-exit",
        "3",
        "--json",
        "--operator",
    ]
    procs = [
        subprocess.Popen(
            command,
            env={**os.environ, **env},
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    results = []
    try:
        for proc in procs:
            out, errors = proc.communicate(timeout=3600)
            if proc.returncode != 0:
                raise BenchError(f"{kind} {name} failed: {errors[-2000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return results


def group_seconds(results: Sequence[Mapping[str, Any]]) -> float:
    """From the group's first message to its last commit (the processes start apart)."""
    started = [r["first_at"] for r in results if r["first_at"]]
    return max(r["last_at"] for r in results) - min(started) if started else 0.0


def worker_env(settings: Settings, database_url: str) -> dict[str, str]:
    """What a sink or agent process of a bench is pointed at: the bench's scratch database, the
    stack's Kafka, no registry (the single-object framing), the bench's environment."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SCHEMA_REGISTRY_URL": "",
        "LEDGERSTREAM_ENVIRONMENT": settings.environment,
    }


def _run_sinks(
    settings: Settings, db_url: str, sink: str, topic: str, stands_for: str, batch_size: int, workers: int
) -> dict[str, Any]:
    """Run `workers` sink processes in one consumer group, reading the scratch `topic` as the
    catalog topic it `stands_for`; Kafka splits the partitions."""
    args = ["--topic", topic, "--alias", f"{topic}={stands_for}", "--batch-size", str(batch_size)]
    results = run_group("sink", sink, worker_env(settings, db_url), workers, args)
    return {
        "written": sum(r["written"] for r in results),
        "dead_lettered": sum(r["dead_lettered"] for r in results),
        "fast": sum(r["fast"] for r in results),
        "busy_seconds": group_seconds(results),
        "db_seconds": max(r["db_seconds"] for r in results),
        "peak_rss_kb": max(r["peak_rss_kb"] for r in results),
    }


Load = tuple[str, tuple[str, ...], list[tuple[Any, ...]]]


@dataclass(frozen=True)
class RawLoad:
    """What the raw COPY writes: `setup` untimed (e.g. accounts), `timed` in one
    transaction into the sink's own tables; then those tables are emptied again."""

    timed: list[Load]
    setup: list[Load] = field(default_factory=list)
    types: dict[str, list[str]] = field(default_factory=dict)
    """Per timed table, its columns' types: raw COPY is also timed in binary."""


def _copy(
    conn: psycopg.Connection,
    table: str,
    columns: tuple[str, ...],
    rows: list[tuple[Any, ...]],
    types: list[str] | None = None,
) -> None:
    statement = sql.SQL("COPY {} ({}) FROM STDIN" + (" (FORMAT BINARY)" if types else "")).format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        if types:
            copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _raw_copy(db_url: str, load: RawLoad, binary: bool = False) -> tuple[int, float]:
    """COPY the same rows into the sink's real tables (indexes, constraints, triggers), in text
    or in binary; returns (rows, rows/s) and leaves the tables empty for the sink."""
    with psycopg.connect(db_url) as conn:
        for table, columns, rows in load.setup:
            _copy(conn, table, columns, rows)
        conn.commit()
        started = time.monotonic()
        for table, columns, rows in load.timed:
            _copy(conn, table, columns, rows, load.types.get(table) if binary else None)
        conn.commit()
        seconds = time.monotonic() - started
        tables = [sql.Identifier(t) for t, _, _ in [*load.timed, *load.setup]]
        conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(sql.SQL(", ").join(tables)))
        conn.commit()
    count = sum(len(rows) for _, _, rows in load.timed)
    return count, count / seconds


def _bench(
    settings: Settings,
    name: str,
    sink: str,
    events: int,
    batch_size: int,
    make: Callable[[int], tuple[bytes, bytes]],
    raw_rows: Callable[[list[tuple[bytes, bytes]]], RawLoad],
    stands_for: str,
    workers: int = 1,
) -> BenchResult:
    messages = [make(i) for i in range(events)]
    topic = _scratch_topic(settings, name, 12)
    try:
        return _measure(
            settings, name, sink, events, batch_size, messages, topic, stands_for, raw_rows, workers
        )
    except psycopg.Error as e:
        raise BenchError(f"bench {name}: database: {e}") from e
    finally:
        _drop_topic(settings, topic)


def _measure(
    settings: Settings,
    name: str,
    sink: str,
    events: int,
    batch_size: int,
    messages: list[tuple[bytes, bytes]],
    topic: str,
    stands_for: str,
    raw_rows: Callable[[list[tuple[bytes, bytes]]], RawLoad],
    workers: int,
) -> BenchResult:
    with scratch_database(settings.database_url.get_secret_value(), prefix="ledgerstream_bench") as db_url:
        produce_rate = _produce(settings, topic, iter(messages), events)
        load = raw_rows(messages)
        copy_rows, copy_rate = _raw_copy(db_url, load)
        binary_rate = _raw_copy(db_url, load, binary=True)[1] if load.types else 0.0
        stats = _run_sinks(settings, db_url, sink, topic, stands_for, batch_size, workers)
    return BenchResult(
        name=name,
        events=events,
        produce_per_s=produce_rate,
        sink_per_s=stats["written"] / stats["busy_seconds"] if stats["busy_seconds"] else 0.0,
        sink_seconds=stats["busy_seconds"],
        copy_rows=copy_rows,
        copy_per_s=copy_rate,
        sink_peak_rss_mb=stats["peak_rss_kb"] / 1024,
        dead_lettered=stats["dead_lettered"],
        db_seconds=stats["db_seconds"],
        workers=workers,
        fast=stats["fast"],
        binary_copy_per_s=binary_rate,
    )


def bench_sink(settings: Settings, events: int, batch_size: int, workers: int = 1) -> BenchResult:
    """The transfer-request sink (one row per event) against raw COPY into the same table."""
    from sinks.transfers import COLUMNS, PLAN
    from topics.events import Event

    codec = AvroCodec(load_store(settings.avro_dir))

    def make(i: int) -> tuple[bytes, bytes]:
        account = f"acc-{i % 5000}"
        record = {
            "metadata": bench_metadata(settings, "payments.transfer.requested"),
            "account_id": account,
            "transfer_id": f"tr-{i}",
            "amount": {"units": 100 + i, "currency": "EUR", "exponent": 2},
            "destination_account_id": None,
            "beneficiary_reference": "GB33BUKB20201555555555",
            "rail": "SEPA",
            "reference": f"invoice {i}",
            "travel_rule": None,
        }
        return account.encode(), codec.encode(TRANSFER_TOPIC, record)

    def raw_rows(messages: list[tuple[bytes, bytes]]) -> RawLoad:
        field_key = settings.field_key()
        rows = [
            PLAN.row(Event(codec.decode(value), TRANSFER_TOPIC, 0, n, key), field_key)
            for n, (key, value) in enumerate(messages)
        ]
        return RawLoad(
            timed=[("transfer_requests", COLUMNS, rows)],
            types={"transfer_requests": [c.pg for c in PLAN.columns]},
        )

    return _bench(settings, "sink", "transfers", events, batch_size, make, raw_rows, TRANSFER_TOPIC, workers)


BENCH_TENANT = "tenant-bench"


def transfer_with_fee(i: int) -> tuple[str, Journal]:
    """A customer payout with its platform fee in one journal: four lines, the fee
    credited to the one hot revenue account every journal touches."""
    account = f"acc-{i % 5000}"
    payout = transaction_completed(
        tenant=BENCH_TENANT,
        transaction_id=f"b{i}",
        account_id=account,
        direction="DEBIT",
        units=10_000 + i,
        currency="EUR",
        exponent=2,
        rail="sepa",
    )
    fee = fee_assessed(
        tenant=BENCH_TENANT, fee_id=f"b{i}", account_id=account, units=25 + i % 50, currency="EUR", exponent=2
    )
    journal = Journal(f"txn+fee:b{i}", f"payout b{i} with fee", payout.lines + fee.lines)
    check_balanced(journal)
    return account, journal


def bench_ledger(settings: Settings, events: int, batch_size: int, workers: int = 1) -> BenchResult:
    """Balanced transfers (with a hot fee revenue account) through the ledger sink."""
    codec = AvroCodec(load_store(settings.avro_dir))
    journals: dict[int, tuple[str, Journal]] = {}

    def make(i: int) -> tuple[bytes, bytes]:
        account, journal = transfer_with_fee(i)
        journals[i] = (account, journal)
        meta = bench_metadata(settings, "ledger.journal.posted")
        record = journal_record(
            journal,
            journal_entry_id=journal_entry_id(journal.reference_id),
            account_id=account,
            metadata=meta,
        )
        return account.encode(), codec.encode(JOURNAL_TOPIC, record)

    def raw_rows(messages: list[tuple[bytes, bytes]]) -> RawLoad:
        journal_rows, entry_rows, accounts = [], [], {}
        for i in range(len(messages)):
            _, journal = journals[i]
            jid = journal_entry_id(journal.reference_id)
            journal_rows.append(
                (
                    jid,
                    journal.reference_id,
                    journal.description,
                    "tenant-bench",
                    settings.environment,
                    "bench",
                    jid,
                    datetime.now(UTC),
                )
            )
            for n, line in enumerate(journal.lines, start=1):
                accounts[line.account] = (*opened_account(line), BENCH_TENANT)
                entry_rows.append((jid, n, line.account, line.side, line.units, line.currency, line.exponent))
        return RawLoad(
            setup=[
                (
                    "ledger_accounts",
                    ("code", "account_type", "normal_side", "currency", "exponent", "tenant_id"),
                    list(accounts.values()),
                )
            ],
            timed=[
                (
                    "journal_entries",
                    (
                        "journal_entry_id",
                        "reference_id",
                        "description",
                        "tenant_id",
                        "environment",
                        "correlation_id",
                        "source_event_id",
                        "posted_at",
                    ),
                    journal_rows,
                ),
                (
                    "entries",
                    (
                        "journal_entry_id",
                        "line_no",
                        "ledger_account",
                        "side",
                        "amount",
                        "currency",
                        "exponent",
                    ),
                    entry_rows,
                ),
            ],
        )

    result = _bench(settings, "ledger", "ledger", events, batch_size, make, raw_rows, JOURNAL_TOPIC, workers)
    result.name = "ledger (4-line transfers with fee, hot fee_revenue account; COPY: journal + entry rows)"
    return result
