from __future__ import annotations

import pytest

from streams.ledger.postings import (
    Journal,
    Line,
    PostingError,
    account_kind,
    check_balanced,
    fee_assessed,
    fx_conversion,
    net_by_account,
    reversal,
    transaction_completed,
    trial_balance,
)


def test_money_out_debits_the_customer_and_credits_the_rail():
    j = transaction_completed(
        transaction_id="t1",
        account_id="acc-1",
        direction="DEBIT",
        units=-1500,
        currency="EUR",
        exponent=2,
        rail="SEPA",
    )
    assert j.reference_id == "txn:t1"
    assert [(line.account, line.side, line.units) for line in j.lines] == [
        ("customer:acc-1:EUR", "DEBIT", 1500),
        ("clearing:sepa:EUR", "CREDIT", 1500),
    ]


def test_money_in_credits_the_customer():
    j = transaction_completed(
        transaction_id="t2",
        account_id="acc-1",
        direction="CREDIT",
        units=700,
        currency="JPY",
        exponent=0,
        rail="ACH",
    )
    assert {(line.account, line.side) for line in j.lines} == {
        ("clearing:ach:JPY", "DEBIT"),
        ("customer:acc-1:JPY", "CREDIT"),
    }


def test_a_book_transfer_moves_between_customers():
    j = transaction_completed(
        transaction_id="t3", account_id="a", direction="DEBIT", units=5, currency="USD", exponent=2, rail="BOOK",
        counterparty_account_id="b",
    )  # fmt: skip
    assert {(line.account, line.side) for line in j.lines} == {
        ("customer:a:USD", "DEBIT"),
        ("customer:b:USD", "CREDIT"),
    }


def test_fees_go_to_revenue():
    j = fee_assessed(fee_id="f1", account_id="acc-1", units=25, currency="EUR", exponent=2)
    assert {(line.account, line.side) for line in j.lines} == {
        ("customer:acc-1:EUR", "DEBIT"),
        ("fee_revenue:platform:EUR", "CREDIT"),
    }


def test_fx_balances_in_each_currency_through_the_position_accounts():
    j = fx_conversion(
        conversion_id="c1", account_id="acc-1", sold_units=10_000, sold_currency="EUR", sold_exponent=2,
        bought_units=10_845, bought_currency="USD", bought_exponent=2,
    )  # fmt: skip
    check_balanced(j)
    assert len(j.lines) == 4


def test_wei_beyond_64_bits_posts_exactly():
    wei = 2**200 + 7
    j = transaction_completed(
        transaction_id="t4",
        account_id="w",
        direction="CREDIT",
        units=wei,
        currency="ETH",
        exponent=18,
        rail="ETHEREUM",
    )
    assert {line.units for line in j.lines} == {wei}


def test_reversal_flips_every_line_and_names_the_original():
    original = fee_assessed(fee_id="f2", account_id="acc-1", units=25, currency="EUR", exponent=2)
    rev = reversal(original)
    assert rev.reverses == original.reference_id
    assert net_by_account([original, rev]) == {
        "customer:acc-1:EUR": (25, 25),
        "fee_revenue:platform:EUR": (25, 25),
    }


@pytest.mark.parametrize(
    "lines",
    [
        (Line("customer:a:EUR", "DEBIT", 10, "EUR", 2),),
        (Line("customer:a:EUR", "DEBIT", 10, "EUR", 2), Line("clearing:x:EUR", "CREDIT", 9, "EUR", 2)),
        (Line("customer:a:EUR", "DEBIT", 10, "EUR", 2), Line("clearing:x:USD", "CREDIT", 10, "USD", 2)),
        (Line("customer:a:EUR", "DEBIT", 0, "EUR", 2), Line("clearing:x:EUR", "CREDIT", 0, "EUR", 2)),
        (Line("customer:a:EUR", "DEBIT", 10.0, "EUR", 2), Line("clearing:x:EUR", "CREDIT", 10.0, "EUR", 2)),  # type: ignore[arg-type]
        (Line("customer:a:USD", "DEBIT", 10, "EUR", 2), Line("clearing:x:EUR", "CREDIT", 10, "EUR", 2)),
        (Line("wallet:a:EUR", "DEBIT", 10, "EUR", 2), Line("clearing:x:EUR", "CREDIT", 10, "EUR", 2)),
    ],
    ids=["one-line", "unequal", "cross-currency", "zero", "float", "account-currency", "unknown-kind"],
)
def test_malformed_journals_are_refused(lines):
    with pytest.raises(PostingError):
        check_balanced(Journal("r", "d", lines))


def test_account_kind_and_trial_balance():
    assert account_kind("fee_revenue:platform:EUR") == ("revenue", "CREDIT", "EUR")
    assert trial_balance(
        [("customer:a:EUR", 0, 100), ("clearing:x:EUR", 100, 0), ("customer:b:USD", 5, 5)]
    ) == {
        "EUR": 0,
        "USD": 0,
    }
