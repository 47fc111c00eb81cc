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
from streams.fx.agent import conversion_id as fx_conversion_id
from streams.ledger.agent import LedgerHandler
from streams.pricing import load_pricing
from streams.runtime import AgentRuntime, run_agent
from streams.status.agent import StatusHandler
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.consuming import own_group
from topics.events import new_metadata
from topics.names import (
    CRYPTO_WALLET_TRANSFER_CONFIRMED_V1,
    FX_RATE_UPDATED_V1,
    LEDGER_JOURNAL_POSTED_V1,
    PAYMENTS_TRANSACTION_STATUS_REPORTED_V1,
    PAYMENTS_TRANSFER_REQUESTED_V1,
)
from topics.outbox import enqueue
from topics.producer import EventProducer
from topics.settings import API, CHAIN_LISTENER, PAYOUT_DISPATCHER, WEBHOOKS, Settings

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
    steps: list[tuple[str, float]] = field(default_factory=list)
    """Each named step of the demo and the seconds it took."""
    seconds: float = 0.0


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    if not wait_until(condition, timeout, 0.2):
        raise TimeoutError(f"demo: {what} did not happen within {timeout:.0f}s")


def in_process_workers(
    settings: Settings,
    codec: AvroCodec,
    catalog: Catalog,
    stop: threading.Event,
    own_groups: str | None = None,
) -> list[Callable[[], Any]]:
    """Every agent, sink and the outbox relay as threads of this process, each under its own
    Kafka principal (the catalog's ACLs hold here too), until `stop` is set.

    With `own_groups`, each agent and sink consumes as `ledgerstream.<name>.<own_groups>`, a group
    of its own started at the end of its topics: it works only what is produced from now on, not
    what the topics already hold (other runs', or the tests' events for accounts this database
    does not have)."""
    pricing = load_pricing(settings.pricing_file)
    handlers = [
        StatusHandler(settings.as_database_role("status_agent"), codec),
        LedgerHandler(),
        FeesHandler(pricing.fees),
        FxHandler(settings.as_database_role("fx_agent"), codec, pricing.fx),
        BillingHandler(settings.as_database_role("billing_agent"), pricing.billing),
        AmlHandler(settings.as_database_role("aml_agent"), load_rules(settings.aml_rules_file)),
    ]

    def group(name: str, topics: tuple[str, ...]) -> str | None:
        return None if own_groups is None else own_group(settings, name, own_groups, topics)

    workers: list[Callable[[], Any]] = [
        partial(
            run_agent,
            AgentRuntime(
                settings.as_principal(h.name),
                h,
                codec,
                catalog,
                linger=0.05,
                group_id=group(h.name, h.topics),
            ),
            stop=stop,
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
        partial(
            SinkRunner(
                settings.as_principal(s.name), s, codec, linger=0.05, group_id=group(s.name, s.topics)
            ).run,
            stop=stop,
        )
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
    own_groups: str | None = None,
) -> DemoReport:
    """The demo's round trip, step by step; `workers_running`: the agents, sinks and relay run
    elsewhere (`ledgerstream run`), else they run as threads here, each in its group
    `ledgerstream.<name>.<own_groups>` (default `demo-<the run's id>`)."""
    demo = PipelineDemo(settings, codec, catalog, transfers)
    return demo.run(workers_running=workers_running, own_groups=own_groups or f"demo-{demo.run_id}")


class PipelineDemo:
    """The demo's steps, in order (`STEPS`), sharing the connectors they drive and what each
    step leaves for the next (transfer ids, the order, the card authorization)."""

    STEPS = (
        ("open accounts", "open_accounts"),
        ("money in", "money_in"),
        ("FX rate and order", "fx_order"),
        ("transfers", "transfers"),
        ("card purchase", "card_purchase"),
        ("payouts and settlement", "settle"),
        ("sanctions block", "sanctions_block"),
        ("report", "collect"),
    )

    def __init__(self, settings: Settings, codec: AvroCodec, catalog: Catalog, transfers: int = 4) -> None:
        self.settings, self.codec, self.catalog, self.count_transfers = settings, codec, catalog, transfers
        run = self.run_id = uuid.uuid4().hex[:6]
        self.report = DemoReport(run)
        self.accounts = [f"acc-demo-{run}-{i}" for i in range(transfers)]
        self.card_account, self.wallet_account = f"acc-demo-{run}-card", f"acc-demo-{run}-wallet"
        self.customer, self.kyc_user = f"cus_demo_{run}", f"usr-demo-{run}"
        self.card = f"ic_demo_{run}"
        self.merchants = [f"ma-demo-{run}-{i}" for i in range(transfers)]
        self.keys = send.ProviderKeys()
        self.sandbox = start_sandbox(symbol="TUSD", decimals=6)
        # each run's in-process chain is a new chain (its blocks restart at 0 and its tx hashes repeat)
        self.spec = ChainSpec(f"sandbox-{run}", confirmations=3, native_asset="ETH")
        self.wallet = self.sandbox.accounts[1]
        self.errors: list[BaseException] = []
        self.token = ""
        self.tids: list[str] = []

    # the connectors' clients ------------------------------------------------------------------

    def meta(self, kind: str, i: int) -> dict[str, Any]:
        return new_metadata(
            kind,
            tenant_id="tenant-demo",
            environment=self.settings.environment,
            source="ops.demo",
            correlation_id=f"demo-{self.run_id}-{i}",
        )

    def count(self, sql: str, *args: Any) -> int:
        if self.errors:
            raise self.errors[0]
        return int(self.conn.execute(sql, args).fetchone()[0])  # type: ignore[index]

    def command(self, path: str, body: dict[str, Any], key: str, correlation: str) -> dict[str, Any]:
        headers = {
            "Authorization": f"Bearer {self.token}",
            "x-environment": self.settings.environment,
            "Idempotency-Key": key,
            "x-correlation-id": correlation,
        }
        response = self.http.post(self.api_url + path, json=body, headers=headers)
        if response.status_code not in (200, 201):
            raise RuntimeError(f"demo: POST {path} answered {response.status_code}: {response.text}")
        replay = " (replayed)" if response.headers.get("Idempotent-Replayed") else ""
        self.report.connectors.append(
            (
                "command API",
                f"POST {path}",
                f"{response.status_code}{replay}",
                response.json().get("transfer_id") or response.json().get("order_id"),
            )
        )
        return dict(response.json())

    def webhook(self, provider: str, document: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        body = send.encode(document)
        path = f"/v1/webhooks/{provider}"
        signed = headers if headers is not None else self.keys.sign(provider, body, path)
        response = self.http.post(
            self.hooks_url + path, content=body, headers={"content-type": "application/json", **signed}
        )
        answer = response.json()
        what = document.get("type") or document.get("notificationType") or document.get("webhook_code")
        self.report.connectors.append(
            (
                f"{provider} webhook",
                str(what),
                f"{response.status_code} {_answered(answer)}",
                f"{len(answer.get('events', []))} event(s)",
            )
        )
        return answer

    # the run ------------------------------------------------------------------------------------

    def run(self, *, workers_running: bool, own_groups: str) -> DemoReport:
        settings, codec, catalog = self.settings, self.codec, self.catalog
        started = time.monotonic()
        url = settings.database_url.get_secret_value()
        stop = threading.Event()

        def guarded(work: Callable[[], Any]) -> None:
            try:
                work()
            except BaseException as e:
                self.errors.append(e)
                stop.set()

        workers = (
            []
            if workers_running
            else in_process_workers(settings, codec, catalog, stop, own_groups=own_groups)
        )
        threads = [threading.Thread(target=guarded, args=(w,), daemon=True) for w in workers]
        for t in threads:
            t.start()
        self.producer = EventProducer(settings.as_principal("upstream"), codec, catalog)  # the FX rates feed
        self.listener = ChainListener(
            settings.as_principal(CHAIN_LISTENER),
            codec,
            catalog,
            self.sandbox.w3,
            self.spec,
            start_block=self.sandbox.w3.eth.block_number + 1,
        )
        keys = self.keys
        try:
            with (
                psycopg.connect(url, autocommit=True) as self.conn,
                serving(create_api(settings.as_principal(API), codec, catalog)) as self.api_url,
                serving(
                    create_webhooks(settings.as_principal(WEBHOOKS), keys.settings(), codec, catalog)
                ) as self.hooks_url,
                serving(
                    create_sandbox(f"{self.hooks_url}/v1/webhooks/truelayer", keys.truelayer, keys.payouts())
                ) as provider,
                httpx.Client(timeout=30) as self.http,
                TrueLayerPayouts(provider, f"ma-demo-{self.run_id}", keys.payouts().truelayer) as payouts,
            ):
                dispatcher = PayoutDispatcher(
                    settings.as_principal(PAYOUT_DISPATCHER), codec, catalog, payouts
                )
                thread = threading.Thread(
                    target=guarded, args=(partial(dispatcher.run, stop=stop, poll=0.05),), daemon=True
                )
                thread.start()
                threads.append(thread)
                for name, method in self.STEPS:
                    began = time.monotonic()
                    getattr(self, method)()
                    self.report.steps.append((name, time.monotonic() - began))
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        if self.errors:
            raise self.errors[0]
        self.report.seconds = time.monotonic() - started
        return self.report

    # the steps ----------------------------------------------------------------------------------

    def open_accounts(self) -> None:
        """The tenant and its API key, the wallet and the token watched on the chain, the providers'
        ids linked to accounts, and the accounts opened in the registry."""
        conn, spec, settings = self.conn, self.spec, self.settings
        conn.execute(
            "INSERT INTO chain_wallets VALUES (%s, %s, 'tenant-demo', %s)",
            (spec.name, self.wallet.lower(), self.wallet_account),
        )
        token = self.sandbox.token.address.lower()
        conn.execute("INSERT INTO crypto_assets VALUES (%s, 'TUSD', 6, %s)", (spec.name, token))
        conn.execute("INSERT INTO chain_tokens VALUES (%s, %s, 'TUSD', 6)", (spec.name, token))
        for provider, ref, account in (
            ("stripe", self.customer, self.card_account),
            ("stripe", self.card, self.card_account),
            ("sumsub", self.kyc_user, self.card_account),
            *(("truelayer", m, a) for m, a in zip(self.merchants, self.accounts, strict=True)),
        ):
            conn.execute(
                "INSERT INTO provider_links VALUES (%s, %s, 'tenant-demo', %s)", (provider, ref, account)
            )
        create_tenant(conn, "tenant-demo", "Demo tenant")
        _, self.token = issue_key(conn, "tenant-demo", "demo-operator", ["transfers:write", "fx:write"])
        currencies = [
            *((a, "EUR") for a in (*self.accounts, self.card_account)),
            (self.wallet_account, "TUSD"),
        ]
        for account, currency in currencies:
            open_account(
                conn,
                self.codec,
                self.catalog,
                tenant="tenant-demo",
                environment=settings.environment,
                account_id=account,
                currency=currency,
                holder=f"customer {account}",
            )

    def money_in(self) -> None:
        """Bank credits, a card load (and its retry, and a forgery), a KYC review, a Plaid sync and an
        ERC-20 deposit detected and confirmed on the chain; waits until each is posted."""
        deposits = [500_000, *([100_000] * (self.count_transfers - 2)), 1_000]  # the last can afford little
        for merchant, units in zip(self.merchants, deposits, strict=True):
            self.webhook("truelayer", send.truelayer_payment(merchant, units, "EUR"))
        charge = send.stripe_charge(self.customer, 5_000)
        self.webhook("stripe", charge)
        self.webhook("stripe", charge)  # the provider's retry: answered, nothing new
        self.webhook(
            "stripe", send.stripe_charge(self.customer, 5_000), {"Stripe-Signature": "t=1,v1=forged"}
        )
        self.webhook("sumsub", send.sumsub_review(self.kyc_user))
        self.webhook("plaid", send.plaid_sync(f"item-demo-{self.run_id}"))
        self.card_txn = charge["data"]["object"]["id"]

        sandbox, spec, conn = self.sandbox, self.spec, self.conn
        tx = sandbox.send_token(sandbox.accounts[0], self.wallet, 2_500_000)
        self.listener.catch_up(conn)
        self.report.connectors.append(
            (
                "chain listener",
                f"2.5 TUSD to {self.wallet[:10]}...",
                f"detected in block {sandbox.w3.eth.block_number}",
                tx[:18] + "...",
            )
        )
        sandbox.tester.mine_blocks(spec.confirmations - 1)
        self.listener.catch_up(conn)
        status = conn.execute(
            "SELECT status FROM chain_transfers WHERE chain = %s AND tx_hash = %s", (spec.name, tx)
        ).fetchone()
        self.report.connectors.append(
            (
                "chain listener",
                f"{spec.confirmations} blocks later",
                status[0] if status else "?",
                CRYPTO_WALLET_TRANSFER_CONFIRMED_V1,
            )
        )
        self.chain_txn = f"{spec.name}:{tx}:0"
        funded = "SELECT count(*) FROM balances WHERE credits > 0 AND ledger_account = ANY(%s)"
        customers = [f"customer:tenant-demo/{a}:EUR" for a in (*self.accounts, self.card_account)]
        customers.append(f"customer:tenant-demo/{self.wallet_account}:TUSD")
        _wait(lambda: self.count(funded, customers) == len(customers), 60, "the deposits to be posted")

    def fx_order(self) -> None:
        """The rates feed quotes EUR/USD; once the FX agent cached it, an order sells EUR for USD."""
        self.producer.produce(
            FX_RATE_UPDATED_V1,
            {
                "metadata": self.meta("fx.rate.updated", 7),
                "pair": "EUR/USD",
                "base": "EUR",
                "quote": "USD",
                "bid": Decimal("1.0841"),
                "ask": Decimal("1.0843"),
                "rate_source": "demo-feed",
                "quoted_at": datetime.now(UTC),
            },
        )
        self.producer.flush()
        cached = f"ledgerstream:{self.settings.environment}:fx:rate:EUR/USD"
        rates = redis.Redis.from_url(self.settings.redis_url)
        _wait(lambda: rates.hget(cached, "source") == b"demo-feed", 60, "the rate to be cached")
        rates.close()
        order = {
            "account_id": self.accounts[0],
            "sell": {"units": 250_000, "currency": "EUR", "exponent": 2},
            "buy_currency": "USD",
            "buy_exponent": 2,
            "order_type": "MARKET",
        }
        run = self.run_id
        self.order_id = self.command("/v1/fx/orders", order, f"demo-{run}-fx", f"demo-{run}-8")["order_id"]

    def transfers(self) -> None:
        """A transfer from each account through the command API (one retried by its client, the last
        one more than its account holds), and a crypto transfer to a sanctioned address."""
        run = self.run_id
        for i, account in enumerate(self.accounts):
            transfer = {
                "account_id": account,
                "amount": {"units": 12_550 * (i + 1), "currency": "EUR", "exponent": 2},
                "rail": "SEPA",
                "beneficiary_reference": "GB33BUKB20201555555555",
                "reference": f"demo invoice {i}",
            }
            answer = self.command("/v1/transfers", transfer, f"demo-{run}-t{i}", f"demo-{run}-{i}")
            self.tids.append(answer["transfer_id"])
            if i == 0:  # a client retry: the stored answer, nothing new
                self.command("/v1/transfers", transfer, f"demo-{run}-t{i}", f"demo-{run}-{i}")
        crypto = {
            "account_id": self.wallet_account,
            "rail": "CRYPTO",
            "beneficiary_reference": SANCTIONED,
            "amount": {"units": 1_000_000, "currency": "TUSD", "exponent": 6},
            "reference": "demo: to a sanctioned address",
            "travel_rule": {"originator_name": "Demo Holder", "beneficiary_name": "Unknown Recipient"},
        }
        answer = self.command("/v1/transfers", crypto, f"demo-{run}-sanctioned", f"demo-{run}-9")
        self.blocked_id = answer["transfer_id"]

    def card_purchase(self) -> None:
        """A card purchase: decided on the ledger's available balance (one beyond it declined),
        authorized (held), captured (posted), then partly refunded."""
        too_much = self.webhook("stripe", send.stripe_authorization_request(self.card, 10**12))
        if too_much.get("approved") is not False:
            raise RuntimeError(f"demo: a card purchase beyond the balance was not declined: {too_much}")
        request = send.stripe_authorization_request(self.card, 2_000)
        decision = self.webhook("stripe", request)
        if decision.get("approved") is not True:
            raise RuntimeError(f"demo: the card purchase was not approved: {decision}")
        self.auth_id = auth_id = request["data"]["object"]["id"]
        self.webhook("stripe", send.stripe_authorization(self.card, 2_000, authorization=auth_id))
        held = "SELECT count(*) FROM holds WHERE hold_id = %s AND status = 'ACTIVE'"
        _wait(
            lambda: self.count(held, f"card:tenant-demo/{auth_id}") == 1, 60, "the card authorization's hold"
        )
        self.webhook("stripe", send.stripe_capture(self.card, 2_000, authorization=auth_id))
        self.webhook("stripe", send.stripe_capture(self.card, 500, authorization=auth_id, refund=True))
        _wait(
            lambda: self.count("SELECT count(*) FROM outbox WHERE status = 'pending'") == 0,
            60,
            "the outbox relay",
        )

    def settle(self) -> None:
        """The dispatcher pays each reserved transfer out through the provider sandbox, whose signed
        payout webhooks complete it (nothing here reports a status); then postings, fees, invoicing
        and the conversion's posting."""
        tids, transfers, conn = self.tids, self.count_transfers, self.conn
        created = "SELECT count(*) FROM transactions WHERE transaction_id = ANY(%s)"
        _wait(lambda: self.count(created, tids) == transfers, 60, "transaction creation")
        settled = transfers - 1
        paid = (
            "SELECT count(*) FROM webhook_inbox WHERE event_type = 'payout_executed' "
            "AND external_ref = ANY(%s)"
        )
        _wait(lambda: self.count(paid, tids) == settled, 60, "the provider's payout webhooks")
        self.report.connectors.append(
            (
                "payout dispatcher",
                f"{settled} reserved transfers",
                "202 from the provider sandbox",
                f"{settled} signed payout_executed webhooks",
            )
        )
        final = created + " AND status IN ('COMPLETED', 'FAILED')"
        _wait(lambda: self.count(final, tids) == transfers, 60, "settlement")
        posted = "SELECT count(*) FROM journal_entries WHERE reference_id = ANY(%s)"
        _wait(lambda: self.count(posted, [f"txn:{t}" for t in tids]) == settled, 60, "ledger posting")
        self.conversion_id = conversion_id = fx_conversion_id(self.order_id)
        charged_ids = [*tids, conversion_id, self.card_txn, self.chain_txn]
        charged = "SELECT count(*) FROM fees WHERE transaction_id = ANY(%s)"
        _wait(lambda: self.count(charged, charged_ids) == settled + 3, 60, "fees")
        of_demo = "f.transaction_id = ANY(%s)"
        billed = "SELECT count(*) FROM invoice_line_items l JOIN fees f ON f.fee_id = l.source_fee_id WHERE "
        lines = "SELECT count(*) FROM fee_lines JOIN fees f USING (fee_id) WHERE "
        _wait(
            lambda: self.count(billed + of_demo, charged_ids) == self.count(lines + of_demo, charged_ids),
            60,
            "invoicing",
        )
        _wait(lambda: self.count(posted, [f"fx:{conversion_id}"]) == 1, 60, "the conversion's posting")
        self.report.fees = [
            (r[0], r[1], r[2], int(r[3]), r[4], r[5])
            for r in conn.execute(
                "SELECT f.transaction_id, l.tier, l.category, l.amount, l.currency, f.fee_config_version "
                "FROM fees f JOIN fee_lines l USING (fee_id) WHERE f.transaction_id = ANY(%s) "
                "ORDER BY f.transaction_id, l.line_no",
                (charged_ids,),
            ).fetchall()
        ]
        self.report.conversion = (
            conn.execute(
                "SELECT pair, sold_units, sold_currency, bought_units, bought_currency, market_rate, "
                "rate, markup_bps FROM fx_conversions WHERE conversion_id = %s",
                (conversion_id,),
            ).fetchone()
            or ()
        )
        self.report.invoice = [
            (r[0], r[1], r[2], int(r[3]))
            for r in conn.execute(
                "SELECT period, status, currency, total FROM invoice_totals WHERE tenant_id = 'tenant-demo' "
                "AND environment = %s AND period = %s ORDER BY currency",
                (self.settings.environment, period_of(datetime.now(UTC))),
            ).fetchall()
        ]

    def sanctions_block(self) -> None:
        """The AML agent blocks the sanctioned transfer; the status agent compensates; an operator's
        report (through the outbox: no principal but the relay writes reports) fails it."""
        blocked_id, conn = self.blocked_id, self.conn
        blocked = (
            "SELECT count(*) FROM transactions WHERE transaction_id = %s "
            "AND status IN ('COMPENSATING', 'FAILED')"
        )
        _wait(lambda: self.count(blocked, blocked_id) == 1, 60, "the sanctions block")
        enqueue(
            conn,
            self.codec,
            self.catalog,
            REPORTED,
            {
                "metadata": self.meta("payments.transaction.status_reported", 9),
                "account_id": self.wallet_account,
                "transaction_id": blocked_id,
                "status": "FAILED",
                "reason": "demo: compensated, nothing left",
                "provider": "ledgerstream",
                "provider_update_id": None,
                "expected_version": None,
            },
        )
        failed = "SELECT count(*) FROM transactions WHERE transaction_id = %s AND status = 'FAILED'"
        _wait(lambda: self.count(failed, blocked_id) == 1, 60, "the blocked transfer to fail")
        self.report.card = [
            f"{r[0]} {r[1]:,} EUR: {r[2]}"
            for r in conn.execute(
                "SELECT 'hold ' || hold_id, amount, status || ' (' || reason || ')' FROM holds "
                "WHERE hold_id = %s UNION ALL "
                "SELECT 'journal ' || j.reference_id, e.amount, j.description FROM journal_entries j "
                "JOIN entries e USING (journal_entry_id) WHERE j.reference_id LIKE %s AND e.line_no = 1",
                (f"card:tenant-demo/{self.auth_id}", "card:tenant-demo/ipi_%"),
            ).fetchall()
        ]
        self.report.blocked = [
            f"{r[0]}: {r[1]}"
            for r in conn.execute(
                "SELECT to_status, reason FROM transaction_status_history WHERE transaction_id = %s "
                "ORDER BY version",
                (blocked_id,),
            ).fetchall()
        ]

    def collect(self) -> None:
        """What the report shows: AML flags, one request's audit trail, the lifecycle, journal
        entries, balances and the trial balance."""
        conn, report, run, tids = self.conn, self.report, self.run_id, self.tids
        flagged = "SELECT count(*) FROM aml_flags WHERE account_id LIKE %s"
        _wait(lambda: self.count(flagged, f"acc-demo-{run}-%") >= 1, 60, "the AML flag")
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
            lambda: self.count(audited, report.trace_id, LEDGER_JOURNAL_POSTED_V1) >= 2, 90, "the audit trail"
        )
        report.trace = trace(conn, report.trace_id, self.settings.environment)
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
                "SELECT to_status, reason FROM transaction_status_history WHERE transaction_id = %s "
                "ORDER BY version",
                (tid,),
            ).fetchall()
            report.history[tid] = [f"{r[0]} ({r[1]})" if r[0] == "FAILED" else r[0] for r in rows]
        report.journals = [
            (r[0], r[1], r[2], int(r[3]), r[4])
            for r in conn.execute(
                "SELECT j.reference_id, e.ledger_account, e.side, e.amount, e.currency "
                "FROM journal_entries j JOIN entries e USING (journal_entry_id) "
                "WHERE j.reference_id = ANY(%s) OR j.reference_id = %s ORDER BY j.reference_id, e.line_no",
                ([f"txn:{t}" for t in tids], f"fx:{self.conversion_id}"),
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
            for r in conn.execute("SELECT currency, sum(debits - credits) FROM balances GROUP BY currency")
        }


def _answered(answer: dict[str, Any]) -> str:
    """What a webhook answer says: its inbox status, or a card authorization's decision."""
    if "approved" in answer:
        decision = answer.get("metadata", {}).get("decision", "")
        return "approved" if answer["approved"] else f"declined {decision}"
    return str(answer.get("status", answer.get("detail", "")))
