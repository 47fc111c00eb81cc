"""The ledger's contract: journals, their lines and ledger account codes, and the record of
`ledger.journal.posted.v1`, which the ledger agent writes and the ledger sink reads.

Ledger account codes are `<kind>:<tenant>/<qualifier>:<CURRENCY>`: every account
belongs to one tenant's books, e.g. `customer:t1/acc-1:EUR`, `clearing:t1/sepa:EUR`,
`fee_revenue:t1/platform:EUR`, `custody:t1/ethereum:ETH`. The kind fixes the account
type and normal side. A journal entry balances per currency; amounts are positive
integers in minor (or base) units and the side carries the sign. Every line of a
journal belongs to the journal's tenant. Holds are named here too, since a posting
completes the hold its reservation placed.

`journal_record` (the encoder) and `posted_journal` (the decoder) are a pair.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from topics.errors import LedgerstreamError
from topics.events import derived_event_id
from topics.money import money_parts, money_record

Side = Literal["DEBIT", "CREDIT"]

ACCOUNT_KINDS: dict[str, tuple[str, Side]] = {
    "customer": ("liability", "CREDIT"),  # what the platform owes its customers
    "clearing": ("asset", "DEBIT"),  # money held at a provider / rail
    "fee_revenue": ("revenue", "CREDIT"),
    "fx_position": ("asset", "DEBIT"),  # the platform's currency positions
    "network_fees": ("expense", "DEBIT"),  # gas the platform paid
    "custody": ("asset", "DEBIT"),  # crypto held in the platform's wallets, per chain
    "suspense": ("asset", "DEBIT"),  # money that arrived and is not yet explained
}


class PostingError(LedgerstreamError, ValueError):
    """A journal entry that cannot be posted (unbalanced, malformed account, bad amount)."""


@dataclass(frozen=True)
class Line:
    account: str
    side: Side
    units: int
    currency: str
    exponent: int


@dataclass(frozen=True)
class Journal:
    reference_id: str
    description: str
    lines: tuple[Line, ...]
    reverses: str | None = None
    completes_hold: str | None = None
    """The hold this posting turns into money moved, in the same database transaction."""


def account(kind: str, tenant: str, qualifier: str, currency: str) -> str:
    """The code of a tenant's ledger account."""
    if kind not in ACCOUNT_KINDS:
        raise PostingError(f"unknown ledger account kind {kind!r}")
    if not tenant or "/" in tenant or ":" in tenant:
        raise PostingError(f"tenant {tenant!r} cannot name a ledger account ('/' and ':' are separators)")
    return f"{kind}:{tenant}/{qualifier}:{currency}"


def tenant_of(code: str) -> str:
    """The tenant whose books hold an account (`kind:<tenant>/qualifier:CUR`)."""
    _, _, rest = code.partition(":")
    tenant, sep, _ = rest.partition("/")
    if not sep or not tenant:
        raise PostingError(f"ledger account {code!r} names no tenant (want kind:tenant/qualifier:CURRENCY)")
    return tenant


def holder_of(code: str) -> str:
    """The account id a ledger account is kept for (`kind:<tenant>/<account id>:CUR`)."""
    tenant_of(code)
    return code.partition("/")[2].rpartition(":")[0]


def check_tenant(journal: Journal, tenant: str) -> None:
    """Raise PostingError unless every line is in `tenant`'s books."""
    for line in journal.lines:
        if tenant_of(line.account) != tenant:
            raise PostingError(f"{journal.reference_id}: {line.account} is not in tenant {tenant!r}'s books")


@functools.lru_cache(maxsize=65536)
def account_kind(code: str) -> tuple[str, Side, str]:
    """(account type, normal side, currency) of an account code."""
    kind, sep, rest = code.partition(":")
    qualifier, sep2, currency = rest.rpartition(":")
    if not sep or not sep2 or not qualifier or not currency or kind not in ACCOUNT_KINDS:
        raise PostingError(f"malformed ledger account {code!r} (want kind:qualifier:CURRENCY)")
    account_type, normal = ACCOUNT_KINDS[kind]
    return account_type, normal, currency


def opened_account(line: Line) -> tuple[str, str, Side, str, int]:
    """(code, account type, normal side, currency, exponent): the ledger account a line's
    account is opened as on its first posting."""
    account_type, normal, _ = account_kind(line.account)
    return line.account, account_type, normal, line.currency, line.exponent


def check_balanced(journal: Journal) -> None:
    """Raise PostingError unless the journal is well-formed double entry."""
    if len(journal.lines) < 2:
        raise PostingError(f"{journal.reference_id}: double entry needs at least two lines")
    net: dict[str, int] = defaultdict(int)
    for line in journal.lines:
        if type(line.units) is not int or line.units <= 0:
            raise PostingError(f"{journal.reference_id}: amount {line.units!r} must be a positive integer")
        _, _, currency = account_kind(line.account)
        if currency != line.currency:
            raise PostingError(
                f"{journal.reference_id}: {line.account} holds {currency}, not {line.currency}"
            )
        net[line.currency] += line.units if line.side == "DEBIT" else -line.units
    unbalanced = {c: n for c, n in net.items() if n != 0}
    if unbalanced:
        raise PostingError(f"{journal.reference_id}: debits and credits differ by {unbalanced}")


def transfer_hold_id(transaction_id: str) -> str:
    """The hold a transfer's reservation places (completed by its posting)."""
    return f"txn:{transaction_id}"


CARD_HOLD_DAYS = 7
"""How long a card authorization holds funds without a capture (networks allow about 7 days)."""


def card_hold_id(tenant: str, transaction_id: str) -> str:
    """The hold a card authorization places (completed by its capture)."""
    return f"card:{tenant}/{transaction_id}"


def fx_hold_id(order_id: str) -> str:
    """The hold an FX order places on the sold currency (completed by its conversion)."""
    return f"fx:{order_id}"


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


@dataclass(frozen=True)
class PostedJournal:
    journal_entry_id: str
    journal: Journal
    tenant_id: str
    environment: str
    correlation_id: str
    source_event_id: str
    posted_at: datetime
    event_id: str
    """The `JournalPosted` event's own id: what a balance change the posting makes was caused by."""


def posted_journal(record: dict[str, Any]) -> PostedJournal:
    """A decoded `JournalPosted` record as a checked journal: raises PostingError for one that
    does not balance or leaves its tenant's books, InexactValue for an inexact amount."""
    meta = record["metadata"]
    lines = []
    for raw in record["lines"]:
        units, currency, exponent = money_parts(raw["amount"])
        lines.append(Line(raw["ledger_account"], raw["side"], units, currency, exponent))
    journal = Journal(
        record["reference_id"],
        record["description"],
        tuple(lines),
        record.get("reverses"),
        record.get("completes_hold"),
    )
    check_balanced(journal)
    check_tenant(journal, meta["tenant_id"])
    return PostedJournal(
        journal_entry_id=str(record["journal_entry_id"]),
        journal=journal,
        tenant_id=meta["tenant_id"],
        environment=meta["environment"],
        correlation_id=meta["correlation_id"],
        source_event_id=str(meta.get("causation_id") or meta["event_id"]),
        posted_at=meta["occurred_at"],
        event_id=str(meta["event_id"]),
    )


def journal_entry_id(reference_id: str) -> str:
    """The id of the journal the ledger agent posts for `reference_id` (derived, so a replay posts
    the same journal and the ledger keeps one)."""
    return derived_event_id(reference_id, "ledger_agent")
