"""Billing periods, closing and carrying over, deterministic ids, plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from streams.billing.invoicing import (
    BillingError,
    Plan,
    invoice_id,
    line_item_id,
    next_period,
    period_end,
    period_of,
    target_period,
)

NOV = datetime(2026, 11, 15, tzinfo=UTC)
NO_GRACE = timedelta(0)


def test_the_period_is_the_utc_month():
    assert period_of(datetime(2026, 11, 30, 23, 30, tzinfo=timezone(timedelta(hours=-2)))) == "2026-12"
    assert period_of(datetime(2026, 12, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))) == "2026-11"
    with pytest.raises(BillingError, match="time zone"):
        period_of(datetime(2026, 11, 1))


def test_periods_roll_over_the_year():
    assert next_period("2026-12") == "2027-01"
    assert next_period("2026-01") == "2026-02"
    assert period_end("2026-12") == datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(BillingError):
        next_period("2026-13")


def test_a_fee_goes_to_its_own_period_while_it_is_open():
    assert target_period("2026-11", lambda p: False, NOV, NO_GRACE) == "2026-11"


def test_a_fee_for_a_closed_period_goes_to_the_next_open_one():
    closed = {"2026-11", "2026-12"}
    assert target_period("2026-11", closed.__contains__, NOV, NO_GRACE) == "2027-01"


def test_a_period_past_its_end_is_closed_even_without_its_invoice():
    now = datetime(2027, 2, 3, tzinfo=UTC)
    assert target_period("2026-11", lambda p: False, now, NO_GRACE) == "2027-02"
    # with a grace of five days, January is still open on February 3rd
    assert target_period("2026-11", lambda p: False, now, timedelta(days=5)) == "2027-01"


def test_ids_are_deterministic_and_distinct():
    assert invoice_id("t1", "live", "2026-11") == invoice_id("t1", "live", "2026-11")
    assert (
        len(
            {
                invoice_id("t1", "live", "2026-11"),
                invoice_id("t1", "sandbox", "2026-11"),
                invoice_id("t2", "live", "2026-11"),
                invoice_id("t1", "live", "2026-12"),
            }
        )
        == 4
    )
    assert line_item_id("f", 1) != line_item_id("f", 2)


def test_a_plan_fee_must_be_exact():
    with pytest.raises(ValueError, match="integer"):
        Plan(plan="p", monthly_fee=49.0, currency="EUR", exponent=2)  # type: ignore[arg-type]
