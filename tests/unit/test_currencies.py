"""The currency registry: ISO 4217 for fiat, the asset table for crypto; callers never choose."""

from __future__ import annotations

import pytest

from topics.currencies import CryptoAsset, CurrencyError, CurrencyRegistry

REGISTRY = CurrencyRegistry(
    (
        CryptoAsset("ethereum", "ETH", 18),
        CryptoAsset("ethereum", "USDC", 6, "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"),
        CryptoAsset("polygon", "USDC", 6, "0x3c499c542cef5e3811e1192ce70d8cc03d5c3359"),
        CryptoAsset("bsc", "WEIRD", 18),
        CryptoAsset("other", "WEIRD", 8),
    )
)


@pytest.mark.parametrize(("currency", "exponent"), [("EUR", 2), ("JPY", 0), ("KWD", 3), ("ISK", 0)])
def test_fiat_exponents_are_iso_4217s(currency, exponent):
    assert REGISTRY.exponent(currency) == exponent
    REGISTRY.check(currency, exponent)


@pytest.mark.parametrize(
    ("currency", "exponent", "message"),
    [
        ("USD", 0, "USD has exponent 2, not 0"),
        ("EUR", 18, "EUR has exponent 2, not 18"),
        ("JPY", 2, "JPY has exponent 0, not 2"),
        ("ETH", 6, "ETH has decimals 18, not 6"),
        ("USDC", 18, "USDC has decimals 6, not 18"),
        ("XAU", 2, "neither an ISO 4217 currency"),  # gold: ISO code without minor units
        ("ZZZ", 2, "neither an ISO 4217 currency"),
    ],
)
def test_a_mismatched_or_unknown_exponent_is_refused(currency, exponent, message):
    with pytest.raises(CurrencyError, match=message):
        REGISTRY.check(currency, exponent)


def test_an_asset_whose_decimals_differ_by_chain_needs_its_chain():
    assert REGISTRY.exponent("WEIRD", "other") == 8
    with pytest.raises(CurrencyError, match="name the chain"):
        REGISTRY.exponent("WEIRD")
    with pytest.raises(CurrencyError, match="on polygon"):
        REGISTRY.exponent("ETH", "polygon")
