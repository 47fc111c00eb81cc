"""`ledgerstream bench reservations`: the status agent deciding transfer requests against the ledger.

Each request becomes a transaction (INITIATED), is validated and, when its amount plus fees fits
the account's available balance, reserved (a hold) in the same database transaction; otherwise
it fails INSUFFICIENT_FUNDS. The run uses a scratch database, a scratch topic and scratch copies
of the agent's output topics (all removed afterwards): the accounts are opened and funded
directly (untimed), N requests are produced, and the agent runs in this process as its own
consumer group until the topic is drained.
Reported: requests decided per second over the agent's busy time, reserved and refused counts,
and each account's holds checked against its funds afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

from ops.dev.bench import (
    TENANT,
    BenchError,
    _drop_topic,
    _produce,
    _scratch_topic,
    bench_metadata,
    keyed,
    small_euros,
)
from sinks.migrate import scratch_database
from streams.runtime import AgentRuntime, run_agent
from streams.status.agent import StatusHandler
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.names import PAYMENTS_TRANSFER_REQUESTED_V1
from topics.schemas import load_store
from topics.settings import Settings

TOPIC = PAYMENTS_TRANSFER_REQUESTED_V1


@dataclass
class ReservationResult:
    requests: int
    accounts: int
    produce_per_s: float
    decided_per_s: float
    busy_seconds: float
    reserved: int
    refused: int
    overdrawn: int

    def lines(self) -> list[str]:
        return [
            f"bench reservations: {self.requests:,} transfer requests over {self.accounts:,} accounts",
            f"  produce (acks=all, idempotent)   {self.produce_per_s:>10,.0f} requests/s",
            f"  status agent (create, validate,  {self.decided_per_s:>10,.0f} requests/s"
            f"  ({self.busy_seconds:.1f}s busy)",
            "    reserve or refuse, emit, commit)",
            f"  reserved                         {self.reserved:>10,}",
            f"  refused INSUFFICIENT_FUNDS       {self.refused:>10,}",
            f"  accounts holding more than funds {self.overdrawn:>10,}",
        ]


def bench_reservations(
    settings: Settings, catalog: Catalog, requests: int, accounts: int, batch_size: int
) -> ReservationResult:
    """Fund `accounts` accounts with 1,000.00 EUR each and send `requests` transfers of 1.00 to
    39.99 EUR at them: the first few dozen per account fit, the rest are refused."""
    codec = AvroCodec(load_store(settings.avro_dir))
    topic = _scratch_topic(settings, "reservations", catalog.money_partitions)
    outputs = {
        out: _scratch_topic(settings, "reservations-out", catalog.money_partitions)
        for out in catalog.consumers["status_agent"].outputs
    }
    try:
        with scratch_database(settings.database_url.get_secret_value(), prefix="ledgerstream_bench") as url:
            db = settings.model_copy(update={"database_url": type(settings.database_url)(url)})
            fund(url, accounts, settings.environment)

            produce_rate = _produce(
                settings, topic, transfer_requests(settings, codec, requests, accounts), requests
            )
            runtime = AgentRuntime(
                db,
                StatusHandler(db, codec),
                codec,
                catalog,
                batch_size=batch_size,
                linger=0.05,
                group_id=f"bench-{uuid.uuid4()}",
                topics=[topic],
                input_aliases={topic: TOPIC},
                output_topics=outputs,
            )
            stats = run_agent(runtime, idle_exit=3)
            if stats.consumed != requests:
                raise BenchError(f"the agent consumed {stats.consumed} of {requests} requests")
            with psycopg.connect(url) as conn:
                reserved, refused = conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'BALANCE_RESERVED'), "
                    "count(*) FILTER (WHERE status = 'FAILED') FROM transactions"
                ).fetchone() or (0, 0)
                overdrawn = conn.execute(
                    "SELECT count(*) FROM (SELECT h.ledger_account FROM holds h JOIN balances b USING "
                    "(ledger_account) WHERE h.status = 'ACTIVE' GROUP BY h.ledger_account "
                    "HAVING sum(h.amount) > max(b.credits - b.debits)) over"
                ).fetchone()[0]  # type: ignore[index]
    finally:
        for name in [topic, *outputs.values()]:
            _drop_topic(settings, name)
    return ReservationResult(
        requests=requests,
        accounts=accounts,
        produce_per_s=produce_rate,
        decided_per_s=requests / stats.busy_seconds if stats.busy_seconds else 0.0,
        busy_seconds=stats.busy_seconds,
        reserved=int(reserved),
        refused=int(refused),
        overdrawn=int(overdrawn),
    )


def transfer_requests(
    settings: Settings, codec: AvroCodec, requests: int, accounts: int
) -> Iterator[tuple[bytes, bytes]]:
    """SEPA transfer requests of 1.00 to 39.99 EUR, spread over `accounts` accounts: key and value."""
    return keyed(
        codec,
        TOPIC,
        requests,
        accounts,
        lambda i, account: {
            "metadata": bench_metadata(settings, "payments.transfer.requested"),
            "account_id": account,
            "transfer_id": f"bench-{uuid.uuid4()}",
            "amount": small_euros(i),
            "destination_account_id": None,
            "beneficiary_reference": None,
            "rail": "SEPA",
            "reference": None,
            "travel_rule": None,
        },
    )


def fund(url: str, accounts: int, environment: str, units: int = 100_000) -> None:
    """Open every account and give it a posted balance of `units` cents of EUR (a balance row, untimed)."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY accounts (tenant_id, account_id, currency, exponent, environment, holder, kind) FROM STDIN"
        ) as copy:
            for n in range(accounts):
                copy.write_row((TENANT, f"acc-{n}", "EUR", 2, environment, f"holder {n}", "customer"))
        codes = [f"customer:{TENANT}/acc-{n}:EUR" for n in range(accounts)]
        with cur.copy(
            "COPY ledger_accounts (code, account_type, normal_side, currency, exponent, tenant_id) FROM STDIN"
        ) as copy:
            for code in codes:
                copy.write_row((code, "liability", "CREDIT", "EUR", 2, TENANT))
        with cur.copy("COPY balances (ledger_account, currency, debits, credits) FROM STDIN") as copy:
            for code in codes:
                copy.write_row((code, "EUR", 0, units))
        conn.commit()
