"""Fee arithmetic: plain functions over integers and Decimals.

Rounding is explicit: a percentage or tiered fee is computed exactly as a
Decimal of minor (or base) units, then rounded to a whole unit at the
currency's exponent with the schedule's mode, HALF_EVEN (banker's: 2.5 -> 2,
3.5 -> 4) or HALF_UP (2.5 -> 3). `min` and `max` then bound the rounded fee.
Each line is rounded on its own and the total is the sum of the lines, so the
breakdown always adds up to the total.

A zero amount is not charged (nothing moved), and a line that comes to zero is
left out of the breakdown. The NETWORK tier of an outbound EVM transfer is the
gas the platform paid: gas used x effective gas price (EIP-1559: base fee +
priority fee), in wei of the chain's native asset.
"""

from __future__ import annotations

import decimal
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from streams.fees.schedule import Rule, Schedule
from topics.errors import LedgerstreamError
from topics.money import InexactValue

BPS = Decimal(10_000)
_CONTEXT = decimal.Context(
    prec=120, traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Inexact]
)
"""Wide enough that a uint256 amount times any basis points is exact (Inexact traps prove it)."""
_ROUNDING = decimal.Context(prec=120, traps=[decimal.InvalidOperation])


class FeeError(LedgerstreamError, ValueError):
    """A fee that cannot be computed exactly (bad gas figures, negative amounts)."""


@dataclass(frozen=True)
class Gas:
    """What an EVM transaction paid: gas used, and the price per gas in wei."""

    gas_used: int
    base_fee_per_gas: int
    priority_fee_per_gas: int


@dataclass(frozen=True)
class Chargeable:
    """One event that may be charged, reduced to what fees depend on."""

    kind: str
    units: int
    currency: str
    exponent: int
    rail: str | None = None
    chain: str | None = None
    gas: Gas | None = None
    outbound: bool = False


@dataclass(frozen=True)
class FeeLine:
    tier: str
    category: str
    method: str
    units: int
    currency: str
    exponent: int
    provider: str | None = None


@dataclass(frozen=True)
class Assessment:
    """The fees of one event in one currency; `total` is the sum of the lines."""

    currency: str
    exponent: int
    lines: tuple[FeeLine, ...]
    schedule: str

    @property
    def total(self) -> int:
        return sum(line.units for line in self.lines)


def round_units(value: Decimal, rounding: str) -> int:
    """A Decimal of minor units rounded to a whole unit with `rounding` (HALF_EVEN or HALF_UP)."""
    mode = {"HALF_EVEN": decimal.ROUND_HALF_EVEN, "HALF_UP": decimal.ROUND_HALF_UP}[rounding]
    return int(value.quantize(Decimal(1), rounding=mode, context=_ROUNDING))


def percentage(units: int, bps: Decimal, rounding: str) -> int:
    """`bps` basis points of `units`, rounded."""
    return round_units(_CONTEXT.divide(_CONTEXT.multiply(Decimal(units), bps), BPS), rounding)


def band_bps(rule: Rule, units: int) -> Decimal:
    """The basis points of the band that holds `units` (bounds inclusive)."""
    for band in rule.bands:
        if band.up_to is None or units <= band.up_to:
            return band.bps
    raise FeeError(f"{rule.category}: no band for {units}")  # the last band is open; unreachable


def bounded(fee: int, rule: Rule) -> int:
    if rule.min is not None and fee < rule.min:
        fee = rule.min
    if rule.max is not None and fee > rule.max:
        fee = rule.max
    return fee


def rule_fee(rule: Rule, units: int, rounding: str) -> int:
    """One rule's fee on an amount of `units` (non-negative), rounded then bounded."""
    if rule.method == "FLAT":
        fee = rule.flat or 0
    elif rule.method == "PERCENTAGE":
        assert rule.bps is not None
        fee = percentage(units, rule.bps, rounding)
    else:
        fee = percentage(units, band_bps(rule, units), rounding)
    return bounded(fee, rule)


def effective_gas_price(base_fee: int, max_priority_fee: int, max_fee: int) -> int:
    """EIP-1559: the price per gas actually paid, base fee + min(priority cap, fee cap - base fee)."""
    if min(base_fee, max_priority_fee, max_fee) < 0:
        raise FeeError("gas prices must not be negative")
    if max_fee < base_fee:
        raise FeeError(f"max fee per gas {max_fee} is below the base fee {base_fee}: not includable")
    return base_fee + min(max_priority_fee, max_fee - base_fee)


def gas_of(transfer: dict[str, Any]) -> Gas | None:
    """What a confirmed chain transfer's transaction paid for gas, or None when it does not say
    (an inbound transfer: its sender paid). Wei are whole: a fraction refuses the event."""
    if transfer.get("gas_used") is None or transfer.get("base_fee_per_gas") is None:
        return None
    priority = transfer.get("priority_fee_per_gas")
    return Gas(
        int(transfer["gas_used"]),
        _wei(transfer["base_fee_per_gas"]),
        _wei(priority) if priority is not None else 0,
    )


def _wei(value: Decimal) -> int:
    if value != value.to_integral_value():
        raise InexactValue(f"fractional wei {value}")
    return int(value)


def network_fee(gas: Gas) -> int:
    """Wei paid for gas: gas used x (base fee + priority fee); exact at any size."""
    if min(gas.gas_used, gas.base_fee_per_gas, gas.priority_fee_per_gas) < 0:
        raise FeeError(f"gas figures must not be negative: {gas}")
    return gas.gas_used * (gas.base_fee_per_gas + gas.priority_fee_per_gas)


def assess(event: Chargeable, schedule: Schedule, native: tuple[str, int] | None = None) -> list[Assessment]:
    """The fees of one event under `schedule`, one assessment per currency charged.

    `native` is the chain's native asset (symbol, decimals), needed for the NETWORK
    line of an outbound EVM transfer whose gas is known.
    """
    if type(event.units) is not int:
        raise FeeError(f"amount {event.units!r} is not an integer of minor units")
    units = abs(event.units)
    lines: list[FeeLine] = []
    if units:
        for rule in schedule.rules:
            if rule.applies(event.kind, event.currency, event.rail):
                fee = rule_fee(rule, units, schedule.rounding)
                if fee:
                    lines.append(
                        FeeLine(
                            rule.tier,
                            rule.category,
                            rule.method,
                            fee,
                            event.currency,
                            event.exponent,
                            rule.provider,
                        )
                    )
    if event.kind == "crypto_transfer" and event.outbound and event.gas is not None:
        if native is None:
            raise FeeError(f"no native asset configured for chain {event.chain!r}: cannot charge its gas")
        gas = network_fee(event.gas)
        if gas:
            lines.append(FeeLine("NETWORK", "gas", "GAS", gas, native[0], native[1], event.chain))
    by_currency: dict[tuple[str, int], list[FeeLine]] = defaultdict(list)
    for line in lines:
        by_currency[(line.currency, line.exponent)].append(line)
    return [
        Assessment(currency, exponent, tuple(group), schedule.label)
        for (currency, exponent), group in sorted(by_currency.items())
    ]
