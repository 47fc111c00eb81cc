"""The FX agent: rate updates into the Redis cache; orders (and OTC approvals) into conversions.

Inputs: `fx.rate.updated.v1` (cached, newer quotes only), `fx.order.requested.v1`
and `fx.order.approved.v1`. Orders live in PostgreSQL (`fx_orders`, locked per
batch): an OTC order above its tenant's threshold waits there for its approval,
and an approval that overtakes its order waits there for the order. An executed
order keeps the rate, markup and bonus it used, so a redelivered order or
approval re-emits the identical conversion (deterministic ids) and a replay
never reprices. A missing or stale rate refuses the order (to the dead-letter
topic with the reason) and records nothing, so it can be redriven. So does an order
whose sold amount does not fit the account's available balance (INSUFFICIENT_FUNDS):
an executed order holds the sold amount until its conversion posts, and announces the
account's balance with that hold (`accounts.balance.updated.v1`, through the outbox in the
batch's transaction).

The rate must have been quoted no more than `max_rate_age_seconds` before the
execution time (the order's time, or the approval's when it waited) and no more
than `FUTURE_SKEW` after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import redis

from streams.base import BatchHandler, Output, Result
from streams.fx.pricing import (
    Conversion,
    FxBook,
    FxError,
    Rate,
    StaleRate,
    TenantFx,
    check_fresh,
    convert,
    needs_approval,
    pair_for,
)
from streams.fx.rates import RateCache
from streams.fx.repository import ORDER_COLUMNS, lock_orders, save_orders
from topics.balances import BalanceAnnouncer
from topics.catalog import load_catalog
from topics.codec import AvroCodec
from topics.currencies import CurrencyRegistry
from topics.database import Database
from topics.events import Event, derived_event_id, new_metadata
from topics.holds import AccountKey, Reservations, Spend
from topics.journals import fx_hold_id
from topics.money import InexactValue, money_parts, money_record
from topics.names import (
    ACCOUNTS_BALANCE_UPDATED_V1,
    FX_CONVERSION_EXECUTED_V1,
    FX_ORDER_APPROVED_V1,
    FX_ORDER_REQUESTED_V1,
    FX_RATE_UPDATED_V1,
)
from topics.settings import Settings

RATES = FX_RATE_UPDATED_V1
ORDERS = FX_ORDER_REQUESTED_V1
APPROVALS = FX_ORDER_APPROVED_V1
EXECUTED = FX_CONVERSION_EXECUTED_V1
AGENT = "fx_agent"
FUTURE_SKEW = timedelta(seconds=60)

EMPTY_ORDER: dict[str, Any] = dict.fromkeys(ORDER_COLUMNS[1:])


def rate_from_record(record: dict[str, Any]) -> Rate:
    return Rate(
        pair=record["pair"],
        base=record["base"],
        quote=record["quote"],
        bid=record["bid"],
        ask=record["ask"],
        source=record["rate_source"],
        quoted_at=record["quoted_at"],
    )


def conversion_of(row: dict[str, Any], rate: Rate) -> Conversion:
    """Recompute an order's conversion from its recorded inputs (pure, so identical every time)."""
    return convert(
        sold_units=int(row["sell_units"]),
        sold_currency=row["sell_currency"],
        sold_exponent=row["sell_exponent"],
        bought_currency=row["buy_currency"],
        bought_exponent=row["buy_exponent"],
        rate=rate,
        pricing=TenantFx(markup_bps=row["markup_bps"], bonus_bps=row["bonus_bps"]),
    )


def conversion_record(row: dict[str, Any], conversion: Conversion) -> dict[str, Any]:
    order_id = row["order_id"]
    metadata = new_metadata(
        "fx.conversion.executed",
        tenant_id=row["tenant_id"],
        environment=row["environment"],
        source="streams.fx",
        correlation_id=row["correlation_id"],
        causation_id=str(row["order_event_id"]),
        event_id=derived_event_id(order_id, AGENT, "executed"),
        occurred_at=row["executed_at"],
    )
    return {
        "metadata": metadata,
        "account_id": row["account_id"],
        "conversion_id": conversion_id(order_id),
        "order_id": order_id,
        "pair": conversion.pair,
        "rate": conversion.rate,
        "market_rate": conversion.market_rate,
        "markup_bps": conversion.markup_bps,
        "bonus_bps": conversion.bonus_bps,
        "sold": money_record(conversion.sold_units, conversion.sold_currency, conversion.sold_exponent),
        "bought": money_record(
            conversion.bought_units, conversion.bought_currency, conversion.bought_exponent
        ),
        "rate_source": conversion.rate_source,
        "rate_quoted_at": conversion.rate_quoted_at,
    }


@dataclass
class _Batch:
    conn: psycopg.Connection[dict[str, Any]]
    rows: dict[str, dict[str, Any]]
    result: Result
    reservations: Reservations
    saved: dict[str, None] = field(default_factory=dict)
    """Orders whose row changed, in the order they first did: written once, at the batch's end."""
    rates: dict[tuple[str, str], Rate] = field(default_factory=dict)
    """The rates this batch read from the cache."""
    holds: dict[str, str | None] = field(default_factory=dict)
    """Holds placed in this batch, each with the event that placed it: their balances are
    announced once, before it commits."""


def _spenders(orders: list[Event], rows: dict[str, dict[str, Any]]) -> Iterator[AccountKey]:
    """The accounts these orders and approvals may sell from (an unreadable one is left out: its
    event is refused, or its account locked when it is reserved from)."""
    for event in orders:
        r = event.record
        if event.topic == ORDERS:
            try:
                _, currency, _ = money_parts(r["sell"])
            except (InexactValue, KeyError, TypeError):
                continue
            yield (str(r["metadata"]["tenant_id"]), str(r["account_id"]), currency)
            continue
        row = rows.get(str(r["order_id"]))
        if row is not None and row["account_id"] is not None and row["sell_currency"] is not None:
            yield (str(row["tenant_id"]), str(row["account_id"]), str(row["sell_currency"]))


def conversion_id(order_id: str) -> str:
    """The id of the conversion an order's execution emits (derived: the same on every replay)."""
    return derived_event_id(order_id, AGENT)


class FxHandler(BatchHandler):
    """Args:
    settings: PostgreSQL and Redis connections, and the environment.
    book: FX pricing (markups, bonuses, OTC thresholds, rate age and TTL).
    """

    name = AGENT
    topics = (RATES, ORDERS, APPROVALS)
    outputs = (EXECUTED,)
    outbox_outputs = (ACCOUNTS_BALANCE_UPDATED_V1,)

    def __init__(self, settings: Settings, codec: AvroCodec, book: FxBook) -> None:
        self.settings = settings
        self.book = book
        self.balances = BalanceAnnouncer(codec, load_catalog(), settings.environment, "streams.fx", AGENT)
        self.max_age = timedelta(seconds=book.max_rate_age_seconds)
        self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        self.cache = RateCache(self.redis, settings.environment, book.rate_ttl_seconds)
        self.db = Database(settings, dict_rows=True)

    def handle(self, events: list[Event]) -> Result:
        result = Result()
        rates: list[Rate] = []
        for event in (e for e in events if e.topic == RATES):
            try:
                rates.append(rate_from_record(event.record))
            except FxError as e:
                result.refused.append((event, f"bad rate: {e}"))
        if rates:
            self.cache.put_many(rates)
        orders = [e for e in events if e.topic in (ORDERS, APPROVALS)]
        if not orders:
            return result
        conn = self.db.connection()
        try:
            with conn.transaction():
                ids = sorted({str(e.record["order_id"]) for e in orders})
                rows = lock_orders(conn, ids)
                with Reservations(conn, CurrencyRegistry.load(conn)) as reservations:  # placed at the end
                    reservations.lock(_spenders(orders, rows))
                    batch = _Batch(conn, rows, result, reservations)
                    for event in orders:
                        try:
                            if event.topic == ORDERS:
                                self._order(batch, event)
                            else:
                                self._approval(batch, event)
                        except (FxError, InexactValue, KeyError, TypeError) as e:
                            result.refused.append((event, f"order {event.record.get('order_id')}: {e}"))
                save_orders(conn, [batch.rows[order_id] for order_id in batch.saved])
                # the holds lower what their accounts have available: announced in this transaction
                self.balances.holds_changed(conn, batch.holds)
        except psycopg.Error:
            self.db.discard()
            raise
        return result

    def _order(self, batch: _Batch, event: Event) -> None:
        r, meta = event.record, event.record["metadata"]
        order_id = str(r["order_id"])
        row = batch.rows.get(order_id)
        if row is not None and row["order_event_id"] is not None:
            self._redelivered(batch, row)
            return
        units, currency, exponent = money_parts(r["sell"])
        pair_for(currency, r["buy_currency"])  # refuses a same-currency order
        fresh = {
            **EMPTY_ORDER,
            **(row or {}),
            "order_id": order_id,
            "account_id": r["account_id"],
            "tenant_id": meta["tenant_id"],
            "environment": meta["environment"],
            "order_type": r["order_type"],
            "sell_units": units,
            "sell_currency": currency,
            "sell_exponent": exponent,
            "buy_currency": r["buy_currency"],
            "buy_exponent": r["buy_exponent"],
            "correlation_id": meta["correlation_id"],
            "ordered_at": meta["occurred_at"],
            "order_event_id": str(meta["event_id"]),
        }
        if units <= 0:
            raise FxError(f"sell amount {units} must be positive")
        pricing = self.book.tenant(meta["tenant_id"])
        if row is not None and row["status"] == "awaiting_order":  # its approval came first
            if row["decision"] == "REJECTED":
                self._save(batch, {**fresh, "status": "rejected"})
            else:
                at = max(meta["occurred_at"], row["executed_at"] or meta["occurred_at"])
                self._execute(batch, fresh, at, str(meta["event_id"]))
            return
        if needs_approval(r["order_type"], units, currency, pricing):
            self._save(batch, {**fresh, "status": "awaiting_approval"})
            return
        self._execute(batch, fresh, meta["occurred_at"], str(meta["event_id"]))

    def _approval(self, batch: _Batch, event: Event) -> None:
        r, meta = event.record, event.record["metadata"]
        order_id = str(r["order_id"])
        row = batch.rows.get(order_id)
        if row is not None and row["status"] in ("executed", "rejected"):
            self._redelivered(batch, row)
            return
        decided = {
            "decision": r["decision"],
            "decided_by": r["approved_by"],
            "approval_event_id": str(meta["event_id"]),
        }
        if row is None or row["status"] == "awaiting_order":
            # the approval overtook its order: keep the decision (and its time) until the order arrives
            self._save(
                batch,
                {
                    **EMPTY_ORDER,
                    **(row or {}),
                    "order_id": order_id,
                    "tenant_id": meta["tenant_id"],
                    "environment": meta["environment"],
                    "status": "awaiting_order",
                    **decided,
                    "executed_at": meta["occurred_at"],
                },
            )
            return
        if r["decision"] == "REJECTED":
            self._save(batch, {**row, **decided, "status": "rejected"})
            return
        self._execute(batch, {**row, **decided}, meta["occurred_at"], str(meta["event_id"]))

    def _execute(self, batch: _Batch, row: dict[str, Any], at: datetime, cause: str) -> None:
        """Execute the order at `at` (`cause`: the event, order or approval, that lets it run)."""
        rate = self._rate(batch, row["sell_currency"], row["buy_currency"])
        check_fresh(rate, at, self.max_age)
        if rate.quoted_at - at > FUTURE_SKEW:
            raise StaleRate(
                f"rate {rate.pair} quoted at {rate.quoted_at.isoformat()} is after the execution time "
                f"{at.isoformat()}: the order cannot have seen it"
            )
        refusal = batch.reservations.reserve(
            Spend(
                fx_hold_id(row["order_id"]),
                row["tenant_id"],
                row["account_id"],
                row["sell_currency"],
                row["sell_exponent"],
                int(row["sell_units"]),
                f"fx order {row['order_id']}",
                correlation_id=row["correlation_id"],
            ),
        )
        if refusal is not None:
            raise FxError(refusal)
        batch.holds[fx_hold_id(row["order_id"])] = cause
        pricing = self.book.tenant(row["tenant_id"])
        executed = {
            **row,
            "status": "executed",
            "executed_at": at,
            "rate_pair": rate.pair,
            "rate_bid": rate.bid,
            "rate_ask": rate.ask,
            "rate_source": rate.source,
            "rate_quoted_at": rate.quoted_at,
            "markup_bps": pricing.markup_bps,
            "bonus_bps": pricing.bonus_bps,
        }
        conversion = conversion_of(executed, rate)
        self._save(batch, executed)
        batch.result.outputs.append(Output(EXECUTED, conversion_record(executed, conversion)))

    def _redelivered(self, batch: _Batch, row: dict[str, Any]) -> None:
        """An order or approval seen before: re-emit its conversion if it executed, else nothing."""
        if row["status"] == "executed":
            rate = self._stored_rate(row)
            batch.result.outputs.append(Output(EXECUTED, conversion_record(row, conversion_of(row, rate))))

    @staticmethod
    def _stored_rate(row: dict[str, Any]) -> Rate:
        base, quote = row["rate_pair"].split("/")
        return Rate(
            row["rate_pair"],
            base,
            quote,
            Decimal(row["rate_bid"]),
            Decimal(row["rate_ask"]),
            row["rate_source"],
            row["rate_quoted_at"],
        )

    def _rate(self, batch: _Batch, sell: str, buy: str) -> Rate:
        if (sell, buy) not in batch.rates:
            batch.rates[(sell, buy)] = self._cached_rate(sell, buy)
        return batch.rates[(sell, buy)]

    def _cached_rate(self, sell: str, buy: str) -> Rate:
        for pair in pair_for(sell, buy):
            rate = self.cache.get(pair)
            if rate is not None:
                return rate
        raise FxError(
            f"no rate cached for {sell}/{buy} or {buy}/{sell} (none received, or older than the TTL)"
        )

    def _save(self, batch: _Batch, row: dict[str, Any]) -> None:
        batch.rows[row["order_id"]] = row
        batch.saved[row["order_id"]] = None

    def close(self) -> None:
        self.db.close()
        self.redis.close()
