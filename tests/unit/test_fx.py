"""FX pricing: sides, markups and bonuses, exponents, stale rates, OTC approvals."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest

from streams.fx.pricing import (
    FxError,
    Rate,
    StaleRate,
    TenantFx,
    check_fresh,
    convert,
    needs_approval,
)

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
EURUSD = Rate("EUR/USD", "EUR", "USD", Decimal("1.0800"), Decimal("1.0802"), "ecb", T0)
ETHEUR = Rate("ETH/EUR", "ETH", "EUR", Decimal("3000.12"), Decimal("3001.00"), "kraken", T0)


def expected(sold: int, sold_exp: int, bought_exp: int, market: Fraction, markup: int, bonus: int) -> int:
    """An independent calculation with Fractions, rounding the rate to 18 places down first."""
    applied = market * (10_000 - markup + bonus) / 10_000
    applied = Fraction(math.floor(applied * 10**18), 10**18)
    return math.floor(Fraction(sold) * 10**bought_exp / 10**sold_exp * applied)


def test_selling_the_base_uses_the_bid_less_the_markup():
    c = convert(
        sold_units=10_000,
        sold_currency="EUR",
        sold_exponent=2,
        bought_currency="USD",
        bought_exponent=2,
        rate=EURUSD,
        pricing=TenantFx(markup_bps=50),
    )
    assert c.market_rate == Decimal("1.08")
    assert c.rate == Decimal("1.074600000000000000")
    assert c.bought_units == 10_746  # 100.00 EUR -> 107.46 USD
    assert c.bought_units == expected(10_000, 2, 2, Fraction("1.08"), 50, 0)


def test_selling_the_quote_uses_one_over_the_ask():
    c = convert(
        sold_units=10_000,
        sold_currency="USD",
        sold_exponent=2,
        bought_currency="EUR",
        bought_exponent=2,
        rate=EURUSD,
        pricing=TenantFx(markup_bps=50),
    )
    market = Fraction(1) / Fraction("1.0802")
    assert c.bought_units == expected(10_000, 2, 2, Fraction(math.floor(market * 10**18), 10**18), 50, 0)
    assert c.bought_units == 9_211  # 100 USD -> 92.11 EUR, rounded down


def test_a_bonus_gives_back_part_of_the_markup():
    plain = convert(
        sold_units=1_000_000,
        sold_currency="EUR",
        sold_exponent=2,
        bought_currency="USD",
        bought_exponent=2,
        rate=EURUSD,
        pricing=TenantFx(markup_bps=20),
    )
    bonus = convert(
        sold_units=1_000_000,
        sold_currency="EUR",
        sold_exponent=2,
        bought_currency="USD",
        bought_exponent=2,
        rate=EURUSD,
        pricing=TenantFx(markup_bps=20, bonus_bps=5),
    )
    assert bonus.bought_units - plain.bought_units == 540  # 5 bps of 1,080,000 cents
    assert bonus.bonus_bps == 5 and bonus.markup_bps == 20


def test_exponents_differ_between_crypto_and_fiat():
    c = convert(
        sold_units=15 * 10**17,
        sold_currency="ETH",
        sold_exponent=18,
        bought_currency="EUR",
        bought_exponent=2,
        rate=ETHEUR,
        pricing=TenantFx(markup_bps=50),
    )
    assert c.bought_units == expected(15 * 10**17, 18, 2, Fraction("3000.12"), 50, 0) == 447_767
    back = convert(
        sold_units=447_767,
        sold_currency="EUR",
        sold_exponent=2,
        bought_currency="ETH",
        bought_exponent=18,
        rate=ETHEUR,
        pricing=TenantFx(),
    )
    assert back.bought_units == math.floor(
        Fraction(447_767, 100)
        * 10**18
        * Fraction(math.floor(Fraction(1) / Fraction("3001.00") * 10**18), 10**18)
    )
    assert back.bought_units > 10**18  # 1.49 ETH in wei


def test_mid_is_the_mean_of_bid_and_ask():
    assert EURUSD.mid == Decimal("1.0801")


def test_a_stale_rate_is_refused_with_its_age():
    check_fresh(EURUSD, T0 + timedelta(seconds=900), timedelta(seconds=900))  # exactly at the limit: fresh
    with pytest.raises(StaleRate, match=r"901s old .* the limit is 900s"):
        check_fresh(EURUSD, T0 + timedelta(seconds=901), timedelta(seconds=900))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"bid": Decimal("1.1"), "ask": Decimal("1.0")}, "bid 1.1 above ask"),
        ({"bid": Decimal("0"), "ask": Decimal("1.0")}, "positive"),
        ({"pair": "EUR/GBP"}, "does not match"),
    ],
)
def test_malformed_rates_are_refused(kwargs, error):
    base = {
        "pair": "EUR/USD",
        "base": "EUR",
        "quote": "USD",
        "bid": Decimal("1.08"),
        "ask": Decimal("1.09"),
        "source": "s",
        "quoted_at": T0,
        **kwargs,
    }
    with pytest.raises(FxError, match=error):
        Rate(**base)


def test_conversions_that_cannot_be_priced_are_refused():
    with pytest.raises(FxError, match="cannot price"):
        convert(
            sold_units=100,
            sold_currency="GBP",
            sold_exponent=2,
            bought_currency="USD",
            bought_exponent=2,
            rate=EURUSD,
            pricing=TenantFx(),
        )
    with pytest.raises(FxError, match="less than one unit"):
        convert(
            sold_units=1,
            sold_currency="EUR",
            sold_exponent=2,
            bought_currency="ETH",
            bought_exponent=0,
            rate=Rate("ETH/EUR", "ETH", "EUR", Decimal(3000), Decimal(3001), "s", T0),
            pricing=TenantFx(),
        )
    with pytest.raises(FxError, match="positive integer"):
        convert(
            sold_units=0,
            sold_currency="EUR",
            sold_exponent=2,
            bought_currency="USD",
            bought_exponent=2,
            rate=EURUSD,
            pricing=TenantFx(),
        )


def test_otc_orders_above_the_threshold_wait_for_approval():
    pricing = TenantFx(otc_thresholds={"EUR": 5_000_000})
    assert not needs_approval("MARKET", 10**12, "EUR", pricing)
    assert not needs_approval("OTC", 5_000_000, "EUR", pricing)  # at the threshold: no
    assert needs_approval("OTC", 5_000_001, "EUR", pricing)
    assert needs_approval("OTC", 1, "JPY", pricing)  # no threshold for the currency: always waits


def test_tenant_pricing_refuses_floats():
    with pytest.raises(ValueError, match="integer"):
        TenantFx(otc_thresholds={"EUR": 5e6})  # type: ignore[dict-item]
