"""Fee methods, bounds, tier boundaries, rounding, zero and huge amounts, gas, schedules."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from streams.fees.calc import (
    Chargeable,
    FeeError,
    Gas,
    assess,
    effective_gas_price,
    network_fee,
    percentage,
    rule_fee,
)
from streams.fees.schedule import Rule, Schedule, ScheduleError
from streams.pricing import load_pricing
from topics.settings import REPO_ROOT

BOOK = load_pricing(REPO_ROOT / "streams" / "pricing.toml").fees
WEI = 10**18


def schedule(*rules: Rule, rounding: str = "HALF_EVEN") -> Schedule:
    return Schedule(
        tenant="t", version=1, effective_from=datetime(2026, 1, 1, tzinfo=UTC), rounding=rounding, rule=rules
    )  # type: ignore[arg-type]


def rule(**kw) -> Rule:
    base = {"kind": "transfer", "tier": "PLATFORM", "category": "c", "method": "PERCENTAGE"}
    return Rule.model_validate({**base, **kw})


TIERED = rule(
    method="TIERED",
    currency="EUR",
    bands=[{"up_to": 10_000, "bps": "150"}, {"up_to": 100_000, "bps": "100"}, {"bps": "50"}],
)


@pytest.mark.parametrize(
    ("units", "bps", "half_even", "half_up"),
    [
        (900, "50", 4, 5),  # 4.5: banker's goes to the even 4, half-up to 5
        (1_100, "50", 6, 6),  # 5.5: both to 6
        (10_100, "25", 25, 25),  # 25.25
        (10_300, "25", 26, 26),  # 25.75
        (1, "2.5", 0, 0),  # 0.00025
        (20_000, "2.5", 5, 5),  # fractional basis points, exact
    ],
)
def test_percentage_rounds_explicitly_at_the_currency_exponent(units, bps, half_even, half_up):
    assert percentage(units, Decimal(bps), "HALF_EVEN") == half_even
    assert percentage(units, Decimal(bps), "HALF_UP") == half_up


def test_flat_fee_ignores_the_amount():
    flat = rule(method="FLAT", currency="EUR", flat=30)
    assert rule_fee(flat, 1, "HALF_EVEN") == rule_fee(flat, 10**12, "HALF_EVEN") == 30


def test_min_lifts_and_max_caps_a_percentage_fee():
    bounded = rule(currency="EUR", bps="20", min=25, max=500)
    assert rule_fee(bounded, 1_000, "HALF_EVEN") == 25  # 2 -> min
    assert rule_fee(bounded, 100_000, "HALF_EVEN") == 200  # inside the bounds
    assert rule_fee(bounded, 250_000, "HALF_EVEN") == 500  # 500 exactly
    assert rule_fee(bounded, 10_000_000, "HALF_EVEN") == 500  # 20,000 -> max


@pytest.mark.parametrize(
    ("units", "fee"),
    [(1, 0), (10_000, 150), (10_001, 100), (100_000, 1_000), (100_001, 500), (10**9, 5_000_000)],
)
def test_tiered_band_bounds_are_inclusive_and_set_the_rate_for_the_whole_amount(units, fee):
    assert rule_fee(TIERED, units, "HALF_EVEN") == fee


def test_zero_amount_is_not_charged_even_with_a_minimum_or_a_flat_fee():
    s = schedule(rule(currency="EUR", bps="20", min=25), rule(method="FLAT", currency="EUR", flat=10))
    assert assess(Chargeable("transfer", 0, "EUR", 2), s) == []


def test_a_negative_signed_amount_is_charged_on_its_size():
    s = schedule(rule(currency="EUR", bps="100"))
    assert assess(Chargeable("transfer", -10_000, "EUR", 2), s)[0].total == 100


def test_the_breakdown_always_adds_up_to_the_total():
    rng = random.Random(7)
    s = BOOK.for_event("tenant-1", datetime(2026, 8, 1, tzinfo=UTC))
    for _ in range(2_000):
        units = rng.randrange(1, 10**9)
        for a in assess(
            Chargeable("transfer", units, "EUR", 2, rail=rng.choice(["SEPA", "SEPA_INSTANT"])), s
        ):
            assert a.total == sum(line.units for line in a.lines)
            assert all(line.units > 0 for line in a.lines)


def test_crypto_amounts_beyond_2_to_the_64_wei_are_exact():
    s = schedule(rule(kind="crypto_transfer", tier="COMPLIANCE", bps="5"))
    units = 2**255 + 12_345  # beyond any 64-bit integer
    [a] = assess(Chargeable("crypto_transfer", units, "ETH", 18), s)
    exact = Fraction(units * 5, 10_000)
    assert a.total == round(exact)  # Python's round is half-even on Fractions, exactly
    assert a.total > 2**64
    three_hundred_eth = 300 * WEI
    [b] = assess(Chargeable("crypto_transfer", three_hundred_eth, "ETH", 18), s)
    assert b.total == 150_000_000_000_000_000  # 0.15 ETH, to the wei


def test_network_fee_is_gas_used_times_base_plus_priority_fee_in_wei():
    gwei = 10**9
    gas = Gas(gas_used=21_000, base_fee_per_gas=30 * gwei, priority_fee_per_gas=2 * gwei)
    assert network_fee(gas) == 21_000 * 32 * gwei == 672_000_000_000_000
    huge = Gas(gas_used=30_000_000, base_fee_per_gas=2**200, priority_fee_per_gas=1)
    assert network_fee(huge) == 30_000_000 * (2**200 + 1)
    with pytest.raises(FeeError):
        network_fee(Gas(-1, 1, 1))


def test_effective_gas_price_follows_eip_1559():
    assert effective_gas_price(base_fee=30, max_priority_fee=2, max_fee=100) == 32
    assert effective_gas_price(base_fee=30, max_priority_fee=2, max_fee=31) == 31  # tip squeezed by the cap
    assert effective_gas_price(base_fee=30, max_priority_fee=0, max_fee=60) == 30
    with pytest.raises(FeeError, match="below the base fee"):
        effective_gas_price(base_fee=30, max_priority_fee=2, max_fee=29)


def test_an_outbound_token_transfer_pays_gas_in_the_native_asset_as_a_second_fee():
    s = schedule(rule(kind="crypto_transfer", tier="COMPLIANCE", bps="5"))
    gas = Gas(65_000, 20 * 10**9, 10**9)
    usdc = Chargeable("crypto_transfer", 1_000_000_000, "USDC", 6, chain="ethereum", gas=gas, outbound=True)
    fees = {a.currency: a for a in assess(usdc, s, native=("ETH", 18))}
    assert fees["USDC"].total == 500_000 and fees["USDC"].lines[0].tier == "COMPLIANCE"
    assert fees["ETH"].total == 65_000 * 21 * 10**9 and fees["ETH"].lines[0].method == "GAS"
    inbound = Chargeable(
        "crypto_transfer", 1_000_000_000, "USDC", 6, chain="ethereum", gas=gas, outbound=False
    )
    assert [a.currency for a in assess(inbound, s, native=("ETH", 18))] == ["USDC"]  # the sender paid the gas
    with pytest.raises(FeeError, match="no native asset"):
        assess(usdc, s, native=None)


def test_premium_tier_applies_only_on_its_rails():
    s = BOOK.for_event("tenant-1", datetime(2026, 8, 1, tzinfo=UTC))
    tiers = lambda rail: {  # noqa: E731
        line.tier for a in assess(Chargeable("transfer", 10_000, "EUR", 2, rail=rail), s) for line in a.lines
    }
    assert "PREMIUM" in tiers("SEPA_INSTANT")
    assert "PREMIUM" not in tiers("SEPA")


def test_schedules_are_effective_dated_per_tenant_with_a_default():
    june, july = datetime(2026, 6, 30, 23, 59, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)
    assert BOOK.for_event("tenant-1", june).label == "default@v1"
    assert BOOK.for_event("tenant-1", july).label == "default@v2"
    assert BOOK.for_event("tenant-vip", july).label == "tenant-vip@v1"
    with pytest.raises(ScheduleError, match="no fee schedule"):
        BOOK.for_event("tenant-1", datetime(2025, 12, 31, tzinfo=UTC))


def test_each_assessment_records_the_schedule_version_used():
    s = BOOK.for_event("tenant-1", datetime(2026, 8, 1, tzinfo=UTC))
    [a] = assess(Chargeable("transfer", 10_000, "EUR", 2, rail="SEPA"), s)
    assert a.schedule == "default@v2"
    assert [(line.tier, line.units) for line in a.lines] == [
        ("PLATFORM", 25),
        ("PROVIDER", 10),
        ("COMPLIANCE", 2),
    ]


@pytest.mark.parametrize(
    ("fragment", "error"),
    [
        ("bps = 2.5", "float"),
        ('bps = "20"\nflat = 10.0', "exact integer"),
        ('bps = "20"\nmin = 500\nmax = 25', "exceeds max"),
        ('bps = "20"\nbogus = 1', "bogus"),
    ],
)
def test_a_bad_schedule_is_refused_when_loaded(tmp_path: Path, fragment: str, error: str):
    path = tmp_path / "pricing.toml"
    path.write_text(
        '[[fees.schedule]]\ntenant = "default"\nversion = 1\neffective_from = 2026-01-01T00:00:00Z\n'
        '[[fees.schedule.rule]]\nkind = "transfer"\ntier = "PLATFORM"\ncategory = "c"\n'
        f'method = "PERCENTAGE"\ncurrency = "EUR"\n{fragment}\n'
    )
    with pytest.raises(ScheduleError, match=error):
        load_pricing(path)


def test_rules_with_amounts_must_name_their_currency():
    with pytest.raises(ValueError, match="name the currency"):
        rule(method="FLAT", flat=10)
