"""Double-entry postings as plain functions over plain data.

Ledger account codes are `<kind>:<qualifier>:<CURRENCY>`, e.g.
`customer:acc-1:EUR`, `clearing:sepa:EUR`, `fee_revenue:platform:EUR`,
`fx_position:platform:USD`. The kind fixes the account type and normal side.
A journal entry balances per currency; amounts are positive integers in minor
(or base) units and the side carries the sign.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Side = Literal["DEBIT", "CREDIT"]

ACCOUNT_KINDS: dict[str, tuple[str, Side]] = {
    "customer": ("liability", "CREDIT"),  # what the platform owes its customers
    "clearing": ("asset", "DEBIT"),  # money held at a provider / rail
    "fee_revenue": ("revenue", "CREDIT"),
    "fx_position": ("asset", "DEBIT"),  # the platform's currency positions
    "network_fees": ("expense", "DEBIT"),  # gas the platform paid
}


class PostingError(ValueError):
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


def account(kind: str, qualifier: str, currency: str) -> str:
    if kind not in ACCOUNT_KINDS:
        raise PostingError(f"unknown ledger account kind {kind!r}")
    return f"{kind}:{qualifier}:{currency}"


@functools.lru_cache(maxsize=65536)
def account_kind(code: str) -> tuple[str, Side, str]:
    """(account type, normal side, currency) of an account code."""
    kind, sep, rest = code.partition(":")
    qualifier, sep2, currency = rest.rpartition(":")
    if not sep or not sep2 or not qualifier or not currency or kind not in ACCOUNT_KINDS:
        raise PostingError(f"malformed ledger account {code!r} (want kind:qualifier:CURRENCY)")
    account_type, normal = ACCOUNT_KINDS[kind]
    return account_type, normal, currency


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


def _pair(debit: str, credit: str, units: int, currency: str, exponent: int) -> tuple[Line, Line]:
    return (
        Line(debit, "DEBIT", units, currency, exponent),
        Line(credit, "CREDIT", units, currency, exponent),
    )


def transaction_completed(
    *,
    transaction_id: str,
    account_id: str,
    direction: Side,
    units: int,
    currency: str,
    exponent: int,
    rail: str,
    counterparty_account_id: str | None = None,
) -> Journal:
    """A completed money movement.

    Money out (DEBIT) reduces what we owe the customer and what we hold at the rail;
    money in (CREDIT) the reverse; a book transfer moves between two customers.
    """
    amount = abs(units)
    customer = account("customer", account_id, currency)
    if counterparty_account_id:
        other = account("customer", counterparty_account_id, currency)
        debit, credit = (customer, other) if direction == "DEBIT" else (other, customer)
    else:
        rail_account = account("clearing", rail.lower(), currency)
        debit, credit = (customer, rail_account) if direction == "DEBIT" else (rail_account, customer)
    journal = Journal(
        reference_id=f"txn:{transaction_id}",
        description=f"transaction {transaction_id} completed ({direction.lower()})",
        lines=_pair(debit, credit, amount, currency, exponent),
    )
    check_balanced(journal)
    return journal


def fee_assessed(
    *, fee_id: str, account_id: str, units: int, currency: str, exponent: int, tier: str = "platform"
) -> Journal:
    """A fee charged to a customer, recognised as revenue."""
    journal = Journal(
        reference_id=f"fee:{fee_id}",
        description=f"{tier} fee {fee_id}",
        lines=_pair(
            account("customer", account_id, currency),
            account("fee_revenue", tier, currency),
            units,
            currency,
            exponent,
        ),
    )
    check_balanced(journal)
    return journal


def fees_charged(
    *,
    fee_id: str,
    account_id: str,
    lines: Sequence[tuple[str, int]],
    currency: str,
    exponent: int,
    chain: str | None = None,
) -> Journal:
    """A fee breakdown in one currency: the customer pays the total; each tier is revenue
    (`fee_revenue:<tier>`), except the NETWORK tier, which recovers the gas the platform
    paid (`network_fees:<chain>`, an expense account)."""
    credits: dict[str, int] = defaultdict(int)
    for tier, units in lines:
        if tier.upper() == "NETWORK":
            credits[account("network_fees", (chain or "unknown").lower(), currency)] += units
        else:
            credits[account("fee_revenue", tier.lower(), currency)] += units
    total = sum(credits.values())
    journal = Journal(
        reference_id=f"fee:{fee_id}",
        description=f"fees {fee_id}",
        lines=(
            Line(account("customer", account_id, currency), "DEBIT", total, currency, exponent),
            *(Line(code, "CREDIT", units, currency, exponent) for code, units in sorted(credits.items())),
        ),
    )
    check_balanced(journal)
    return journal


def fx_conversion(
    *,
    conversion_id: str,
    account_id: str,
    sold_units: int,
    sold_currency: str,
    sold_exponent: int,
    bought_units: int,
    bought_currency: str,
    bought_exponent: int,
) -> Journal:
    """A conversion through the platform's FX positions: each currency balances on its own."""
    lines = _pair(
        account("customer", account_id, sold_currency),
        account("fx_position", "platform", sold_currency),
        sold_units,
        sold_currency,
        sold_exponent,
    ) + _pair(
        account("fx_position", "platform", bought_currency),
        account("customer", account_id, bought_currency),
        bought_units,
        bought_currency,
        bought_exponent,
    )
    journal = Journal(f"fx:{conversion_id}", f"fx conversion {conversion_id}", lines)
    check_balanced(journal)
    return journal


def reversal(original: Journal) -> Journal:
    """The correcting entry: every line on the other side. Entries are never edited."""
    flipped = tuple(
        Line(
            line.account,
            "CREDIT" if line.side == "DEBIT" else "DEBIT",
            line.units,
            line.currency,
            line.exponent,
        )
        for line in original.lines
    )
    return Journal(
        f"reversal:{original.reference_id}",
        f"reversal of {original.reference_id}",
        flipped,
        original.reference_id,
    )


def net_by_account(journals: Iterable[Journal]) -> dict[str, tuple[int, int]]:
    """(debits, credits) per account over many journals: one delta per account per batch."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for journal in journals:
        for line in journal.lines:
            totals[line.account][0 if line.side == "DEBIT" else 1] += line.units
    return {code: (d, c) for code, (d, c) in totals.items()}


def trial_balance(balances: Sequence[tuple[str, int, int]]) -> dict[str, int]:
    """Sum of (debits - credits) per currency over (account, debits, credits): all zero when consistent."""
    out: dict[str, int] = defaultdict(int)
    for code, debits, credits in balances:
        out[account_kind(code)[2]] += debits - credits
    return dict(out)
