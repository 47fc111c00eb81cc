"""The currency registry: the only place an exponent comes from.

Fiat exponents are ISO 4217's (the `iso4217` package); crypto assets are rows of
`crypto_assets` (chain, symbol, decimals, contract). Every ingress checks an amount's
exponent or decimals here and refuses a mismatch; a caller never chooses one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import iso4217
from psycopg.rows import tuple_row

from topics.errors import LedgerstreamError


class CurrencyError(LedgerstreamError, ValueError):
    """An unknown currency or asset, or an exponent that is not the registry's."""


def iso_exponent(currency: str) -> int | None:
    """The ISO 4217 exponent of a fiat code, or None when it is not a fiat currency with minor units."""
    entry = iso4217.raw_table.get(currency)
    minor = entry.get("CcyMnrUnts") if entry else None
    return int(minor) if isinstance(minor, str) and minor.isdigit() else None


@dataclass(frozen=True)
class CryptoAsset:
    chain: str
    symbol: str
    decimals: int
    contract: str | None = None


@dataclass(frozen=True)
class CurrencyRegistry:
    """ISO 4217 fiat plus the registered crypto assets."""

    assets: tuple[CryptoAsset, ...] = ()
    _by_symbol: dict[str, dict[str, CryptoAsset]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for asset in self.assets:
            self._by_symbol.setdefault(asset.symbol, {})[asset.chain] = asset

    @classmethod
    def from_rows(cls, rows: Iterable[Any]) -> CurrencyRegistry:
        return cls(tuple(CryptoAsset(r[0], r[1], int(r[2]), r[3]) for r in rows))

    @classmethod
    def load(cls, conn: Any) -> CurrencyRegistry:
        """The registry as the database has it (`conn`: a psycopg connection)."""
        with conn.cursor(row_factory=tuple_row) as cur:
            cur.execute("SELECT chain, symbol, decimals, contract FROM crypto_assets ORDER BY 1, 2")
            return cls.from_rows(cur.fetchall())

    def exponent(self, currency: str, chain: str | None = None) -> int:
        """The exponent of a fiat code, or the decimals of a crypto asset (on `chain` when given)."""
        fiat = iso_exponent(currency)
        if fiat is not None:
            return fiat
        chains = self._by_symbol.get(currency)
        if not chains:
            raise CurrencyError(f"{currency!r} is neither an ISO 4217 currency nor a registered crypto asset")
        if chain is not None and chain in chains:
            return chains[chain].decimals
        decimals = {a.decimals for a in chains.values()}
        if chain is None and len(decimals) == 1:
            return decimals.pop()
        where = f" on {chain}" if chain else " (name the chain: its decimals differ by chain)"
        raise CurrencyError(f"{currency} is not a registered asset{where}")

    def check(self, currency: str, exponent: int, chain: str | None = None) -> None:
        """Raise CurrencyError unless `exponent` is the registry's for `currency`."""
        expected = self.exponent(currency, chain)
        if exponent != expected:
            kind = "decimals" if iso_exponent(currency) is None else "exponent"
            raise CurrencyError(f"{currency} has {kind} {expected}, not {exponent}")

    def is_fiat(self, currency: str) -> bool:
        return iso_exponent(currency) is not None


FIAT_ONLY = CurrencyRegistry()
"""ISO 4217 alone: for pure code that has no database (crypto assets are then unknown)."""
