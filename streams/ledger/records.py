"""Journals to and from the `ledger.journal.posted.v1` contract."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from streams.ledger.postings import Journal, Line

INT64_MAX = 2**63 - 1
FIAT_MAX_EXPONENT = 4


def money_record(line: Line) -> tuple[str, dict[str, Any]]:
    """A line's amount as Avro union branch: FiatMoney for ISO-style currencies that fit
    a long (exponent 0-4), CryptoMoney (base units as decimal) otherwise."""
    if line.exponent <= FIAT_MAX_EXPONENT and line.units <= INT64_MAX:
        return "ledgerstream.common.FiatMoney", {
            "units": line.units,
            "currency": line.currency,
            "exponent": line.exponent,
        }
    return "ledgerstream.common.CryptoMoney", {
        "units": Decimal(line.units),
        "asset": line.currency,
        "decimals": line.exponent,
        "chain": "ledger",
    }


def journal_record(
    journal: Journal, *, journal_entry_id: str, account_id: str, metadata: dict[str, Any]
) -> dict[str, Any]:
    """The `JournalPosted` record for a journal."""
    return {
        "metadata": metadata,
        "account_id": account_id,
        "journal_entry_id": journal_entry_id,
        "reference_id": journal.reference_id,
        "description": journal.description,
        "lines": [
            {"ledger_account": line.account, "side": line.side, "amount": money_record(line)}
            for line in journal.lines
        ],
        "reverses": journal.reverses,
    }
