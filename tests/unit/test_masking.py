"""Audit masking: Luhn, PAN detection in free text, account numbers to their last four."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from topics.masking import PAN_REDACTED, luhn_valid, mask, redact_pans


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("4242424242424242", True),  # Visa test card
        ("5555555555554444", True),  # Mastercard test card
        ("378282246310005", True),  # Amex, 15 digits
        ("4242424242424241", False),  # one digit off
        ("0000000000000000", True),  # passes Luhn: the check alone cannot tell, by design
        ("12a4", False),
    ],
)
def test_luhn(digits, valid):
    assert luhn_valid(digits) is valid


def test_pans_are_found_inside_text_with_spaces_or_dashes():
    text, found = redact_pans("card 4242 4242 4242 4242 charged, then 5555-5555-5555-4444 refunded")
    assert found and text == f"card {PAN_REDACTED} charged, then {PAN_REDACTED} refunded"


@pytest.mark.parametrize(
    "text",
    [
        "order 424242424242",  # 12 digits: too short for a PAN
        "ref 42424242424242424242",  # 20 digits: too long
        "ref 4242424242424241",  # fails Luhn
        "iban GB33BUKB20201555555555",  # letters break the run
        # regression: UUIDs whose groups are all digits were read as dash-separated PANs
        "event 12345678-1234-1234-1234-123456789012 caused it",
        "00000000-0000-0000-0000-000000000000",
        "4242-4242 4242-4242",  # mixed separators are not how cards are printed
    ],
)
def test_things_that_are_not_pans_stay(text):
    assert redact_pans(text) == (text, False)


def test_account_numbers_keep_their_last_four_anywhere_in_the_payload():
    record = {
        "beneficiary_reference": "GB33 BUKB 2020 1555 5555 55",
        "details": {"iban": "DE89370400440532013000", "note": "fine"},
        "lines": [{"counterparty_reference": "FR1420041010050500013M02606"}],
        "account_id": "acc-1",
    }
    out = mask(record).value
    assert out["beneficiary_reference"] == "****5555"
    assert out["details"] == {"iban": "****3000", "note": "fine"}
    assert out["lines"][0]["counterparty_reference"] == "****2606"
    assert out["account_id"] == "acc-1"  # our own account id is not an account number


def test_a_travel_rule_originator_identifier_keeps_its_last_four_and_the_names_stay():
    record = {
        "travel_rule": {
            "originator_name": "Ada",
            "originator_identifier": "AB123456C",
            "beneficiary_name": "Bo",
        }
    }
    assert mask(record).value["travel_rule"] == {
        "originator_name": "Ada",
        "originator_identifier": "****456C",
        "beneficiary_name": "Bo",
    }


def test_a_pan_in_any_field_is_redacted_and_flagged():
    masked = mask({"details": {"comment": "customer typed 4000056655665556 in the memo"}})
    assert masked.pan_redacted
    assert "4000056655665556" not in str(masked.value)


def test_exact_values_become_json_text_without_floats():
    at = datetime(2026, 11, 23, tzinfo=UTC)
    out = mask({"wei": Decimal(2**70), "units": 2**64, "small": 5, "at": at, "id": uuid.UUID(int=1)}).value
    assert out == {
        "wei": str(2**70),
        "units": str(2**64),
        "small": 5,
        "at": at.isoformat(),
        "id": "00000000-0000-0000-0000-000000000001",
    }


@pytest.mark.parametrize(
    "text",
    ["card4111111111111111", "pan:4111111111111111;", "x4111-1111-1111-1111y", "ref_4111111111111111_end"],
)
def test_a_card_number_glued_to_words_is_redacted(text):
    """Regression (issue 12): the pattern missed card4111111111111111."""
    redacted, found = redact_pans(text)
    assert found and "4111" not in redacted


def test_a_hash_with_a_luhn_valid_digit_run_is_not_a_card_number():
    tx_hash = "0xab" + "4111111111111111" + "cd" * 23
    assert redact_pans(tx_hash) == (tx_hash, False)


def test_what_analysts_tools_print_is_masked_and_keeps_exact_types():
    from datetime import UTC, datetime
    from decimal import Decimal

    from topics.masking import conceal

    at = datetime(2026, 11, 30, tzinfo=UTC)
    record = {
        "beneficiary_reference": "GB33BUKB20201555555555",
        "reference": "card 4111 1111 1111 1111",
        "amount": {"units": Decimal("123456789012345678901234567890"), "exponent": 18},
        "gas_used": 2**60,
        "occurred_at": at,
        "destination_account_id": None,
    }
    out = conceal(record)
    assert out["beneficiary_reference"] == "****5555"
    assert out["reference"] == "card [PAN REDACTED]"
    assert out["amount"]["units"] == Decimal("123456789012345678901234567890")
    assert type(out["amount"]["units"]) is Decimal and out["gas_used"] == 2**60 and out["occurred_at"] == at
    assert out["destination_account_id"] is None
    assert record["beneficiary_reference"] == "GB33BUKB20201555555555", "the record itself is left alone"
