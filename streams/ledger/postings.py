"""Double-entry postings as plain functions over plain data.

Ledger account codes are `<kind>:<tenant>/<qualifier>:<CURRENCY>`: every account
belongs to one tenant's books, e.g. `customer:t1/acc-1:EUR`, `clearing:t1/sepa:EUR`,
`fee_revenue:t1/platform:EUR`, `custody:t1/ethereum:ETH`. The kind fixes the account
type and normal side. A journal entry balances per currency; amounts are positive
integers in minor (or base) units and the side carries the sign. Every line of a
journal belongs to the journal's tenant.
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
    "custody": ("asset", "DEBIT"),  # crypto held in the platform's wallets, per chain
    "suspense": ("asset", "DEBIT"),  # money that arrived and is not yet explained
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


def _checked(journal: Journal) -> Journal:
    check_balanced(journal)
    return journal


def transfer_hold_id(transaction_id: str) -> str:
    """The hold a transfer's reservation places (completed by its posting)."""
    return f"txn:{transaction_id}"


def card_hold_id(tenant: str, transaction_id: str) -> str:
    """The hold a card authorization places (completed by its capture)."""
    return f"card:{tenant}/{transaction_id}"


def transaction_completed(
    *,
    tenant: str,
    transaction_id: str,
    account_id: str,
    direction: Side,
    units: int,
    currency: str,
    exponent: int,
    rail: str,
    counterparty_account_id: str | None = None,
    chain: str | None = None,
) -> Journal:
    """A completed money movement; money out completes the transfer's hold.

    Money out (DEBIT) reduces what we owe the customer and what we hold at the rail;
    money in (CREDIT) the reverse; a book transfer moves between two customers. Crypto sent
    on a chain leaves that chain's custody account (where its deposits arrived).
    """
    amount = abs(units)
    customer = account("customer", tenant, account_id, currency)
    if counterparty_account_id:
        other = account("customer", tenant, counterparty_account_id, currency)
        debit, credit = (customer, other) if direction == "DEBIT" else (other, customer)
    else:
        if rail == "CRYPTO" and chain is not None:
            rail_account = account("custody", tenant, chain, currency)
        else:
            rail_account = account("clearing", tenant, rail.lower(), currency)
        debit, credit = (customer, rail_account) if direction == "DEBIT" else (rail_account, customer)
    return _checked(Journal(
        reference_id=f"txn:{transaction_id}",
        description=f"transaction {transaction_id} completed ({direction.lower()})",
        lines=_pair(debit, credit, amount, currency, exponent),
        completes_hold=transfer_hold_id(transaction_id) if direction == "DEBIT" else None,
    ))  # fmt: skip


def bank_transaction(
    *, tenant: str, provider: str, transaction_id: str, account_id: str, direction: Side, units: int,
    currency: str, exponent: int,
) -> Journal:  # fmt: skip
    """A booked bank movement a provider reported: a credit raises what we owe the customer
    against the money now held at the provider; a debit lowers both."""
    customer = account("customer", tenant, account_id, currency)
    clearing = account("clearing", tenant, provider.lower(), currency)
    debit, credit = (clearing, customer) if direction == "CREDIT" else (customer, clearing)
    return _checked(Journal(
        f"bank:{tenant}/{provider.lower()}:{transaction_id}",
        f"{provider} bank {direction.lower()} {transaction_id}",
        _pair(debit, credit, abs(units), currency, exponent),
    ))  # fmt: skip


def card_movement(
    *, tenant: str, provider: str, transaction_id: str, provider_reference: str, account_id: str,
    status: str, direction: Side, units: int, currency: str, exponent: int,
) -> Journal | None:  # fmt: skip
    """A card capture, load or refund; None for what posts nothing (authorizations hold,
    reversals and declines release: those are holds, not postings).

    A capture (money out) completes the authorization's hold. A load (a captured
    credit) funds the account from the card acquirer. A refund is the capture's
    reversing entry for the refunded amount: the same accounts, the other sides.
    """
    if status not in ("CAPTURED", "REFUNDED"):
        return None
    customer = account("customer", tenant, account_id, currency)
    card = account("clearing", tenant, f"card_{provider.lower()}", currency)
    if status == "CAPTURED" and direction == "DEBIT":
        return _checked(Journal(
            f"card:{tenant}/{provider_reference}", f"card capture {provider_reference} of {transaction_id}",
            _pair(customer, card, abs(units), currency, exponent),
            completes_hold=card_hold_id(tenant, transaction_id),
        ))  # fmt: skip
    label = "refund" if status == "REFUNDED" else "load"
    return _checked(Journal(
        f"card:{tenant}/{provider_reference}", f"card {label} {provider_reference} of {transaction_id}",
        _pair(card, customer, abs(units), currency, exponent),
    ))  # fmt: skip


def crypto_deposit(
    *, tenant: str, chain: str, tx_hash: str, log_index: int | None, account_id: str, units: int,
    asset: str, decimals: int, block_hash: str,
) -> Journal:  # fmt: skip
    """A confirmed inbound chain transfer: the customer is owed what arrived in custody. The block
    is part of the reference: a deposit reorged out is reversed, and the same transfer mined again
    in another block is a new deposit."""
    position = f"{tx_hash}:{-1 if log_index is None else log_index}"
    return _checked(Journal(
        f"chain:{tenant}/{chain}:{position}:{account_id}@{block_hash}",
        f"{asset} deposit on {chain} {position}",
        _pair(account("custody", tenant, chain, asset), account("customer", tenant, account_id, asset),
              units, asset, decimals),
    ))  # fmt: skip


def fee_assessed(
    *, tenant: str, fee_id: str, account_id: str, units: int, currency: str, exponent: int,
    tier: str = "platform",
) -> Journal:  # fmt: skip
    """A fee charged to a customer, recognised as revenue."""
    return _checked(Journal(
        reference_id=f"fee:{fee_id}",
        description=f"{tier} fee {fee_id}",
        lines=_pair(
            account("customer", tenant, account_id, currency),
            account("fee_revenue", tenant, tier, currency),
            units,
            currency,
            exponent,
        ),
    ))  # fmt: skip


def fees_charged(
    *,
    tenant: str,
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
            credits[account("network_fees", tenant, (chain or "unknown").lower(), currency)] += units
        else:
            credits[account("fee_revenue", tenant, tier.lower(), currency)] += units
    total = sum(credits.values())
    return _checked(Journal(
        reference_id=f"fee:{fee_id}",
        description=f"fees {fee_id}",
        lines=(
            Line(account("customer", tenant, account_id, currency), "DEBIT", total, currency, exponent),
            *(Line(code, "CREDIT", units, currency, exponent) for code, units in sorted(credits.items())),
        ),
    ))  # fmt: skip


def fx_conversion(
    *,
    tenant: str,
    conversion_id: str,
    account_id: str,
    sold_units: int,
    sold_currency: str,
    sold_exponent: int,
    bought_units: int,
    bought_currency: str,
    bought_exponent: int,
    order_id: str | None = None,
) -> Journal:
    """A conversion through the platform's FX positions: each currency balances on its own.
    It completes the order's hold on the sold currency."""
    lines = _pair(
        account("customer", tenant, account_id, sold_currency),
        account("fx_position", tenant, "platform", sold_currency),
        sold_units,
        sold_currency,
        sold_exponent,
    ) + _pair(
        account("fx_position", tenant, "platform", bought_currency),
        account("customer", tenant, account_id, bought_currency),
        bought_units,
        bought_currency,
        bought_exponent,
    )
    hold = fx_hold_id(order_id) if order_id else None
    return _checked(
        Journal(f"fx:{conversion_id}", f"fx conversion {conversion_id}", lines, completes_hold=hold)
    )


def fx_hold_id(order_id: str) -> str:
    """The hold an FX order places on the sold currency (completed by its conversion)."""
    return f"fx:{order_id}"


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
