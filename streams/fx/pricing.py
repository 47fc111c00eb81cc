"""FX maths and pricing as plain functions over Decimals.

Conventions (what every conversion here means):
- A rate for `BASE/QUOTE` is QUOTE units per one BASE unit; `bid` is what the
  market pays for one BASE, `ask` what it charges for one; `mid` is their mean
  and is indicative only: conversions execute on the side the platform can trade.
- Selling BASE for QUOTE uses the bid: bought = sold x bid. Selling QUOTE for
  BASE uses the ask: bought = sold / ask.
- The tenant's markup (basis points) lowers what the customer gets and its bonus
  raises it: applied = market x (10,000 - markup + bonus) / 10,000.
- The applied rate is recorded to 18 decimal places (rounded down) and the
  bought amount is computed from that recorded rate, so anyone can recompute it:
  bought units = floor(sold units / 10^sold_exp x applied x 10^bought_exp). Both
  roundings go down: the platform never pays out a fraction it does not hold.
- A rate older than the configured age at execution time is refused.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from topics.errors import LedgerstreamError
from topics.money import ExactInt

RATE_PLACES = Decimal(1).scaleb(-18)
BPS = 10_000
_EXACT = decimal.Context(prec=200, traps=[decimal.InvalidOperation, decimal.DivisionByZero])


class FxError(LedgerstreamError, ValueError):
    """A conversion that cannot be priced (no rate, stale rate, bad pair, bad pricing)."""


class StaleRate(FxError):
    """The rate is older than the configured maximum age."""


@dataclass(frozen=True)
class Rate:
    pair: str
    base: str
    quote: str
    bid: Decimal
    ask: Decimal
    source: str
    quoted_at: datetime

    def __post_init__(self) -> None:
        if self.pair != f"{self.base}/{self.quote}":
            raise FxError(f"pair {self.pair!r} does not match base {self.base} and quote {self.quote}")
        for side in (self.bid, self.ask):
            if not isinstance(side, Decimal) or not side.is_finite() or side <= 0:
                raise FxError(f"{self.pair}: rates must be positive exact decimals, got {side!r}")
        if self.bid > self.ask:
            raise FxError(f"{self.pair}: bid {self.bid} above ask {self.ask}")

    @property
    def mid(self) -> Decimal:
        return _EXACT.divide(self.bid + self.ask, Decimal(2))


@dataclass(frozen=True)
class Conversion:
    sold_units: int
    sold_currency: str
    sold_exponent: int
    bought_units: int
    bought_currency: str
    bought_exponent: int
    market_rate: Decimal
    """Bought currency per sold currency before markup and bonus (18 places, down)."""
    rate: Decimal
    """Bought currency per sold currency as applied (18 places, down)."""
    markup_bps: int
    bonus_bps: int
    pair: str
    rate_source: str
    rate_quoted_at: datetime


class TenantFx(BaseModel):
    """A tenant's FX pricing; OTC orders above the threshold of their sold currency wait for approval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    markup_bps: int = Field(0, ge=0, lt=BPS)
    bonus_bps: int = Field(0, ge=0, lt=BPS)
    otc_thresholds: dict[str, ExactInt] = Field(default_factory=dict)


class FxBook(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_rate_age_seconds: int = Field(900, gt=0)
    rate_ttl_seconds: int = Field(86_400, gt=0)
    tenants: dict[str, TenantFx] = Field(default_factory=lambda: {"default": TenantFx()})

    def tenant(self, tenant_id: str) -> TenantFx:
        return self.tenants.get(tenant_id) or self.tenants.get("default") or TenantFx()


def pair_for(sell: str, buy: str) -> tuple[str, str]:
    """The two pairs that can price selling `sell` for `buy`: (sell/buy, buy/sell)."""
    if sell == buy:
        raise FxError(f"nothing to convert: {sell} to {buy}")
    return f"{sell}/{buy}", f"{buy}/{sell}"


def check_fresh(rate: Rate, at: datetime, max_age: timedelta) -> None:
    """Refuse a rate older than `max_age` at `at`."""
    age = at - rate.quoted_at
    if age > max_age:
        raise StaleRate(
            f"rate {rate.pair} from {rate.source} quoted at {rate.quoted_at.isoformat()} is "
            f"{int(age.total_seconds())}s old at {at.isoformat()}; "
            f"the limit is {int(max_age.total_seconds())}s"
        )


def market_rate(rate: Rate, sell: str, buy: str) -> Decimal:
    """Bought per sold at market, before markup: bid when selling the base, 1/ask when buying it."""
    if (sell, buy) == (rate.base, rate.quote):
        return rate.bid
    if (sell, buy) == (rate.quote, rate.base):
        return _EXACT.divide(Decimal(1), rate.ask)
    raise FxError(f"rate {rate.pair} cannot price {sell} -> {buy}")


def applied_rate(market: Decimal, markup_bps: int, bonus_bps: int) -> Decimal:
    factor = BPS - markup_bps + bonus_bps
    if factor <= 0:
        raise FxError(f"markup {markup_bps} bps and bonus {bonus_bps} bps leave no rate")
    return _EXACT.divide(_EXACT.multiply(market, Decimal(factor)), Decimal(BPS))


def convert(
    *,
    sold_units: int,
    sold_currency: str,
    sold_exponent: int,
    bought_currency: str,
    bought_exponent: int,
    rate: Rate,
    pricing: TenantFx,
) -> Conversion:
    """Convert `sold_units` at `rate` with the tenant's markup and bonus (see the module's conventions)."""
    if type(sold_units) is not int or sold_units <= 0:
        raise FxError(f"sold amount {sold_units!r} must be a positive integer of minor units")
    market = market_rate(rate, sold_currency, bought_currency)
    applied = applied_rate(market, pricing.markup_bps, pricing.bonus_bps).quantize(
        RATE_PLACES, rounding=decimal.ROUND_DOWN, context=_EXACT
    )
    if applied <= 0:
        raise FxError(f"rate {rate.pair} rounds to zero at 18 places")
    bought = _EXACT.multiply(Decimal(sold_units).scaleb(bought_exponent - sold_exponent, _EXACT), applied)
    bought_units = int(bought.to_integral_value(rounding=decimal.ROUND_DOWN, context=_EXACT))
    if bought_units <= 0:
        raise FxError(
            f"{sold_units} units of {sold_currency} buy less than one unit of {bought_currency} at {applied}"
        )
    return Conversion(
        sold_units=sold_units,
        sold_currency=sold_currency,
        sold_exponent=sold_exponent,
        bought_units=bought_units,
        bought_currency=bought_currency,
        bought_exponent=bought_exponent,
        market_rate=market.quantize(RATE_PLACES, rounding=decimal.ROUND_DOWN, context=_EXACT),
        rate=applied,
        markup_bps=pricing.markup_bps,
        bonus_bps=pricing.bonus_bps,
        pair=rate.pair,
        rate_source=rate.source,
        rate_quoted_at=rate.quoted_at,
    )


def needs_approval(order_type: str, sold_units: int, sold_currency: str, pricing: TenantFx) -> bool:
    """An OTC order waits for approval above its tenant's threshold for the sold currency;
    a currency with no threshold always waits (fail safe). Market orders never wait."""
    if order_type != "OTC":
        return False
    threshold = pricing.otc_thresholds.get(sold_currency)
    return threshold is None or sold_units > threshold
