"""Fees, FX and billing on the real stack: agents and sinks from input topics to PostgreSQL.

Totals are checked against an independent calculation written here (Fractions,
the pricing rules restated), not against the agents' own functions.
"""

from __future__ import annotations

import math
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from functools import partial
from pathlib import Path

import psycopg
import pytest
import redis

from sinks.base import SinkRunner
from sinks.billing import BillingSink
from sinks.fees import FeesSink
from sinks.fx import FxSink
from sinks.ledger import LedgerSink
from streams.billing.agent import BillingHandler, close_period
from streams.billing.invoicing import next_period, period_of
from streams.fees.agent import FeesHandler
from streams.fx.agent import FxHandler
from streams.ledger.agent import LedgerHandler
from streams.pricing import Pricing, load_pricing
from streams.runtime import AgentRuntime, run_agent
from tests.fixtures.database import private_database
from tests.fixtures.events import metadata, transfer_confirmed
from tests.fixtures.kafka import read_all
from tests.fixtures.ledger import open_accounts
from tests.fixtures.running import running
from tests.fixtures.waiting import wait_for
from topics.codec import AvroCodec
from topics.deadletter import ERROR_MESSAGE
from topics.events import to_micros
from topics.producer import EventProducer
from topics.schemas import load_store
from topics.settings import REPO_ROOT

RUN = uuid.uuid4().hex[:8]
T1, VIP = f"t1-{RUN}", f"vip-{RUN}"
NOW = datetime.now(UTC)
GWEI = 10**9


@pytest.fixture(scope="module")
def codec():
    return AvroCodec(load_store(REPO_ROOT / "avro"))


@pytest.fixture(scope="module")
def pricing(tmp_path_factory) -> Pricing:
    """The shipped pricing with this run's tenants in place of the sample ones."""
    text = (REPO_ROOT / "streams" / "pricing.toml").read_text()
    path: Path = tmp_path_factory.mktemp("pricing") / "pricing.toml"
    path.write_text(text.replace("tenant-vip", VIP).replace("tenant-1", T1))
    return load_pricing(path)


# the independent calculation ----------------------------------------------------


def half_even(x: Fraction) -> int:
    return round(x)


def half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def transfer_fee(tenant: str, units: int, currency: str, rail: str) -> int:
    if tenant == VIP:
        return min(half_up(Fraction(units * 5, 10_000)), 200) if currency == "EUR" else 0
    fee = min(max(half_even(Fraction(units * 15, 10_000)), 25), 500)
    if currency == "EUR":
        fee += 10 + 2 + (50 if rail == "SEPA_INSTANT" else 0)
    return fee


def card_fee(units: int) -> int:
    band = 150 if units <= 10_000 else 100 if units <= 100_000 else 50
    return half_even(Fraction(units * band, 10_000)) + half_even(Fraction(units * 30, 10_000))


def bought(sold: int, market: Fraction, markup: int, bonus: int) -> int:
    applied = Fraction(math.floor(market * (10_000 - markup + bonus) / 10_000 * 10**18), 10**18)
    return math.floor(sold * applied)  # same exponent (2) on both sides here


# the scenario -------------------------------------------------------------------

TRANSFERS = [  # (tenant, units, currency, rail)
    (T1, 1_000, "EUR", "SEPA"),  # min fee
    (T1, 150_000, "EUR", "SEPA_INSTANT"),  # premium
    (T1, 9_000_000, "EUR", "SEPA"),  # max fee
    (T1, 123_457, "USD", "ACH"),
    (T1, 16_667, "EUR", "SEPA"),  # 25.0005: half-even
    (VIP, 990_000, "EUR", "SEPA"),  # 495 -> max 200
    (VIP, 10_100, "EUR", "SEPA"),  # 5.05 -> half-up 5
    (VIP, 50_000, "USD", "ACH"),  # no USD rule for the tenant: no fee
]
CARD_LOADS = [5_000, 10_000, 10_001, 250_000]
EURUSD = (Decimal("1.0800"), Decimal("1.0802"))


def completed(n: int, tenant: str, units: int, currency: str, rail: str) -> dict:
    return {
        "metadata": metadata(
            "payments.transaction.completed", tenant_id=tenant, correlation_id=f"c-{RUN}-{n}"
        ),
        "account_id": f"acc-{RUN}-{n % 3}",
        "transaction_id": f"tx-{RUN}-{n}",
        "transaction_type": "TRANSFER",
        "direction": "DEBIT",
        "amount": {"units": units, "currency": currency, "exponent": 2},
        "counterparty_account_id": None,
        "version": 7,
        "rail": rail,
    }


def card(n: int, units: int) -> dict:
    return {
        "metadata": metadata("cards.transaction.received", tenant_id=T1),
        "account_id": f"acc-{RUN}-card",
        "transaction_id": f"card-{RUN}-{n}",
        "card_token": "tok_visa_4242",
        "direction": "CREDIT",
        "amount": {"units": units, "currency": "EUR", "exponent": 2},
        "status": "CAPTURED",
        "merchant_name": None,
        "merchant_category_code": None,
        "provider": "stripe",
        "provider_reference": f"ch_{RUN}_{n}",
        "inbox_id": None,
    }


def rate(pair: str, bid: Decimal, ask: Decimal, quoted_at: datetime) -> dict:
    base, quote = pair.split("/")
    return {
        "metadata": metadata("fx.rate.updated"),
        "pair": pair,
        "base": base,
        "quote": quote,
        "bid": bid,
        "ask": ask,
        "rate_source": f"test-{RUN}",
        "quoted_at": quoted_at,
    }


def order(order_id: str, tenant: str, units: int, sell: str, buy: str, kind: str = "MARKET") -> dict:
    return {
        "metadata": metadata("fx.order.requested", tenant_id=tenant, correlation_id=f"c-{order_id}"),
        "account_id": f"acc-{RUN}-fx",
        "order_id": order_id,
        "sell": {"units": units, "currency": sell, "exponent": 2},
        "buy_currency": buy,
        "buy_exponent": 2,
        "order_type": kind,
    }


def approval(order_id: str, tenant: str, decision: str = "APPROVED") -> dict:
    return {
        "metadata": metadata("fx.order.approved", tenant_id=tenant),
        "account_id": f"acc-{RUN}-fx",
        "order_id": order_id,
        "approved_by": "dealer-7",
        "decision": decision,
        "reason": None,
    }


def oid(name: str) -> str:
    return f"{name}-{RUN}"


def pipeline(db, codec, catalog, pricing, group):
    """Builders of every agent and sink, each its own consumer group: a consumer is made (and
    joins its group) only when it is about to run, so no idle member ever stalls a rebalance."""

    def agent(make):
        def build():
            handler = make()
            runtime = AgentRuntime(
                db, handler, codec, catalog, batch_size=500, linger=0.05, group_id=f"{group}.{handler.name}"
            )
            return partial(run_agent, runtime)

        return build

    def sink(make):
        def build():
            s = make()
            return SinkRunner(db, s, codec, batch_size=500, linger=0.05, group_id=f"{group}.{s.name}").run

        return build

    return [
        agent(lambda: FeesHandler(pricing.fees)),
        agent(lambda: FxHandler(db.as_database_role("fx_agent"), codec, pricing.fx)),
        agent(lambda: BillingHandler(db.as_database_role("billing_agent"), pricing.billing)),
        agent(LedgerHandler),
        sink(FeesSink),
        sink(FxSink),
        sink(BillingSink),
        sink(LedgerSink),
    ]


def start(stack: ExitStack, builders) -> None:
    for build in builders:
        stack.enter_context(running(build()))


def count(conn, sql: str, *args) -> int:
    return int(conn.execute(sql, args).fetchone()[0])


def cached_rate_source(services, pair: str) -> bytes | None:
    client = redis.Redis.from_url(services.redis_url)
    try:
        return client.hget(f"ledgerstream:{services.environment}:fx:rate:{pair}", "quoted_at")
    finally:
        client.close()


def micros(at: datetime) -> bytes:
    return str(to_micros(at)).encode()


POSTED = "SELECT count(*) FROM journal_entries WHERE tenant_id LIKE %s AND reference_id ~ '^(fee|fx):'"


def snapshot(conn) -> tuple:
    like = f"%{RUN}%"
    return conn.execute(
        """SELECT (SELECT md5(string_agg(fee_id::text || total || currency, ',' ORDER BY fee_id)) FROM fees WHERE tenant_id LIKE %(l)s),
                  (SELECT count(*) FROM fee_lines l JOIN fees f USING (fee_id) WHERE f.tenant_id LIKE %(l)s),
                  (SELECT md5(string_agg(conversion_id::text || bought_units, ',' ORDER BY conversion_id)) FROM fx_conversions WHERE tenant_id LIKE %(l)s),
                  (SELECT md5(string_agg(order_id || status, ',' ORDER BY order_id)) FROM fx_orders WHERE order_id LIKE %(l)s),
                  (SELECT md5(string_agg(invoice_id::text || status || period, ',' ORDER BY invoice_id)) FROM invoices WHERE tenant_id LIKE %(l)s),
                  (SELECT md5(string_agg(line_item_id::text || amount, ',' ORDER BY line_item_id)) FROM invoice_line_items WHERE tenant_id LIKE %(l)s),
                  (SELECT count(*) FROM journal_entries WHERE tenant_id LIKE %(l)s),
                  (SELECT md5(string_agg(ledger_account || debits || ':' || credits, ',' ORDER BY ledger_account)) FROM balances WHERE ledger_account LIKE %(l)s)""",
        {"l": like},
    ).fetchone()


@pytest.fixture(scope="module")
def money(services, codec, catalog, pricing):
    with (
        private_database(services) as db,
        psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn,
        ExitStack() as stack,
    ):
        start(stack, pipeline(db, codec, catalog, pricing, f"money-{RUN}"))
        for tenant, currencies in ((T1, ("EUR", "USD", "GBP")), (VIP, ("EUR",))):
            for currency in currencies:  # an order holds its sold amount: these accounts may go that far
                open_accounts(db, [f"acc-{RUN}-fx"], currency, overdraft=10**9, tenant=tenant)
        producer = EventProducer(db, codec, catalog)
        # rates first, and wait until they are cached: an order is priced by the rate it can see
        producer.produce("fx.rate.updated.v1", rate("EUR/USD", *EURUSD, NOW - timedelta(seconds=5)))
        producer.produce(
            "fx.rate.updated.v1", rate("GBP/CHF", Decimal("1.12"), Decimal("1.13"), NOW - timedelta(hours=2))
        )
        producer.flush()
        wait_for(
            lambda: cached_rate_source(db, "EUR/USD") == micros(NOW - timedelta(seconds=5)),
            60,
            what="EUR/USD cached",
        )
        wait_for(
            lambda: (cached_rate_source(db, "GBP/CHF") or b"0") >= micros(NOW - timedelta(hours=2)),
            60,
            what="GBP/CHF cached",
        )

        for n, (tenant, units, currency, rail) in enumerate(TRANSFERS):
            producer.produce("payments.transaction.completed.v1", completed(n, tenant, units, currency, rail))
        for n, units in enumerate(CARD_LOADS):
            producer.produce("cards.transaction.received.v1", card(n, units))
        eth = transfer_confirmed(wei=25 * 10**18, account=f"acc-{RUN}-eth")
        eth["metadata"]["tenant_id"] = T1
        eth["transfer"].update(
            direction="OUTBOUND",
            tx_hash="0x" + RUN * 8,
            gas_used=21_000,
            base_fee_per_gas=Decimal(30 * GWEI),
            priority_fee_per_gas=Decimal(2 * GWEI),
        )
        producer.produce("crypto.wallet.transfer.confirmed.v1", eth)
        producer.produce("fx.order.approved.v1", approval(oid("early"), VIP))  # overtakes its order
        producer.produce("fx.order.requested.v1", order(oid("market"), T1, 100_000, "EUR", "USD"))
        producer.produce("fx.order.requested.v1", order(oid("otc"), T1, 10_000_000, "USD", "EUR", "OTC"))
        producer.produce("fx.order.requested.v1", order(oid("rejected"), T1, 9_000_000, "EUR", "USD", "OTC"))
        producer.produce("fx.order.requested.v1", order(oid("stale"), T1, 10_000, "GBP", "CHF"))
        open_accounts(db, [f"acc-{RUN}-broke"], "EUR", tenant=T1)  # open, and nothing in it
        broke = order(oid("broke"), T1, 5_000, "EUR", "USD")
        broke["account_id"] = f"acc-{RUN}-broke"
        producer.produce("fx.order.requested.v1", broke)
        producer.flush()
        wait_for(
            lambda: (
                count(
                    conn,
                    "SELECT count(*) FROM fx_orders WHERE order_id IN (%s, %s)",
                    oid("otc"),
                    oid("rejected"),
                )
                == 2
            ),
            60,
            what="OTC orders waiting for approval",
        )
        producer.produce("fx.order.approved.v1", approval(oid("otc"), T1))
        producer.produce("fx.order.approved.v1", approval(oid("rejected"), T1, "REJECTED"))
        producer.produce("fx.order.requested.v1", order(oid("early"), VIP, 30_000_000, "EUR", "USD", "OTC"))
        producer.flush()
        conversions, fees = (
            3,
            7 + 4 + 1 + 2,
        )  # transfers with a fee, card loads, the ETH transfer, T1's conversions
        wait_for(
            lambda: (
                count(conn, "SELECT count(*) FROM fx_conversions WHERE tenant_id LIKE %s", f"%{RUN}")
                == conversions
            ),
            90,
            what="conversions",
        )
        wait_for(
            lambda: count(conn, "SELECT count(*) FROM fees WHERE tenant_id LIKE %s", f"%{RUN}") == fees,
            90,
            what="fees",
        )
        lines = "SELECT count(*) FROM fee_lines l JOIN fees f USING (fee_id) WHERE f.tenant_id LIKE %s"
        wait_for(
            lambda: (
                count(
                    conn,
                    "SELECT count(*) FROM invoice_line_items WHERE tenant_id LIKE %s AND source_fee_id IS NOT NULL",
                    f"%{RUN}",
                )
                == count(conn, lines, f"%{RUN}")
            ),
            90,
            what="every fee line invoiced",
        )
        wait_for(
            lambda: count(conn, POSTED, f"%{RUN}") == fees + conversions,
            90,
            what="fees and conversions posted",
        )

        # the operator closes this month's invoice early: the next fee goes to the next one
        period = period_of(NOW)
        assert close_period(conn, period, db.environment, T1) == [T1]
        producer.produce("payments.transaction.completed.v1", completed(99, T1, 20_000, "EUR", "SEPA"))
        producer.flush()
        wait_for(
            lambda: (
                count(
                    conn,
                    "SELECT count(*) FROM invoice_line_items WHERE tenant_id = %s AND period = %s",
                    T1,
                    next_period(period),
                )
                == 4
            ),
            90,
            what="the late fee's three lines and the next period's plan fee",
        )
        wait_for(lambda: count(conn, POSTED, f"%{RUN}") == fees + conversions + 1, 90, what="late fee posted")
        wait_for(
            lambda: count(conn, "SELECT count(*) FROM fees WHERE tenant_id LIKE %s", f"%{RUN}") == fees + 1,
            90,
            what="the late fee stored by the fees sink (its own consumer, which may lag the others)",
        )
        yield db, conn, period


def test_fees_match_an_independent_calculation(money):
    _, conn, _ = money
    got = dict(
        conn.execute(
            "SELECT transaction_id, total FROM fees WHERE tenant_id LIKE %s AND transaction_id LIKE 'tx-%%'",
            (f"%{RUN}",),
        ).fetchall()
    )
    want = {f"tx-{RUN}-{n}": transfer_fee(*t) for n, t in enumerate(TRANSFERS) if transfer_fee(*t)}
    want[f"tx-{RUN}-99"] = transfer_fee(T1, 20_000, "EUR", "SEPA")
    assert got == want
    cards = dict(
        conn.execute(
            "SELECT transaction_id, total FROM fees WHERE transaction_id LIKE %s", (f"card-{RUN}-%",)
        ).fetchall()
    )
    assert cards == {f"card-{RUN}-{n}": card_fee(u) for n, u in enumerate(CARD_LOADS)}
    eth = dict(
        conn.execute("SELECT currency, total FROM fees WHERE account_id = %s", (f"acc-{RUN}-eth",)).fetchall()
    )
    assert eth == {"ETH": 25 * 10**18 * 5 // 10_000 + 21_000 * 32 * GWEI}
    versions = {
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT fee_config_version FROM fees WHERE tenant_id LIKE %s", (f"%{RUN}",)
        )
    }
    assert versions == {"default@v2", f"{VIP}@v1"}


def test_every_fee_breakdown_adds_up_to_its_total(money):
    _, conn, _ = money
    mismatched = conn.execute(
        """SELECT f.fee_id FROM fees f JOIN fee_lines l USING (fee_id) WHERE f.tenant_id LIKE %s
           GROUP BY f.fee_id, f.total HAVING sum(l.amount) <> f.total""",
        (f"%{RUN}",),
    ).fetchall()
    assert mismatched == []


def test_conversions_match_an_independent_calculation(money):
    _, conn, _ = money
    rows = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT order_id, bought_units, bought_currency, rate, markup_bps, bonus_bps FROM fx_conversions WHERE tenant_id LIKE %s",
            (f"%{RUN}",),
        ).fetchall()
    }
    bid, ask = Fraction(EURUSD[0]), Fraction(EURUSD[1])
    inverse = Fraction(math.floor(1 / ask * 10**18), 10**18)
    assert rows[oid("market")][:2] == (bought(100_000, bid, 50, 0), "USD")
    assert rows[oid("otc")][:2] == (bought(10_000_000, inverse, 50, 0), "EUR")
    assert rows[oid("early")][:2] == (bought(30_000_000, bid, 20, 5), "USD")  # the VIP tenant's pricing
    assert set(rows) == {oid("market"), oid("otc"), oid("early")}  # rejected and stale ones never execute
    statuses = dict(
        conn.execute(
            "SELECT order_id, status FROM fx_orders WHERE order_id LIKE %s", (f"%-{RUN}",)
        ).fetchall()
    )
    assert statuses[oid("rejected")] == "rejected"


def test_a_stale_rate_refuses_the_order_to_the_dead_letter_topic(services, money):
    reasons = [
        dict(m.headers())[ERROR_MESSAGE].decode() for m in read_all(services, "dlq.fx_agent.dead_lettered.v1")
    ]
    mine = [r for r in reasons if oid("stale") in r]
    assert len(mine) == 1
    assert "GBP/CHF" in mine[0] and "s old" in mine[0] and "the limit is 900s" in mine[0]


def test_an_order_the_account_cannot_pay_for_is_refused_and_holds_nothing(services, money):
    _, conn, _ = money

    def refusal() -> list[str]:
        messages = read_all(services, "dlq.fx_agent.dead_lettered.v1")
        return [r for m in messages if oid("broke") in (r := dict(m.headers())[ERROR_MESSAGE].decode())]

    [reason] = wait_for(refusal, 60, what="the unfunded order refused")
    assert "INSUFFICIENT_FUNDS: 5000 EUR needed, 0 available" in reason
    assert conn.execute(
        "SELECT count(*) FROM holds WHERE hold_id = %s", (f"fx:{oid('broke')}",)
    ).fetchone() == (0,)
    executed = conn.execute("SELECT hold_id, status FROM holds WHERE hold_id = %s", (f"fx:{oid('market')}",))
    assert executed.fetchone() == (f"fx:{oid('market')}", "COMPLETED")  # the conversion posted it


def test_an_executed_order_announces_the_balance_its_hold_lowered(money, codec):
    _, conn, _ = money
    hold = f"fx:{oid('market')}"

    def announced() -> list[dict]:
        values = conn.execute(
            "SELECT value FROM outbox WHERE topic = 'accounts.balance.updated.v1' AND key = %s",
            (f"acc-{RUN}-fx".encode(),),
        ).fetchall()
        decoded = [codec.decode(bytes(v), topic="accounts.balance.updated.v1") for (v,) in values]
        return [d for d in decoded if d["journal_entry_id"] == hold]

    [balance] = wait_for(announced, 60, what="the FX hold's balance announced")
    assert balance["metadata"]["tenant_id"] == T1 and balance["asset"] == "EUR"
    [ordered] = conn.execute(
        "SELECT order_event_id FROM fx_orders WHERE order_id = %s", (oid("market"),)
    ).fetchone()
    assert balance["metadata"]["correlation_id"] == f"c-{oid('market')}"  # the order's work
    assert balance["metadata"]["causation_id"] == str(ordered)  # the order placed the hold
    assert balance["reserved"]["units"] >= 100_000, "the order's hold is in what the account has reserved"
    total, reserved, available = (balance[k]["units"] for k in ("total", "reserved", "available"))
    assert available == total - reserved + 10**9  # the overdraft the account was opened with


def test_invoices_total_the_fees_per_currency_and_bill_the_plan_once_per_period(money):
    _, conn, period = money
    totals = {
        (r[0], r[1], r[2]): int(r[3])
        for r in conn.execute(
            "SELECT tenant_id, period, currency, total FROM invoice_totals WHERE tenant_id LIKE %s",
            (f"%{RUN}",),
        ).fetchall()
    }
    fees = {
        (r[0], r[1]): int(r[2])
        for r in conn.execute(
            """SELECT f.tenant_id, f.currency, sum(f.total) FROM fees f WHERE f.tenant_id LIKE %s
           AND f.transaction_id IS DISTINCT FROM %s GROUP BY 1, 2""",
            (f"%{RUN}", f"tx-{RUN}-99"),
        ).fetchall()
    }
    plans = {T1: 4_900, VIP: 99_900}
    want = {(t, period, c): total + (plans[t] if c == "EUR" else 0) for (t, c), total in fees.items()}
    want[(T1, next_period(period), "EUR")] = transfer_fee(T1, 20_000, "EUR", "SEPA") + 4_900
    assert totals == want
    subscriptions = conn.execute(
        "SELECT tenant_id, period, count(*) FROM invoice_line_items WHERE tenant_id LIKE %s AND fee_type LIKE 'subscription:%%' GROUP BY 1, 2",
        (f"%{RUN}",),
    ).fetchall()
    assert sorted(subscriptions) == sorted([(T1, period, 1), (VIP, period, 1), (T1, next_period(period), 1)])
    status = dict(conn.execute("SELECT period, status FROM invoices WHERE tenant_id = %s", (T1,)).fetchall())
    assert status == {period: "closed", next_period(period): "open"}


def test_the_gas_the_eth_transfer_paid_leaves_custody_and_its_network_fee_recovers_it(money):
    _, conn, _ = money
    gas = 21_000 * 32 * GWEI

    def both_sides() -> tuple | None:
        row = conn.execute(
            "SELECT debits, credits FROM balances WHERE ledger_account = %s",
            (f"network_fees:{T1}/ethereum:ETH",),
        ).fetchone()
        return row if row is not None and row[0] > 0 and row[1] > 0 else None

    assert wait_for(both_sides, 60, what="the gas and its recovery posted") == (gas, gas)
    custody = conn.execute(
        "SELECT credits - debits FROM balances WHERE ledger_account = %s", (f"custody:{T1}/ethereum:ETH",)
    ).fetchone()
    assert custody == (gas,), "the gas left the chain's custody account"


def test_fees_and_conversions_post_balanced_and_every_currency_sums_to_zero(money):
    _, conn, _ = money
    trial = conn.execute("SELECT currency, sum(debits - credits) FROM balances GROUP BY currency").fetchall()
    assert {c for c, _ in trial} >= {"EUR", "USD", "ETH"}
    assert all(total == 0 for _, total in trial)
    charged = conn.execute(
        """SELECT sum(e.amount) FROM entries e JOIN journal_entries j USING (journal_entry_id)
           WHERE j.tenant_id LIKE %s AND j.reference_id LIKE 'fee:%%' AND e.side = 'DEBIT' AND e.currency = 'EUR'""",
        (f"%{RUN}",),
    ).fetchone()[0]
    assert charged == count(
        conn, "SELECT sum(total) FROM fees WHERE tenant_id LIKE %s AND currency = 'EUR'", f"%{RUN}"
    )
    fx_legs = conn.execute(
        """SELECT e.ledger_account, e.side, e.amount FROM entries e JOIN journal_entries j USING (journal_entry_id)
           JOIN fx_conversions c ON j.reference_id = 'fx:' || c.conversion_id WHERE c.order_id = %s ORDER BY e.line_no""",
        (oid("market"),),
    ).fetchall()
    assert [(a.split(":")[0], s) for a, s, _ in fx_legs] == [
        ("customer", "DEBIT"),
        ("fx_position", "CREDIT"),
        ("fx_position", "DEBIT"),
        ("customer", "CREDIT"),
    ]


def test_replaying_every_input_topic_changes_no_row(services, codec, catalog, pricing, money):
    db, conn, _ = money
    before = snapshot(conn)
    replay = f"replay-{uuid.uuid4().hex[:6]}"
    consumed = [build()(idle_exit=3).consumed for build in pipeline(db, codec, catalog, pricing, replay)]
    assert all(n > 0 for n in consumed), consumed  # each agent and sink replayed something
    assert snapshot(conn) == before


def test_no_money_column_is_a_float_in_the_migrated_database(money):
    _, conn, _ = money
    floats = conn.execute(
        """SELECT table_name, column_name FROM information_schema.columns
           WHERE table_schema = 'public' AND data_type IN ('real', 'double precision')"""
    ).fetchall()
    assert floats == []
