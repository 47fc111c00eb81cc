"""Strict JSON, exact provider amounts and the rate limiter: pure logic."""

from __future__ import annotations

from decimal import Decimal

import pytest

from connectors.webhooks.common import Unprocessable, exponent_of, minor_units
from connectors.webhooks.limits import TokenBucket
from connectors.webhooks.strict_json import MAX_DEPTH, MalformedJson, loads
from connectors.webhooks.stripe import iso_units


def test_decimals_stay_exact_and_integers_stay_integers():
    doc = loads(b'{"a": 0.1, "b": 12345678901234567890, "c": [1.10]}')
    assert doc == {"a": Decimal("0.1"), "b": 12345678901234567890, "c": [Decimal("1.10")]}
    assert type(doc["b"]) is int


@pytest.mark.parametrize(
    "raw",
    [
        b"NaN",
        b'{"x": Infinity}',
        b'{"x": -Infinity}',
        b'{"k": 1, "k": 2}',
        b'{"a": {"k": 1, "k": 1}}',
        b"1" * 41,
        b"1e400",
        b"1e-400",
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
        b"[" * 100_000,
        b"",
        b"\xc3\x28",
        b"{'a': 1}",
    ],
)
def test_hostile_documents_are_refused(raw):
    with pytest.raises(MalformedJson):
        loads(raw)


def test_nesting_up_to_the_limit_is_accepted():
    assert loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None


def test_brackets_inside_strings_do_not_count_as_nesting():
    doc = b'{"note": "' + b"[{" * 100 + b'\\\\", "x": "a\\"[[["}'
    assert loads(doc) == {"note": "[{" * 100 + "\\", "x": 'a"[[['}


def test_deep_nesting_is_refused_whatever_the_recursion_limit():
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000_000)  # as some libraries do; the C parser would overflow its stack
    try:
        with pytest.raises(MalformedJson, match="nesting"):
            loads(b"[" * 1_000_000 + b"]" * 1_000_000)
        with pytest.raises(MalformedJson, match="nesting"):
            loads(b'{"a":' * 200_000 + b"1" + b"}" * 200_000)
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize(
    ("amount", "currency", "units"),
    [
        ("12.34", "USD", 1234),
        ("12.3", "USD", 1230),
        ("500", "JPY", 500),
        ("1.234", "KWD", 1234),
        ("0.01", "EUR", 1),
        ("99999999999999.99", "USD", 9_999_999_999_999_999),
    ],
)
def test_decimal_strings_become_exact_minor_units(amount, currency, units):
    assert minor_units(amount, currency) == units


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("1.005", "USD"),
        ("1.5", "JPY"),
        (12.34, "USD"),
        (1234, "USD"),
        ("NaN", "USD"),
        ("1,00", "EUR"),
        ("10", "XAU"),
        ("10", "ZZZ"),
    ],
)
def test_amounts_that_are_not_exact_in_the_currency_are_refused(amount, currency):
    with pytest.raises(Unprocessable):
        minor_units(amount, currency)


def test_iso_exponents():
    assert [exponent_of(c) for c in ("USD", "jpy", "KWD", "CLF")] == [2, 0, 3, 4]


def test_the_bucket_allows_a_burst_then_the_rate():
    bucket = TokenBucket(per_second=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.1) and not bucket.take(0.1)  # one token back after 1/10 s
    assert sum(bucket.take(10.0) for _ in range(10)) == 3  # refills only up to the burst


@pytest.mark.parametrize(
    ("stripe_amount", "currency", "units", "exponent"),
    [
        (1000, "USD", 1000, 2),  # two-decimal: cents in both
        (500, "JPY", 500, 0),  # zero-decimal in both
        (500, "ISK", 5, 0),  # Stripe keeps ISK two-decimal for backwards compatibility: 500 = 5 krona
        (500, "MGA", 50000, 2),  # zero-decimal at Stripe, two decimals in ISO 4217
        (12345, "HUF", 12345, 2),  # two-decimal for charges at Stripe as in ISO 4217
        (5120, "KWD", 5120, 3),  # three-decimal in both
        (700, "UGX", 700, 0),  # zero-decimal at Stripe and in ISO 4217
    ],
)
def test_stripe_amounts_become_iso_4217_minor_units(stripe_amount, currency, units, exponent):
    assert iso_units(stripe_amount, currency) == (units, exponent)


def test_a_fractional_krona_from_stripe_is_refused():
    with pytest.raises(Unprocessable, match="not a whole number of ISK"):
        iso_units(4010, "ISK")


def test_the_depth_check_is_linear_in_the_body():
    """Regression (issue 12): escaped quotes made every quote start a scan to the end: 32 s of CPU for 64 kB."""
    import time

    body = b'"' + b'\\"' * 32_000 + b"[" * 40
    started = time.process_time()
    with pytest.raises(MalformedJson):
        loads(body)
    assert time.process_time() - started < 0.5


@pytest.mark.parametrize(
    ("amount", "currency", "units", "exponent", "refusal"),
    [
        (4_250, "eur", 4_250, 2, None),
        (500, "jpy", 500, 0, None),
        (1_000, "isk", 10, 0, None),
        (150, "isk", 0, 0, "UNREADABLE_AMOUNT"),
        (0, "eur", 0, 2, "UNREADABLE_AMOUNT"),
        (100, "xyz", 0, 0, "UNREADABLE_AMOUNT"),
    ],
)
def test_a_stripe_authorization_request_asks_for_its_pending_amount(
    amount, currency, units, exponent, refusal
):
    from connectors.webhooks.common import Delivery
    from connectors.webhooks.stripe import API_VERSION, Stripe
    from ops.dev.webhook_senders import stripe_authorization_request

    document = stripe_authorization_request("ic_1", amount, currency)
    notice = Stripe([]).read(document, "sandbox", Delivery("/", {}, b"", 0))
    ask = notice.authorize
    assert notice.external_ref == "ic_1" and notice.build is None and ask is not None
    assert ask.authorization_id == document["data"]["object"]["id"]
    assert (ask.units, ask.currency, ask.exponent) == (units, currency.upper(), exponent)
    assert (ask.refusal or "").split(":")[0] == (refusal or "")
    assert dict(ask.reply_headers) == {"Stripe-Version": API_VERSION}
