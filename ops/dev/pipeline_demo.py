"""The pipeline end to end on the local stack, fed through the connectors.

The accounts are opened in the registry first. Money then comes in: bank credits
(signed TrueLayer webhooks), a card load (Stripe) and an ERC-20 deposit made on an
in-process EVM (eth-tester, py-evm) that the chain listener detects and confirms;
each is posted to the ledger. Only then is it spent: transfers and an FX order are
POSTed to the command API, the status agent reserves each transfer's amount plus
fees against the posted balance (one overspend is refused INSUFFICIENT_FUNDS), a
card is authorized (a hold), captured (the hold becomes a posting) and partly
refunded. The payout dispatcher sends each reserved transfer to the provider sandbox,
whose signed payout webhooks complete it. Everything reaches Kafka through the outbox
relay. The market rate comes from a rate feed.
Every agent and sink runs as its own consumer group, as in production; the demo
prints what each connector answered, the lifecycle, fees, the conversion, the
invoice, journal entries and each account's posted, held and available balance."""

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

import httpx
import psycopg
import redis

from connectors.accounts import open_account
from connectors.api import create_app as create_api
from connectors.auth import create_tenant, issue_key
from connectors.chain import ChainListener, ChainSpec
from connectors.outbox import OutboxRelay
from connectors.payouts import PayoutDispatcher, TrueLayerPayouts
from connectors.webhooks.app import create_app as create_webhooks
from ops.audit_trace import Step, trace
from ops.dev import webhook_senders as send
from ops.dev.evm_sandbox import start_sandbox
from ops.dev.provider_sandbox import create_sandbox
from ops.dev.serving import serving
from ops.stack.process import wait_until
from sinks.aml import AmlSink
from sinks.audit import AuditSink
from sinks.balances import Balance, customer_balances
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
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.events import derived_event_id, new_metadata
from topics.names import (
    CRYPTO_WALLET_TRANSFER_CONFIRMED_V1,
    FX_RATE_UPDATED_V1,
    LEDGER_JOURNAL_POSTED_V1,
    PAYMENTS_TRANSACTION_STATUS_REPORTED_V1,
    PAYMENTS_TRANSFER_REQUESTED_V1,
)
from topics.outbox import enqueue
from topics.producer import EventProducer
from topics.settings import Settings

REQUESTED = PAYMENTS_TRANSFER_REQUESTED_V1
REPORTED = PAYMENTS_TRANSACTION_STATUS_REPORTED_V1
SANCTIONED = "0x8589427373d6d84e98730d7795d8f6f8731fda16"  # on the sample sanctions list


@dataclass
class DemoReport:
    run: str
    transactions: list[tuple[str, str, int, int]] = field(default_factory=list)
    history: dict[str, list[str]] = field(default_factory=dict)
    journals: list[tuple[str, str, str, int, str]] = field(default_factory=list)
    balances: list[tuple[str, int, int]] = field(default_factory=list)
    accounts: list[Balance] = field(default_factory=list)
    """Each customer account of the run with postings: posted, held, available."""
    card: list[str] = field(default_factory=list)
    trial_balance: dict[str, int] = field(default_factory=dict)
    fees: list[tuple[str, str, str, int, str, str]] = field(default_factory=list)
    conversion: tuple[Any, ...] = ()
    invoice: list[tuple[str, str, str, int]] = field(default_factory=list)
    flags: list[tuple[str, str, int, str]] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    trace_id: str = ""
    trace: list[Step] = field(default_factory=list)
    connectors: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(connector, what was sent, HTTP or chain answer, where it went)."""
    seconds: float = 0.0


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    if not wait_until(condition, timeout, 0.2):
        raise TimeoutError(f"demo: {what} did not happen within {timeout:.0f}s")


def in_process_workers(
    settings: Settings, codec: AvroCodec, catalog: Catalog, stop: threading.Event
) -> list[Callable[[], Any]]:
    """Every agent, sink and the outbox relay as threads of this process, each under its own
    Kafka principal (the catalog's ACLs hold here too), until `stop` is set."""
    pricing = load_pricing(settings.pricing_file)
    handlers = [
        StatusHandler(settings, codec),
        LedgerHandler(),
        FeesHandler(pricing.fees),
        FxHandler(settings, pricing.fx),
        BillingHandler(settings, pricing.billing),
        AmlHandler(settings, load_rules(settings.aml_rules_file)),
    ]
    workers: list[Callable[[], Any]] = [
        partial(
            run_agent, AgentRuntime(settings.as_principal(h.name), h, codec, catalog, linger=0.05), stop=stop
        )
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
    # each component under its own Kafka principal: the catalog's ACLs hold in the demo too
    workers += [
        partial(SinkRunner(settings.as_principal(s.name), s, codec, linger=0.05).run, stop=stop)
        for s in sinks
    ]
    relay = OutboxRelay(settings.as_principal("outbox_relay"), codec, catalog)
    workers.append(partial(relay.run, stop=stop, poll=0.05))
    return workers


def run_pipeline(
    settings: Settings,
    codec: AvroCodec,
    catalog: Catalog,
    *,
    transfers: int = 4,
    workers_running: bool = False,
) -> DemoReport:
    """The demo's round trip; `workers_running`: the agents, sinks and relay run elsewhere (`ledgerstream
    run`), else they run as threads here."""
    run = uuid.uuid4().hex[:6]
    report = DemoReport(run)
    started = time.monotonic()
    accounts = [f"acc-demo-{run}-{i}" for i in range(transfers)]
    card_account, wallet_account = f"acc-demo-{run}-card", f"acc-demo-{run}-wallet"
    customer, kyc_user = f"cus_demo_{run}", f"usr-demo-{run}"
    keys = send.ProviderKeys()
    sandbox = start_sandbox(symbol="TUSD", decimals=6)
    # each run's in-process chain is a new chain (its blocks restart at 0 and its tx hashes repeat)
    spec = ChainSpec(f"sandbox-{run}", confirmations=3, native_asset="ETH")
    wallet = sandbox.accounts[1]
    card = f"ic_demo_{run}"
    merchants = [f"ma-demo-{run}-{i}" for i in range(transfers)]
    url = settings.database_url.get_secret_value()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO chain_wallets VALUES (%s, %s, 'tenant-demo', %s)",
            (spec.name, wallet.lower(), wallet_account),
        )
        token = sandbox.token.address.lower()
        conn.execute("INSERT INTO crypto_assets VALUES (%s, 'TUSD', 6, %s)", (spec.name, token))
        conn.execute("INSERT INTO chain_tokens VALUES (%s, %s, 'TUSD', 6)", (spec.name, token))
        for provider, ref, account in (
            ("stripe", customer, card_account),
            ("stripe", card, card_account),
            ("sumsub", kyc_user, card_account),
            *(("truelayer", m, a) for m, a in zip(merchants, accounts, strict=True)),
        ):
            conn.execute(
                "INSERT INTO provider_links VALUES (%s, %s, 'tenant-demo', %s)", (provider, ref, account)
            )
        create_tenant(conn, "tenant-demo", "Demo tenant")
        _, token = issue_key(conn, "tenant-demo", "demo-operator", ["transfers:write", "fx:write"])
        for account, currency in [*((a, "EUR") for a in (*accounts, card_account)), (wallet_account, "TUSD")]:
            open_account(
                conn,
                codec,
                catalog,
                tenant="tenant-demo",
                environment=settings.environment,
                account_id=account,
                currency=currency,
                holder=f"customer {account}",
            )

    def meta(kind: str, i: int) -> dict[str, Any]:
        return new_metadata(
            kind,
            tenant_id="tenant-demo",
            environment=settings.environment,
            source="ops.demo",
            correlation_id=f"demo-{run}-{i}",
        )

    stop = threading.Event()
    errors: list[BaseException] = []
    workers: list[Callable[[], Any]] = (
        [] if workers_running else in_process_workers(settings, codec, catalog, stop)
    )

    def guarded(work: Callable[[], Any]) -> None:
        try:
            work()
        except BaseException as e:
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=guarded, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    producer = EventProducer(settings.as_principal("upstream"), codec, catalog)  # the FX rates feed
    listener = ChainListener(
        settings, codec, catalog, sandbox.w3, spec, start_block=sandbox.w3.eth.block_number + 1
    )
    try:
        with (
            psycopg.connect(url, autocommit=True) as conn,
            serving(create_api(settings, codec, catalog)) as api_url,
            serving(create_webhooks(settings, keys.settings(), codec, catalog)) as hooks_url,
            serving(create_sandbox(f"{hooks_url}/v1/webhooks/truelayer", keys.truelayer)) as provider_url,
            httpx.Client(timeout=30) as http,
            TrueLayerPayouts(provider_url, f"ma-demo-{run}") as payouts,
        ):
            dispatcher = threading.Thread(
                target=guarded,
                args=(
                    partial(PayoutDispatcher(settings, codec, catalog, payouts).run, stop=stop, poll=0.05),
                ),
                daemon=True,
            )
            dispatcher.start()
            threads.append(dispatcher)

            def count(sql: str, *args: Any) -> int:
                if errors:
                    raise errors[0]
                return int(conn.execute(sql, args).fetchone()[0])  # type: ignore[index]

            def command(path: str, body: dict[str, Any], key: str, correlation: str) -> dict[str, Any]:
                headers = {
                    "Authorization": f"Bearer {token}",
                    "x-environment": settings.environment,
                    "Idempotency-Key": key,
                    "x-correlation-id": correlation,
                }
                response = http.post(api_url + path, json=body, headers=headers)
                if response.status_code not in (200, 201):
                    raise RuntimeError(f"demo: POST {path} answered {response.status_code}: {response.text}")
                replay = " (replayed)" if response.headers.get("Idempotent-Replayed") else ""
                report.connectors.append(
                    (
                        "command API",
                        f"POST {path}",
                        f"{response.status_code}{replay}",
                        response.json().get("transfer_id") or response.json().get("order_id"),
                    )
                )
                return dict(response.json())

            def webhook(
                provider: str, document: dict[str, Any], headers: dict[str, str] | None = None
            ) -> Any:
                body = send.encode(document)
                path = f"/v1/webhooks/{provider}"
                signed = headers if headers is not None else keys.sign(provider, body, path)
                response = http.post(
                    hooks_url + path, content=body, headers={"content-type": "application/json", **signed}
                )
                answer = response.json()
                what = (
                    document.get("type") or document.get("notificationType") or document.get("webhook_code")
                )
                report.connectors.append(
                    (
                        f"{provider} webhook",
                        str(what),
                        f"{response.status_code} {answer.get('status', answer.get('detail', ''))}",
                        f"{len(answer.get('events', []))} event(s)",
                    )
                )
                return answer

            # money comes in: bank credits, a card load and an on-chain deposit, each posted
            deposits = [500_000, *([100_000] * (transfers - 2)), 1_000]  # the last account can afford little
            for merchant, units in zip(merchants, deposits, strict=True):
                webhook("truelayer", send.truelayer_payment(merchant, units, "EUR"))
            charge = send.stripe_charge(customer, 5_000)
            webhook("stripe", charge)
            webhook("stripe", charge)  # the provider's retry: answered, nothing new
            webhook("stripe", send.stripe_charge(customer, 5_000), {"Stripe-Signature": "t=1,v1=forged"})
            webhook("sumsub", send.sumsub_review(kyc_user))
            webhook("plaid", send.plaid_sync(f"item-demo-{run}"))
            card_txn = charge["data"]["object"]["id"]

            tx = sandbox.send_token(sandbox.accounts[0], wallet, 2_500_000)
            listener.catch_up(conn)
            report.connectors.append(
                (
                    "chain listener",
                    f"2.5 TUSD to {wallet[:10]}...",
                    f"detected in block {sandbox.w3.eth.block_number}",
                    tx[:18] + "...",
                )
            )
            sandbox.tester.mine_blocks(spec.confirmations - 1)
            listener.catch_up(conn)
            status = conn.execute(
                "SELECT status FROM chain_transfers WHERE chain = %s AND tx_hash = %s", (spec.name, tx)
            ).fetchone()
            report.connectors.append(
                (
                    "chain listener",
                    f"{spec.confirmations} blocks later",
                    status[0] if status else "?",
                    CRYPTO_WALLET_TRANSFER_CONFIRMED_V1,
                )
            )
            chain_txn = f"{spec.name}:{tx}:0"
            funded = "SELECT count(*) FROM balances WHERE credits > 0 AND ledger_account = ANY(%s)"
            customers = [f"customer:tenant-demo/{a}:EUR" for a in (*accounts, card_account)]
            customers.append(f"customer:tenant-demo/{wallet_account}:TUSD")
            _wait(lambda: count(funded, customers) == len(customers), 60, "the deposits to be posted")

            quoted = datetime.now(UTC)
            producer.produce(
                FX_RATE_UPDATED_V1,
                {
                    "metadata": meta("fx.rate.updated", 7),
                    "pair": "EUR/USD",
                    "base": "EUR",
                    "quote": "USD",
                    "bid": Decimal("1.0841"),
                    "ask": Decimal("1.0843"),
                    "rate_source": "demo-feed",
                    "quoted_at": quoted,
                },
            )
            producer.flush()
            cached = f"ledgerstream:{settings.environment}:fx:rate:EUR/USD"
            rates = redis.Redis.from_url(settings.redis_url)
            _wait(lambda: rates.hget(cached, "source") == b"demo-feed", 60, "the rate to be cached")
            rates.close()
            order = {
                "account_id": accounts[0],
                "sell": {"units": 250_000, "currency": "EUR", "exponent": 2},
                "buy_currency": "USD",
                "buy_exponent": 2,
                "order_type": "MARKET",
            }
            order_id = command("/v1/fx/orders", order, f"demo-{run}-fx", f"demo-{run}-8")["order_id"]
            tids = []
            for i, account in enumerate(accounts):
                transfer = {
                    "account_id": account,
                    "amount": {"units": 12_550 * (i + 1), "currency": "EUR", "exponent": 2},
                    "rail": "SEPA",
                    "beneficiary_reference": "GB33BUKB20201555555555",
                    "reference": f"demo invoice {i}",
                }
                tids.append(
                    command("/v1/transfers", transfer, f"demo-{run}-t{i}", f"demo-{run}-{i}")["transfer_id"]
                )
                if i == 0:  # a client retry: the stored answer, nothing new
                    command("/v1/transfers", transfer, f"demo-{run}-t{i}", f"demo-{run}-{i}")
            crypto = {
                "account_id": wallet_account,
                "rail": "CRYPTO",
                "beneficiary_reference": SANCTIONED,
                "amount": {"units": 1_000_000, "currency": "TUSD", "exponent": 6},
                "reference": "demo: to a sanctioned address",
            }
            blocked_id = command("/v1/transfers", crypto, f"demo-{run}-sanctioned", f"demo-{run}-9")[
                "transfer_id"
            ]
            # a card purchase: authorized (held), captured (posted), then partly refunded
            authorization = send.stripe_authorization(card, 2_000)
            webhook("stripe", authorization)
            auth_id = authorization["data"]["object"]["id"]
            held = "SELECT count(*) FROM holds WHERE hold_id = %s AND status = 'ACTIVE'"
            _wait(
                lambda: count(held, f"card:tenant-demo/{auth_id}") == 1, 60, "the card authorization's hold"
            )
            webhook("stripe", send.stripe_capture(card, 2_000, authorization=auth_id))
            webhook("stripe", send.stripe_capture(card, 500, authorization=auth_id, refund=True))
            _wait(
                lambda: count("SELECT count(*) FROM outbox WHERE status = 'pending'") == 0,
                60,
                "the outbox relay",
            )

            created = "SELECT count(*) FROM transactions WHERE transaction_id = ANY(%s)"
            _wait(lambda: count(created, tids) == transfers, 60, "transaction creation")
            # the dispatcher pays each reserved transfer out through the provider sandbox, whose signed
            # payout webhooks move it on: nothing here reports a status
            settled = transfers - 1
            paid = (
                "SELECT count(*) FROM webhook_inbox WHERE event_type = 'payout_executed' "
                "AND external_ref = ANY(%s)"
            )
            _wait(lambda: count(paid, tids) == settled, 60, "the provider's payout webhooks")
            report.connectors.append(
                (
                    "payout dispatcher",
                    f"{settled} reserved transfers",
                    "202 from the provider sandbox",
                    f"{settled} signed payout_executed webhooks",
                )
            )
            final = created + " AND status IN ('COMPLETED', 'FAILED')"
            _wait(lambda: count(final, tids) == transfers, 60, "settlement")
            posted = "SELECT count(*) FROM journal_entries WHERE reference_id = ANY(%s)"
            _wait(lambda: count(posted, [f"txn:{t}" for t in tids]) == settled, 60, "ledger posting")
            conversion_id = derived_event_id(order_id, "fx_agent")
            charged_ids = [*tids, conversion_id, card_txn, chain_txn]
            charged = "SELECT count(*) FROM fees WHERE transaction_id = ANY(%s)"
            _wait(lambda: count(charged, charged_ids) == settled + 3, 60, "fees")
            of_demo = "f.transaction_id = ANY(%s)"
            billed = (
                "SELECT count(*) FROM invoice_line_items l JOIN fees f ON f.fee_id = l.source_fee_id WHERE "
            )
            lines = "SELECT count(*) FROM fee_lines JOIN fees f USING (fee_id) WHERE "
            _wait(
                lambda: count(billed + of_demo, charged_ids) == count(lines + of_demo, charged_ids),
                60,
                "invoicing",
            )
            _wait(lambda: count(posted, [f"fx:{conversion_id}"]) == 1, 60, "the conversion's posting")
            report.fees = [
                (r[0], r[1], r[2], int(r[3]), r[4], r[5])
                for r in conn.execute(
                    "SELECT f.transaction_id, l.tier, l.category, l.amount, l.currency, f.fee_config_version "
                    "FROM fees f JOIN fee_lines l USING (fee_id) WHERE f.transaction_id = ANY(%s) "
                    "ORDER BY f.transaction_id, l.line_no",
                    (charged_ids,),
                ).fetchall()
            ]
            report.conversion = (
                conn.execute(
                    "SELECT pair, sold_units, sold_currency, bought_units, bought_currency, market_rate, "
                    "rate, markup_bps FROM fx_conversions WHERE conversion_id = %s",
                    (conversion_id,),
                ).fetchone()
                or ()
            )
            report.invoice = [
                (r[0], r[1], r[2], int(r[3]))
                for r in conn.execute(
                    "SELECT period, status, currency, total FROM invoice_totals "
                    "WHERE tenant_id = 'tenant-demo' "
                    "AND environment = %s AND period = %s ORDER BY currency",
                    (settings.environment, period_of(datetime.now(UTC))),
                ).fetchall()
            ]
            blocked = (
                "SELECT count(*) FROM transactions WHERE transaction_id = %s "
                "AND status IN ('COMPENSATING', 'FAILED')"
            )
            _wait(lambda: count(blocked, blocked_id) == 1, 60, "the sanctions block")
            # an operator's report goes through the outbox: no principal but the relay writes reports
            enqueue(
                conn,
                codec,
                catalog,
                REPORTED,
                {
                    "metadata": meta("payments.transaction.status_reported", 9),
                    "account_id": wallet_account,
                    "transaction_id": blocked_id,
                    "status": "FAILED",
                    "reason": "demo: compensated, nothing left",
                    "provider": "ledgerstream",
                    "provider_update_id": None,
                    "expected_version": None,
                },
            )
            failed = "SELECT count(*) FROM transactions WHERE transaction_id = %s AND status = 'FAILED'"
            _wait(lambda: count(failed, blocked_id) == 1, 60, "the blocked transfer to fail")
            report.card = [
                f"{r[0]} {r[1]:,} EUR: {r[2]}"
                for r in conn.execute(
                    "SELECT 'hold ' || hold_id, amount, status || ' (' || reason || ')' FROM holds "
                    "WHERE hold_id = %s UNION ALL "
                    "SELECT 'journal ' || j.reference_id, e.amount, j.description FROM journal_entries j "
                    "JOIN entries e USING (journal_entry_id) WHERE j.reference_id LIKE %s AND e.line_no = 1",
                    (f"card:tenant-demo/{auth_id}", "card:tenant-demo/ipi_%"),
                ).fetchall()
            ]
            report.blocked = [
                f"{r[0]}: {r[1]}"
                for r in conn.execute(
                    "SELECT to_status, reason FROM transaction_status_history WHERE transaction_id = %s "
                    "ORDER BY version",
                    (blocked_id,),
                ).fetchall()
            ]
            flagged = "SELECT count(*) FROM aml_flags WHERE account_id LIKE %s"
            _wait(lambda: count(flagged, f"acc-demo-{run}-%") >= 1, 60, "the AML flag")
            report.flags = [
                (r[0], r[1], int(r[2]), r[3])
                for r in conn.execute(
                    "SELECT account_id, rule_id, risk_score, evidence::text FROM aml_flags "
                    "WHERE account_id LIKE %s ORDER BY occurred_at",
                    (f"acc-demo-{run}-%",),
                ).fetchall()
            ]
            report.trace_id = f"demo-{run}-0"
            audited = "SELECT count(*) FROM audit_log WHERE correlation_id = %s AND topic = %s"
            _wait(
                lambda: count(audited, report.trace_id, LEDGER_JOURNAL_POSTED_V1) >= 2,
                90,
                "the audit trail",
            )
            report.trace = trace(conn, report.trace_id, settings.environment)
            report.transactions = [
                (r[0], r[1], r[2], int(r[3]))
                for r in conn.execute(
                    "SELECT transaction_id, status, version, amount_units FROM transactions "
                    "WHERE transaction_id = ANY(%s) ORDER BY amount_units",
                    (tids,),
                ).fetchall()
            ]
            for tid in tids:
                rows = conn.execute(
                    "SELECT to_status, reason FROM transaction_status_history "
                    "WHERE transaction_id = %s ORDER BY version",
                    (tid,),
                ).fetchall()
                report.history[tid] = [f"{r[0]} ({r[1]})" if r[0] == "FAILED" else r[0] for r in rows]
            report.journals = [
                (r[0], r[1], r[2], int(r[3]), r[4])
                for r in conn.execute(
                    "SELECT j.reference_id, e.ledger_account, e.side, e.amount, e.currency "
                    "FROM journal_entries j "
                    "JOIN entries e USING (journal_entry_id) "
                    "WHERE j.reference_id = ANY(%s) OR j.reference_id = %s "
                    "ORDER BY j.reference_id, e.line_no",
                    ([f"txn:{t}" for t in tids], f"fx:{conversion_id}"),
                ).fetchall()
            ]
            report.balances = [
                (r[0], int(r[1]), int(r[2]))
                for r in conn.execute(
                    "SELECT ledger_account, debits, credits FROM balances "
                    "WHERE ledger_account LIKE %s OR ledger_account LIKE 'clearing:tenant-demo/%%' "
                    "OR ledger_account LIKE 'fee_revenue:tenant-demo/%%' "
                    "OR ledger_account LIKE 'fx_position:tenant-demo/%%' "
                    "ORDER BY ledger_account",
                    (f"customer:tenant-demo/acc-demo-{run}-%",),
                ).fetchall()
            ]
            report.accounts = customer_balances(conn, "tenant-demo", f"acc-demo-{run}-%")
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
