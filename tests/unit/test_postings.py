from __future__ import annotations

import pytest

from streams.ledger.postings import (
    bank_transaction,
    card_movement,
    crypto_deposit,
    fee_assessed,
    fx_conversion,
    net_by_account,
    reversal,
    transaction_completed,
    trial_balance,
)
from topics.journals import Journal, Line, PostingError, account, account_kind, check_balanced, check_tenant


def test_money_out_debits_the_customer_and_credits_the_rail():
    j = transaction_completed(
        tenant="t",
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
        ("customer:t/acc-1:EUR", "DEBIT", 1500),
        ("clearing:t/sepa:EUR", "CREDIT", 1500),
    ]


def test_money_in_credits_the_customer():
    j = transaction_completed(
        tenant="t",
        transaction_id="t2",
        account_id="acc-1",
        direction="CREDIT",
        units=700,
        currency="JPY",
        exponent=0,
        rail="ACH",
    )
    assert {(line.account, line.side) for line in j.lines} == {
        ("clearing:t/ach:JPY", "DEBIT"),
        ("customer:t/acc-1:JPY", "CREDIT"),
    }


def test_a_book_transfer_moves_between_customers():
    j = transaction_completed(
        tenant="t",
        transaction_id="t3",
        account_id="a",
        direction="DEBIT",
        units=5,
        currency="USD",
        exponent=2,
        rail="BOOK",
        counterparty_account_id="b",
    )
    assert {(line.account, line.side) for line in j.lines} == {
        ("customer:t/a:USD", "DEBIT"),
        ("customer:t/b:USD", "CREDIT"),
    }


def test_fees_go_to_revenue():
    j = fee_assessed(tenant="t", fee_id="f1", account_id="acc-1", units=25, currency="EUR", exponent=2)
    assert {(line.account, line.side) for line in j.lines} == {
        ("customer:t/acc-1:EUR", "DEBIT"),
        ("fee_revenue:t/platform:EUR", "CREDIT"),
    }


def test_fx_balances_in_each_currency_through_the_position_accounts():
    j = fx_conversion(
        tenant="t",
        conversion_id="c1",
        account_id="acc-1",
        sold_units=10_000,
        sold_currency="EUR",
        sold_exponent=2,
        bought_units=10_845,
        bought_currency="USD",
        bought_exponent=2,
    )
    check_balanced(j)
    assert len(j.lines) == 4


def test_wei_beyond_64_bits_posts_exactly():
    wei = 2**200 + 7
    j = transaction_completed(
        tenant="t",
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
    original = fee_assessed(tenant="t", fee_id="f2", account_id="acc-1", units=25, currency="EUR", exponent=2)
    rev = reversal(original)
    assert rev.reverses == original.reference_id
    assert net_by_account([original, rev]) == {
        "customer:t/acc-1:EUR": (25, 25),
        "fee_revenue:t/platform:EUR": (25, 25),
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


def test_two_tenants_with_one_account_id_have_two_ledger_accounts():
    assert account("customer", "t1", "acc-1", "EUR") != account("customer", "t2", "acc-1", "EUR")
    with pytest.raises(PostingError, match="separators"):
        account("customer", "t1/acc-1", "x", "EUR")  # would collide with tenant t1's account acc-1/x


def test_a_journal_may_not_touch_another_tenants_books():
    j = fee_assessed(tenant="t1", fee_id="f3", account_id="acc-1", units=25, currency="EUR", exponent=2)
    check_tenant(j, "t1")
    with pytest.raises(PostingError, match="not in tenant 't2'"):
        check_tenant(j, "t2")


def test_a_bank_credit_funds_the_customer_from_the_providers_clearing_account():
    j = bank_transaction(
        tenant="t",
        provider="TrueLayer",
        transaction_id="b1",
        account_id="acc-1",
        direction="CREDIT",
        units=5000,
        currency="EUR",
        exponent=2,
    )
    assert [(line.account, line.side, line.units) for line in j.lines] == [
        ("clearing:t/truelayer:EUR", "DEBIT", 5000),
        ("customer:t/acc-1:EUR", "CREDIT", 5000),
    ]
    assert j.reference_id == "bank:t/truelayer:b1"


def test_card_flows_capture_completes_the_authorizations_hold_and_a_refund_reverses_it():
    common = {
        "tenant": "t",
        "provider": "stripe",
        "transaction_id": "iauth_1",
        "account_id": "acc-1",
        "currency": "EUR",
        "exponent": 2,
    }
    assert (
        card_movement(
            **common, provider_reference="iauth_1", status="AUTHORIZED", direction="DEBIT", units=900
        )
        is None
    )
    capture = card_movement(
        **common, provider_reference="ipi_1", status="CAPTURED", direction="DEBIT", units=900
    )
    refund = card_movement(
        **common, provider_reference="ipi_2", status="REFUNDED", direction="CREDIT", units=300
    )
    assert capture is not None and refund is not None
    assert capture.completes_hold == "card:t/iauth_1"
    assert [(ln.account, ln.side) for ln in capture.lines] == [
        ("customer:t/acc-1:EUR", "DEBIT"),
        ("clearing:t/card_stripe:EUR", "CREDIT"),
    ]
    assert [(ln.account, ln.side, ln.units) for ln in refund.lines] == [
        ("clearing:t/card_stripe:EUR", "DEBIT", 300),
        ("customer:t/acc-1:EUR", "CREDIT", 300),
    ]
    assert refund.completes_hold is None


def test_a_crypto_deposit_credits_the_customer_against_custody_per_chain_and_asset():
    wei = 3 * 10**18
    j = crypto_deposit(
        tenant="t",
        chain="ethereum",
        tx_hash="0xab",
        log_index=None,
        account_id="w1",
        units=wei,
        asset="ETH",
        decimals=18,
        block_hash="0xb1",
    )
    assert [(ln.account, ln.side, ln.units) for ln in j.lines] == [
        ("custody:t/ethereum:ETH", "DEBIT", wei),
        ("customer:t/w1:ETH", "CREDIT", wei),
    ]
    assert j.reference_id == "chain:t/ethereum:0xab:-1:w1@0xb1"
