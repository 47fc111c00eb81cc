"""The pipeline end to end on the local stack: a market rate, an FX order, transfer
requests and provider status reports go in; every agent (status, fees, FX, billing,
ledger) and sink (ledger, fees, FX, billing) runs, each its own consumer group as in
production, until the transactions have settled and been charged; the demo prints
their lifecycle, fees, the conversion, the invoice, journal entries and balances."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import psycopg
import redis

from ops.audit_trace import Step, trace
from sinks.aml import AmlSink
from sinks.audit import AuditSink
from sinks.base import Sink, SinkRunner
from sinks.billing import BillingSink
from sinks.fees import FeesSink
from sinks.fx import FxSink
from sinks.ledger import LedgerSink
from streams.aml.agent import AmlHandler
from streams.aml.rules import load_rules
from streams.billing.agent import BillingHandler
from streams.billing.invoicing import period_of
from streams.fees.agent import FeesHandler
from streams.fx.agent import FxHandler
from streams.ledger.agent import LedgerHandler
from streams.pricing import load_pricing
from streams.runtime import AgentRuntime, run_agent
from streams.status.agent import StatusHandler
from streams.status.machine import HAPPY_PATH
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.events import derived_event_id, new_metadata
from topics.producer import EventProducer
from topics.settings import Settings

REQUESTED = "payments.transfer.requested.v1"
REPORTED = "payments.transaction.status_reported.v1"
SANCTIONED = "0x8589427373d6d84e98730d7795d8f6f8731fda16"  # on the sample sanctions list


@dataclass
class DemoReport:
    run: str
    transactions: list[tuple[str, str, int, int]] = field(default_factory=list)
    history: dict[str, list[str]] = field(default_factory=dict)
    journals: list[tuple[str, str, str, int, str]] = field(default_factory=list)
    balances: list[tuple[str, int, int]] = field(default_factory=list)
    trial_balance: dict[str, int] = field(default_factory=dict)
    fees: list[tuple[str, str, str, int, str, str]] = field(default_factory=list)
    conversion: tuple[Any, ...] = ()
    invoice: list[tuple[str, str, str, int]] = field(default_factory=list)
    flags: list[tuple[str, str, int, str]] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    trace_id: str = ""
    trace: list[Step] = field(default_factory=list)
    seconds: float = 0.0


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: {what} did not happen within {timeout:.0f}s")
        time.sleep(0.2)


def run_pipeline(settings: Settings, codec: AvroCodec, catalog: Catalog, *, transfers: int = 4) -> DemoReport:
    run = uuid.uuid4().hex[:6]
    report = DemoReport(run)
    started = time.monotonic()
    accounts = [f"acc-demo-{run}-{i}" for i in range(transfers)]
    tids = [f"tx-demo-{run}-{i}" for i in range(transfers)]

    def meta(kind: str, i: int) -> dict[str, Any]:
        return new_metadata(kind, tenant_id="tenant-demo", environment=settings.environment,
                            source="ops.demo", correlation_id=f"demo-{run}-{i}")  # fmt: skip

    stop = threading.Event()
    errors: list[BaseException] = []
    pricing = load_pricing(settings.pricing_file)
    handlers = [
        StatusHandler(settings, codec), LedgerHandler(), FeesHandler(pricing.fees),
        FxHandler(settings, pricing.fx), BillingHandler(settings, pricing.billing),
        AmlHandler(settings, load_rules(settings.aml_rules_file)),
    ]  # fmt: skip
    workers: list[Callable[[], Any]] = [
        partial(run_agent, AgentRuntime(settings, h, codec, catalog, linger=0.05), stop=stop)
        for h in handlers
    ]
    sinks: list[Sink[Any]] = [
        LedgerSink(),
        FeesSink(),
        FxSink(),
        BillingSink(),
        AmlSink(),
        AuditSink(catalog),
    ]
    workers += [partial(SinkRunner(settings, s, codec, linger=0.05).run, stop=stop) for s in sinks]

    def guarded(work: Callable[[], Any]) -> None:
        try:
            work()
        except BaseException as e:
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=guarded, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    producer = EventProducer(settings, codec, catalog)
    url = settings.database_url.get_secret_value()
    try:
        with psycopg.connect(url, autocommit=True) as conn:

            def count(sql: str, *args: Any) -> int:
                if errors:
                    raise errors[0]
                return int(conn.execute(sql, args).fetchone()[0])  # type: ignore[index]

            quoted = datetime.now(UTC)
            producer.produce("fx.rate.updated.v1", {
                "metadata": meta("fx.rate.updated", 7), "pair": "EUR/USD", "base": "EUR", "quote": "USD",
                "bid": Decimal("1.0841"), "ask": Decimal("1.0843"), "rate_source": "demo-feed",
                "quoted_at": quoted,
            })  # fmt: skip
            producer.flush()
            cached = f"ledgerstream:{settings.environment}:fx:rate:EUR/USD"
            rates = redis.Redis.from_url(settings.redis_url)
            _wait(lambda: rates.hget(cached, "source") == b"demo-feed", 60, "the rate to be cached")
            rates.close()
            order_id = f"fx-demo-{run}"
            producer.produce("fx.order.requested.v1", {
                "metadata": meta("fx.order.requested", 8), "account_id": accounts[0], "order_id": order_id,
                "sell": {"units": 250_000, "currency": "EUR", "exponent": 2}, "buy_currency": "USD",
                "buy_exponent": 2, "order_type": "MARKET",
            })  # fmt: skip
            for i, (account, tid) in enumerate(zip(accounts, tids, strict=True)):
                producer.produce(REQUESTED, {
                    "metadata": meta("payments.transfer.requested", i),
                    "account_id": account, "transfer_id": tid,
                    "amount": {"units": 12_550 * (i + 1), "currency": "EUR", "exponent": 2},
                    "destination_account_id": None, "beneficiary_reference": "GB33BUKB20201555555555",
                    "rail": "SEPA", "reference": f"demo invoice {i}",
                })  # fmt: skip
            blocked_id = f"blocked-demo-{run}"
            producer.produce(REQUESTED, {
                "metadata": meta("payments.transfer.requested", 9), "account_id": f"acc-demo-{run}-crypto",
                "transfer_id": blocked_id,
                "amount": {"units": Decimal(2 * 10**18), "asset": "ETH", "decimals": 18, "chain": "ethereum"},
                "destination_account_id": None, "beneficiary_reference": SANCTIONED, "rail": "CRYPTO",
                "reference": "demo: to a sanctioned address",
            })  # fmt: skip
            producer.flush()
            like = f"tx-demo-{run}-%"
            created = "SELECT count(*) FROM transactions WHERE transaction_id LIKE %s"
            _wait(lambda: count(created, like) == transfers, 60, "transaction creation")
            for i, (account, tid) in enumerate(zip(accounts, tids, strict=True)):
                path = list(HAPPY_PATH[1:]) if i % 4 != 3 else ["VALIDATING", "FAILED"]
                if i == 1:
                    path.insert(0, "PROVIDER_CONFIRMING")  # illegal from INITIATED: dead-lettered
                for status in path:
                    producer.produce(REPORTED, {
                        "metadata": meta("payments.transaction.status_reported", i), "account_id": account,
                        "transaction_id": tid, "status": status, "reason": f"demo: {status.lower()}",
                        "provider": "truelayer", "provider_update_id": None, "expected_version": None,
                    })  # fmt: skip
            producer.flush()
            settled = sum(1 for i in range(transfers) if i % 4 != 3)
            final = created + " AND status IN ('COMPLETED', 'FAILED')"
            _wait(lambda: count(final, like) == transfers, 60, "settlement")
            posted = "SELECT count(*) FROM journal_entries WHERE reference_id LIKE %s"
            _wait(lambda: count(posted, "txn:" + like) == settled, 60, "ledger posting")
            charged = "SELECT count(*) FROM fees WHERE transaction_id LIKE %s OR transaction_id = %s"
            conversion_id = derived_event_id(order_id, "fx_agent")
            _wait(lambda: count(charged, like, conversion_id) == settled + 1, 60, "fees")
            of_demo = "(f.transaction_id LIKE %s OR f.transaction_id = %s)"
            billed = (
                "SELECT count(*) FROM invoice_line_items l JOIN fees f ON f.fee_id = l.source_fee_id WHERE "
            )
            lines = "SELECT count(*) FROM fee_lines JOIN fees f USING (fee_id) WHERE "
            _wait(
                lambda: (
                    count(billed + of_demo, like, conversion_id)
                    == count(lines + of_demo, like, conversion_id)
                ),
                60,
                "invoicing",
            )
            _wait(lambda: count(posted, f"fx:{conversion_id}") == 1, 60, "the conversion's posting")
            report.fees = [
                (r[0], r[1], r[2], int(r[3]), r[4], r[5])
                for r in conn.execute(
                    "SELECT f.transaction_id, l.tier, l.category, l.amount, l.currency, f.fee_config_version "
                    "FROM fees f JOIN fee_lines l USING (fee_id) WHERE f.transaction_id LIKE %s "
                    "OR f.transaction_id = %s ORDER BY f.transaction_id, l.line_no", (like, conversion_id),
                ).fetchall()
            ]  # fmt: skip
            report.conversion = conn.execute(
                "SELECT pair, sold_units, sold_currency, bought_units, bought_currency, market_rate, rate, "
                "markup_bps FROM fx_conversions WHERE conversion_id = %s", (conversion_id,),
            ).fetchone() or ()  # fmt: skip
            report.invoice = [
                (r[0], r[1], r[2], int(r[3]))
                for r in conn.execute(
                    "SELECT period, status, currency, total FROM invoice_totals "
                    "WHERE tenant_id = 'tenant-demo' "
                    "AND environment = %s AND period = %s ORDER BY currency",
                    (settings.environment, period_of(datetime.now(UTC))),
                ).fetchall()
            ]  # fmt: skip
            status = "SELECT count(*) FROM transactions WHERE transaction_id = %s AND status = 'FAILED'"
            _wait(lambda: count(status, blocked_id) == 1, 60, "the sanctions block")
            report.blocked = [
                f"{r[0]}: {r[1]}"
                for r in conn.execute(
                    "SELECT to_status, reason FROM transaction_status_history WHERE transaction_id = %s "
                    "ORDER BY version", (blocked_id,),
                ).fetchall()
            ]  # fmt: skip
            flagged = "SELECT count(*) FROM aml_flags WHERE account_id LIKE %s"
            _wait(lambda: count(flagged, f"acc-demo-{run}-%") >= 1, 60, "the AML flag")
            report.flags = [
                (r[0], r[1], int(r[2]), r[3])
                for r in conn.execute(
                    "SELECT account_id, rule_id, risk_score, evidence::text FROM aml_flags "
                    "WHERE account_id LIKE %s ORDER BY occurred_at", (f"acc-demo-{run}-%",),
                ).fetchall()
            ]  # fmt: skip
            report.trace_id = f"demo-{run}-0"
            audited = "SELECT count(*) FROM audit_log WHERE correlation_id = %s AND topic = %s"
            _wait(
                lambda: count(audited, report.trace_id, "ledger.journal.posted.v1") >= 2,
                90,
                "the audit trail",
            )
            report.trace = trace(conn, report.trace_id, settings.environment)
            report.transactions = [
                (r[0], r[1], r[2], int(r[3]))
                for r in conn.execute(
                    "SELECT transaction_id, status, version, amount_units FROM transactions "
                    "WHERE transaction_id LIKE %s ORDER BY transaction_id", (f"tx-demo-{run}-%",),
                ).fetchall()
            ]  # fmt: skip
            for tid in tids:
                rows = conn.execute(
                    "SELECT to_status FROM transaction_status_history "
                    "WHERE transaction_id = %s ORDER BY version",
                    (tid,),
                ).fetchall()
                report.history[tid] = [r[0] for r in rows]
            report.journals = [
                (r[0], r[1], r[2], int(r[3]), r[4])
                for r in conn.execute(
                    "SELECT j.reference_id, e.ledger_account, e.side, e.amount, e.currency "
                    "FROM journal_entries j "
                    "JOIN entries e USING (journal_entry_id) "
                    "WHERE j.reference_id LIKE %s OR j.reference_id = %s "
                    "ORDER BY j.reference_id, e.line_no", (f"txn:tx-demo-{run}-%", f"fx:{conversion_id}"),
                ).fetchall()
            ]  # fmt: skip
            report.balances = [
                (r[0], int(r[1]), int(r[2]))
                for r in conn.execute(
                    "SELECT ledger_account, debits, credits FROM balances "
                    "WHERE ledger_account LIKE %s OR ledger_account LIKE 'clearing:%%' "
                    "OR ledger_account LIKE 'fee_revenue:%%' OR ledger_account LIKE 'fx_position:%%' "
                    "ORDER BY ledger_account",
                    (f"customer:acc-demo-{run}-%",),
                ).fetchall()
            ]  # fmt: skip
            report.trial_balance = {
                r[0]: int(r[1])
                for r in conn.execute(
                    "SELECT currency, sum(debits - credits) FROM balances GROUP BY currency"
                )
            }
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    if errors:
        raise errors[0]
    report.seconds = time.monotonic() - started
    return report
