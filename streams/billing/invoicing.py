"""Invoices as plain functions: billing periods, deterministic ids, line items, plans.

An invoice is one tenant's fees in one environment for one calendar month (UTC),
`YYYY-MM`. A fee belongs to the period of its time unless that period's invoice
is closed, in which case it goes to the next open one. Every fee line becomes
one line item whose id is derived from the fee, so a replayed fee never adds a
line twice; a subscription plan adds its monthly fee once, when the period's
invoice opens.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from topics.errors import LedgerstreamError
from topics.events import LEDGERSTREAM_NAMESPACE
from topics.money import ExactInt


class BillingError(LedgerstreamError, ValueError):
    """A fee that cannot be billed."""


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    plan: str
    monthly_fee: ExactInt = Field(ge=0)
    currency: str
    exponent: int = Field(ge=0, le=18)


class BillingBook(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    close_after_hours: int = Field(0, ge=0)
    plans: dict[str, Plan] = Field(default_factory=dict)


def period_of(at: datetime) -> str:
    """The billing period (`YYYY-MM`, UTC) of a time."""
    if at.tzinfo is None:
        raise BillingError(f"time {at.isoformat()} has no time zone")
    return at.astimezone(UTC).strftime("%Y-%m")


def _parse(period: str) -> tuple[int, int]:
    try:
        year, month = period.split("-")
        y, m = int(year), int(month)
    except ValueError as e:
        raise BillingError(f"period {period!r} is not YYYY-MM") from e
    if not 1 <= m <= 12 or len(year) != 4:
        raise BillingError(f"period {period!r} is not YYYY-MM")
    return y, m


def next_period(period: str) -> str:
    y, m = _parse(period)
    return f"{y + (m == 12):04d}-{m % 12 + 1:02d}"


def period_end(period: str) -> datetime:
    """The first instant after the period."""
    y, m = _parse(next_period(period))
    return datetime(y, m, 1, tzinfo=UTC)


def is_past(period: str, now: datetime, close_after: timedelta) -> bool:
    """Whether the period has ended (plus the grace before closing) at `now`."""
    return now >= period_end(period) + close_after


def target_period(
    fee_period: str, closed: Callable[[str], bool], now: datetime, close_after: timedelta
) -> str:
    """The first period from the fee's own that is neither closed nor past its end."""
    period = fee_period
    for _ in range(1200):  # a century of months: a fee that old is a bug, not a bill
        if not closed(period) and not is_past(period, now, close_after):
            return period
        period = next_period(period)
    raise BillingError(f"no open period after {fee_period}")


def invoice_id(tenant_id: str, environment: str, period: str) -> str:
    return str(uuid.uuid5(LEDGERSTREAM_NAMESPACE, f"invoice:{environment}:{tenant_id}:{period}"))


def line_item_id(fee_id: str, line_no: int) -> str:
    return str(uuid.uuid5(LEDGERSTREAM_NAMESPACE, f"invoice-line:{fee_id}:{line_no}"))


def subscription_line_item_id(invoice: str, plan: str) -> str:
    return str(uuid.uuid5(LEDGERSTREAM_NAMESPACE, f"invoice-subscription:{invoice}:{plan}"))


def fee_type(tier: str, category: str) -> str:
    """What a line item says it charges, e.g. `platform:transfer`."""
    return f"{tier.lower()}:{category}"


@dataclass(frozen=True)
class LineItem:
    line_item_id: str
    fee_type: str
    units: int
    currency: str
    exponent: int
    source_fee_id: str | None
