"""Journals to the `ledger.journal.posted.v1` contract."""

from __future__ import annotations

from typing import Any

from streams.ledger.postings import Journal
from topics.money import money_record


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
            {
                "ledger_account": line.account,
                "side": line.side,
                "amount": money_record(line.units, line.currency, line.exponent),
            }
            for line in journal.lines
        ],
        "reverses": journal.reverses,
        "completes_hold": journal.completes_hold,
    }
