"""The ledger agent's posting recipes: which journal each kind of money movement posts.

Plain functions over plain data. The journal, its lines, ledger account codes and the
balance rules are the contract of `ledger.journal.posted.v1`, in `topics.journals`; the
recipes here decide, for each event, which accounts are debited and credited.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from topics.journals import (
    Journal,
    Line,
    Side,
    account,
    account_kind,
    card_hold_id,
    check_balanced,
    fx_hold_id,
    transfer_hold_id,
)


def _pair(debit: str, credit: str, units: int, currency: str, exponent: int) -> tuple[Line, Line]:
    return (
        Line(debit, "DEBIT", units, currency, exponent),
        Line(credit, "CREDIT", units, currency, exponent),
    )


def _checked(journal: Journal) -> Journal:
    check_balanced(journal)
    return journal


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
    return _checked(
        Journal(
            reference_id=f"txn:{transaction_id}",
            description=f"transaction {transaction_id} completed ({direction.lower()})",
            lines=_pair(debit, credit, amount, currency, exponent),
            completes_hold=transfer_hold_id(transaction_id) if direction == "DEBIT" else None,
        )
    )


def bank_transaction(
    *,
    tenant: str,
    provider: str,
    transaction_id: str,
    account_id: str,
    direction: Side,
    units: int,
    currency: str,
    exponent: int,
) -> Journal:
    """A booked bank movement a provider reported: a credit raises what we owe the customer
    against the money now held at the provider; a debit lowers both."""
    customer = account("customer", tenant, account_id, currency)
    clearing = account("clearing", tenant, provider.lower(), currency)
    debit, credit = (clearing, customer) if direction == "CREDIT" else (customer, clearing)
    return _checked(
        Journal(
            f"bank:{tenant}/{provider.lower()}:{transaction_id}",
            f"{provider} bank {direction.lower()} {transaction_id}",
            _pair(debit, credit, abs(units), currency, exponent),
        )
    )


def card_movement(
    *,
    tenant: str,
    provider: str,
    transaction_id: str,
    provider_reference: str,
    account_id: str,
    status: str,
    direction: Side,
    units: int,
    currency: str,
    exponent: int,
) -> Journal | None:
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
        return _checked(
            Journal(
                f"card:{tenant}/{provider_reference}",
                f"card capture {provider_reference} of {transaction_id}",
                _pair(customer, card, abs(units), currency, exponent),
                completes_hold=card_hold_id(tenant, transaction_id),
            )
        )
    label = "refund" if status == "REFUNDED" else "load"
    return _checked(
        Journal(
            f"card:{tenant}/{provider_reference}",
            f"card {label} {provider_reference} of {transaction_id}",
            _pair(card, customer, abs(units), currency, exponent),
        )
    )


def crypto_deposit(
    *,
    tenant: str,
    chain: str,
    tx_hash: str,
    log_index: int | None,
    account_id: str,
    units: int,
    asset: str,
    decimals: int,
    block_hash: str,
) -> Journal:
    """A confirmed inbound chain transfer: the customer is owed what arrived in custody. The block
    is part of the reference: a deposit reorged out is reversed, and the same transfer mined again
    in another block is a new deposit."""
    position = f"{tx_hash}:{-1 if log_index is None else log_index}"
    return _checked(
        Journal(
            f"chain:{tenant}/{chain}:{position}:{account_id}@{block_hash}",
            f"{asset} deposit on {chain} {position}",
            _pair(
                account("custody", tenant, chain, asset),
                account("customer", tenant, account_id, asset),
                units,
                asset,
                decimals,
            ),
        )
    )


def gas_paid(
    *,
    tenant: str,
    chain: str,
    tx_hash: str,
    units: int,
    asset: str,
    decimals: int,
    block_hash: str,
) -> Journal:
    """The gas one of our outbound transactions paid, in the chain's native asset: it left custody
    as a network expense (`network_fees:<chain>`, which the fees agent's NETWORK tier recovers from
    the customer). The block is part of the reference, as for a deposit: a transaction reorged out
    is reversed, and mined again in another block it paid again."""
    return _checked(
        Journal(
            f"gas:{tenant}/{chain}:{tx_hash}@{block_hash}",
            f"{asset} gas of {tx_hash} on {chain}",
            _pair(
                account("network_fees", tenant, chain.lower(), asset),
                account("custody", tenant, chain, asset),
                units,
                asset,
                decimals,
            ),
        )
    )


def fee_assessed(
    *,
    tenant: str,
    fee_id: str,
    account_id: str,
    units: int,
    currency: str,
    exponent: int,
    tier: str = "platform",
) -> Journal:
    """A fee charged to a customer, recognised as revenue."""
    return _checked(
        Journal(
            reference_id=f"fee:{fee_id}",
            description=f"{tier} fee {fee_id}",
            lines=_pair(
                account("customer", tenant, account_id, currency),
                account("fee_revenue", tenant, tier, currency),
                units,
                currency,
                exponent,
            ),
        )
    )


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
    return _checked(
        Journal(
            reference_id=f"fee:{fee_id}",
            description=f"fees {fee_id}",
            lines=(
                Line(account("customer", tenant, account_id, currency), "DEBIT", total, currency, exponent),
                *(Line(code, "CREDIT", units, currency, exponent) for code, units in sorted(credits.items())),
            ),
        )
    )


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
