"""The fx agent decides a batch of orders and approvals as it decides them one at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from ops.dev.bench_agent import scratch_redis
from streams.fx.agent import FxHandler
from streams.pricing import load_pricing
from tests.fixtures.database import private_database
from tests.fixtures.events import metadata
from tests.fixtures.ledger import open_accounts
from topics.codec import AvroCodec
from topics.events import Event
from topics.names import FX_ORDER_APPROVED_V1, FX_ORDER_REQUESTED_V1, FX_RATE_UPDATED_V1
from topics.schemas import SchemaStore
from topics.settings import Settings

ACCOUNTS = ("fx-a", "fx-b", "fx-c")
OTC = "fx-otc"


def _order(n: int, units: int, kind: str = "MARKET", account: str | None = None) -> dict[str, Any]:
    return {
        "metadata": metadata("fx.order.requested"),
        "account_id": account or ACCOUNTS[n % len(ACCOUNTS)],
        "order_id": f"order-{n}",
        "sell": {"units": units, "currency": "EUR", "exponent": 2},
        "buy_currency": "USD",
        "buy_exponent": 2,
        "order_type": kind,
    }


def _inputs() -> list[tuple[str, dict[str, Any]]]:
    quoted = datetime.now(UTC) - timedelta(seconds=5)
    rate = {
        "metadata": metadata("fx.rate.updated"),
        "pair": "EUR/USD",
        "base": "EUR",
        "quote": "USD",
        "bid": Decimal("1.0842"),
        "ask": Decimal("1.0846"),
        "rate_source": "test",
        "quoted_at": quoted,
    }
    inputs = [(FX_RATE_UPDATED_V1, rate)]
    inputs += [(FX_ORDER_REQUESTED_V1, _order(n, 1_000 + (n * 7919) % 40_000)) for n in range(60)]
    inputs.append((FX_ORDER_REQUESTED_V1, _order(60, 6_000_000, "OTC", OTC)))  # over the threshold: waits
    approval = {
        "metadata": metadata("fx.order.approved"),
        "account_id": OTC,
        "order_id": "order-60",
        "approved_by": "dealer-7",
        "decision": "APPROVED",
        "reason": None,
    }
    inputs.append((FX_ORDER_APPROVED_V1, approval))
    return inputs


def test_the_fx_agent_decides_a_batch_as_it_decides_one_event_at_a_time(
    services: Settings, store: SchemaStore
) -> None:
    codec = AvroCodec(store)
    events = []
    for offset, (topic, record) in enumerate(_inputs()):
        value = codec.encode(topic, record)
        events.append(Event(codec.decode(value, topic=topic), topic, 0, offset, None, value))
    pricing = load_pricing(services.pricing_file)
    outcomes = []
    for batches in ([events], [[event] for event in events]):
        with private_database(services) as db, scratch_redis(services.redis_url) as redis_url:
            open_accounts(db, ACCOUNTS, overdraft=150_000)  # 1,500.00 EUR each
            open_accounts(db, [OTC], overdraft=10_000_000)
            role = db.as_database_role("fx_agent").model_copy(update={"redis_url": redis_url})
            handler = FxHandler(role, codec, pricing.fx)
            refused, emitted = [], []
            try:
                for batch in batches:
                    result = handler.handle(batch)
                    refused += [(event.offset, reason) for event, reason in result.refused]
                    emitted += [output.record["metadata"]["event_id"] for output in result.outputs]
            finally:
                handler.close()
            with psycopg.connect(db.database_url.get_secret_value()) as conn:
                orders = conn.execute(
                    "SELECT order_id, status, sell_units, rate_pair, markup_bps FROM fx_orders ORDER BY order_id"
                ).fetchall()
                holds = conn.execute("SELECT hold_id, amount, status FROM holds ORDER BY hold_id").fetchall()
            outcomes.append((orders, holds, refused, sorted(emitted)))
    in_one_batch, one_at_a_time = outcomes
    assert in_one_batch == one_at_a_time
    orders, holds, refused, _ = in_one_batch
    assert sum(status == "executed" for _, status, *_ in orders) > 20
    assert len(refused) > 10 and all("INSUFFICIENT_FUNDS" in reason for _, reason in refused)
    assert ("order-60", "executed") in {(order_id, status) for order_id, status, *_ in orders}
    assert len(holds) == sum(status == "executed" for _, status, *_ in orders)
