"""Fee schedules: per tenant (with a default), versioned and effective-dated, as data.

A schedule is a list of rules. A rule charges one tier (PLATFORM, PROVIDER,
NETWORK, COMPLIANCE, PREMIUM) on one kind of chargeable event, in one currency
(or `*` for a percentage that needs no amounts of its own), by one method:
- PERCENTAGE: `bps` basis points of the amount (a decimal string: "2.5" is 0.025%);
- FLAT: `flat` minor (or base) units;
- TIERED: volume bands; the band whose `up_to` (inclusive, minor units) first
  holds the amount sets the basis points for the whole amount; the last band
  has no `up_to`.
`min` and `max` bound a rule's fee after rounding; a rule may be limited to
some rails (`rails`, e.g. premium instant payments). The NETWORK tier of an EVM
transfer is not a rule: it is the gas the platform paid (see `calc.network_fee`).

Amounts are integers (TOML integers, or strings for crypto amounts beyond 2^63);
a float anywhere in a schedule is refused when it is loaded.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from topics.errors import LedgerstreamError
from topics.money import ExactInt

Tier = Literal["PLATFORM", "PROVIDER", "NETWORK", "COMPLIANCE", "PREMIUM"]
Method = Literal["PERCENTAGE", "FLAT", "TIERED"]
Kind = Literal["transfer", "card_load", "onramp", "offramp", "crypto_transfer", "fx"]
Rounding = Literal["HALF_EVEN", "HALF_UP"]
DEFAULT_TENANT = "default"


class ScheduleError(LedgerstreamError, ValueError):
    """A fee schedule file that cannot be used."""


def _exact_decimal(value: Any) -> Any:
    if isinstance(value, (float, bool)):
        raise ValueError(f'{value!r} is a float: write basis points as a string, e.g. "2.5"')
    return Decimal(str(value)) if isinstance(value, (int, str)) else value


class Band(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    up_to: ExactInt | None = None
    bps: Decimal

    _bps = field_validator("bps", mode="before")(_exact_decimal)


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Kind
    tier: Tier
    category: str
    method: Method
    currency: str = "*"
    bps: Decimal | None = None
    flat: ExactInt | None = None
    bands: tuple[Band, ...] = ()
    min: ExactInt | None = None
    max: ExactInt | None = None
    provider: str | None = None
    rails: tuple[str, ...] = ()

    _bps = field_validator("bps", mode="before")(_exact_decimal)

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        where = f"{self.kind}/{self.tier}/{self.category}"
        if self.tier == "NETWORK":
            raise ValueError(f"{where}: the NETWORK tier is the gas paid, not a rule")
        needs = {
            "PERCENTAGE": self.bps is not None,
            "FLAT": self.flat is not None,
            "TIERED": bool(self.bands),
        }
        if not needs[self.method]:
            wanted = {"PERCENTAGE": "bps", "FLAT": "flat", "TIERED": "bands"}[self.method]
            raise ValueError(f"{where}: method {self.method} needs {wanted}")
        amounts = self.flat is not None or self.min is not None or self.max is not None or self.bands
        if amounts and self.currency == "*":
            raise ValueError(f"{where}: flat, min, max and bands are amounts: name the currency")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"{where}: min {self.min} exceeds max {self.max}")
        for value in (self.flat, self.min, self.max):
            if value is not None and value < 0:
                raise ValueError(f"{where}: amounts must not be negative")
        if self.bands:
            bounds = [b.up_to for b in self.bands]
            if bounds[-1] is not None or any(b is None for b in bounds[:-1]):
                raise ValueError(f"{where}: every band but the last needs up_to; the last has none")
            if bounds[:-1] != sorted(set(bounds[:-1])):  # type: ignore[type-var]
                raise ValueError(f"{where}: band bounds must increase")
        return self

    def applies(self, kind: str, currency: str, rail: str | None) -> bool:
        return (
            self.kind == kind
            and self.currency in ("*", currency)
            and (not self.rails or (rail is not None and rail.upper() in self.rails))
        )


class Schedule(BaseModel):
    """One version of one tenant's fees."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str
    version: int
    effective_from: datetime
    rounding: Rounding = "HALF_EVEN"
    rules: tuple[Rule, ...] = Field(default=(), alias="rule")

    @property
    def label(self) -> str:
        """What a fee records as the config it was computed with."""
        return f"{self.tenant}@v{self.version}"


class NativeAsset(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    asset: str
    decimals: int


class FeeBook(BaseModel):
    """Every tenant's schedules; `for_event` picks the one in force."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schedules: tuple[Schedule, ...] = Field(alias="schedule")
    native_assets: dict[str, NativeAsset] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_versions(self) -> FeeBook:
        seen = set()
        for s in self.schedules:
            if s.effective_from.tzinfo is None:
                raise ValueError(f"{s.label}: effective_from needs a time zone (e.g. 2026-01-01T00:00:00Z)")
            if (s.tenant, s.version) in seen:
                raise ValueError(f"{s.label} is defined twice")
            seen.add((s.tenant, s.version))
        if not any(s.tenant == DEFAULT_TENANT for s in self.schedules):
            raise ValueError(f"no {DEFAULT_TENANT!r} schedule: a tenant without its own would have none")
        return self

    def for_event(self, tenant: str, at: datetime) -> Schedule:
        """The schedule in force for `tenant` at `at`: its own latest effective one, else the default's."""
        for who in (tenant, DEFAULT_TENANT):
            candidates = [s for s in self.schedules if s.tenant == who and s.effective_from <= at]
            if candidates:
                return max(candidates, key=lambda s: (s.effective_from, s.version))
        raise ScheduleError(f"no fee schedule for tenant {tenant!r} in force at {at.isoformat()}")
