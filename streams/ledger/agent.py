"""The ledger agent: completed transactions, assessed fees, FX conversions, booked bank
movements, card captures, loads and refunds, confirmed crypto deposits and the gas our
outbound chain transactions paid become balanced journal entries.

Pure: no state. A journal's `reference_id` (`txn:<id>`, `fee:<fee id>`,
`fx:<conversion id>`) and its id (UUIDv5 of the reference and the agent) are
deterministic, so reprocessing emits the same journal and the ledger sink ignores
the repeat. A completed FX transaction is not posted from the transaction topic:
its conversion posts both legs through the FX position accounts.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from streams.base import BatchHandler, Output, Result
from streams.fees.calc import FeeError, gas_of, network_fee
from streams.fees.schedule import NativeAsset
from streams.ledger.postings import (
    bank_transaction,
    card_movement,
    crypto_deposit,
    fees_charged,
    fx_conversion,
    gas_paid,
    reversal,
    transaction_completed,
)
from streams.pricing import load_pricing
from topics.currencies import FIAT_ONLY, CurrencyError, CurrencyRegistry
from topics.events import Event, derived_event_id, derived_metadata
from topics.journals import Journal, PostingError, journal_entry_id, journal_record
from topics.money import InexactValue, money_parts
from topics.names import (
    BANKING_TRANSACTION_RECEIVED_V1,
    BILLING_FEE_ASSESSED_V1,
    CARDS_TRANSACTION_RECEIVED_V1,
    CRYPTO_WALLET_TRANSFER_CONFIRMED_V1,
    CRYPTO_WALLET_TRANSFER_REORGED_V1,
    FX_CONVERSION_EXECUTED_V1,
    LEDGER_JOURNAL_POSTED_V1,
    PAYMENTS_TRANSACTION_COMPLETED_V1,
)
from topics.settings import Settings

COMPLETED = PAYMENTS_TRANSACTION_COMPLETED_V1
FEES = BILLING_FEE_ASSESSED_V1
CONVERSIONS = FX_CONVERSION_EXECUTED_V1
BANK = BANKING_TRANSACTION_RECEIVED_V1
CARDS = CARDS_TRANSACTION_RECEIVED_V1
CHAIN_CONFIRMED = CRYPTO_WALLET_TRANSFER_CONFIRMED_V1
CHAIN_REORGED = CRYPTO_WALLET_TRANSFER_REORGED_V1
POSTED = LEDGER_JOURNAL_POSTED_V1
AGENT = "ledger_agent"


def journal_for(
    topic: str,
    record: dict[str, Any],
    registry: CurrencyRegistry = FIAT_ONLY,
    natives: Mapping[str, NativeAsset] | None = None,
) -> Journal | None:
    """The journal an event posts, or None when it posts nothing.

    Fiat amounts are checked against ISO 4217 here; crypto decimals against the asset
    table where the ledger sink writes them (it holds the registry's rows). `natives` is each
    chain's native asset, in which gas is paid (default: the pricing file's `[fees.native_assets]`).
    """
    tenant = record["metadata"]["tenant_id"]
    if topic == COMPLETED:
        if record["transaction_type"] == "FX":
            return None
        units, currency, exponent = _money(record["amount"], registry)
        return transaction_completed(
            tenant=tenant,
            transaction_id=record["transaction_id"],
            account_id=record["account_id"],
            direction=record["direction"],
            units=units,
            currency=currency,
            exponent=exponent,
            rail=record.get("rail") or record["transaction_type"],
            counterparty_account_id=record.get("counterparty_account_id"),
            chain=_chain_of(record["amount"]),
        )
    if topic == FEES:
        units, currency, exponent = _money(record["total"], registry)
        lines = []
        for line in record["lines"]:
            line_units, line_currency, _ = money_parts(line["amount"])
            if line_currency != currency:
                raise PostingError(f"fee {record['fee_id']}: a {line_currency} line in a {currency} fee")
            lines.append((line["tier"], line_units))
        if sum(u for _, u in lines) != units:
            raise PostingError(f"fee {record['fee_id']}: lines do not add up to the total {units}")
        if units == 0:
            return None
        return fees_charged(
            tenant=tenant,
            fee_id=str(record["fee_id"]),
            account_id=record["account_id"],
            lines=lines,
            currency=currency,
            exponent=exponent,
            chain=record["total"].get("chain"),
        )
    if topic == CONVERSIONS:
        sold, sold_currency, sold_exponent = _money(record["sold"], registry)
        bought, bought_currency, bought_exponent = _money(record["bought"], registry)
        return fx_conversion(
            tenant=tenant,
            conversion_id=str(record["conversion_id"]),
            account_id=record["account_id"],
            sold_units=sold,
            sold_currency=sold_currency,
            sold_exponent=sold_exponent,
            bought_units=bought,
            bought_currency=bought_currency,
            bought_exponent=bought_exponent,
            order_id=record.get("order_id"),
        )
    if topic == BANK:
        if record["status"] != "POSTED":
            return None  # pending movements are not money yet; cancelled ones never were
        units, currency, exponent = _money(record["amount"], registry)
        return bank_transaction(
            tenant=tenant,
            provider=record["provider"],
            transaction_id=record["transaction_id"],
            account_id=record["account_id"],
            direction=record["direction"],
            units=units,
            currency=currency,
            exponent=exponent,
        )
    if topic == CARDS:
        units, currency, exponent = _money(record["amount"], registry)
        return card_movement(
            tenant=tenant,
            provider=record["provider"],
            transaction_id=record["transaction_id"],
            provider_reference=record["provider_reference"],
            account_id=record["account_id"],
            status=record["status"],
            direction=record["direction"],
            units=units,
            currency=currency,
            exponent=exponent,
        )
    if topic == CHAIN_CONFIRMED:
        if record["transfer"]["direction"] != "INBOUND":
            # money out posts through its transfer's lifecycle, never from the chain; the gas
            # its transaction paid posts from here
            return _gas(tenant, record, natives)
        return _deposit(tenant, record, registry)
    if topic == CHAIN_REORGED:
        if not record.get("was_confirmed"):
            return None  # only detected: nothing was posted
        if record["transfer"]["direction"] != "INBOUND":
            gas = _gas(tenant, record, natives)
            return reversal(gas) if gas is not None else None
        return reversal(_deposit(tenant, record, registry))
    return None


def _chain_of(amount: dict[str, Any]) -> str | None:
    """The chain of a crypto amount (None for fiat, and for crypto held only in the ledger)."""
    chain = amount.get("chain")
    return None if chain in (None, "ledger") else str(chain)


def _deposit(tenant: str, record: dict[str, Any], registry: CurrencyRegistry) -> Journal:
    transfer = record["transfer"]
    units, asset, decimals = _money(transfer["amount"], registry)
    return crypto_deposit(
        tenant=tenant,
        chain=transfer["chain"],
        tx_hash=transfer["tx_hash"],
        log_index=transfer.get("log_index"),
        account_id=record["account_id"],
        units=units,
        asset=asset,
        decimals=decimals,
        block_hash=transfer["block_hash"],
    )


def _gas(tenant: str, record: dict[str, Any], natives: Mapping[str, NativeAsset] | None) -> Journal | None:
    """The gas an outbound transfer's transaction paid, or None when the event does not say or it
    came to nothing. A chain with no configured native asset refuses the event: the gas is money
    that left custody, and its asset and decimals are never guessed."""
    transfer = record["transfer"]
    gas = gas_of(transfer)
    if gas is None:
        return None
    wei = network_fee(gas)
    if wei == 0:
        return None
    native = (natives if natives is not None else configured_natives()).get(transfer["chain"])
    if native is None:
        raise PostingError(f"no native asset configured for chain {transfer['chain']!r}: cannot post its gas")
    return gas_paid(
        tenant=tenant,
        chain=transfer["chain"],
        tx_hash=transfer["tx_hash"],
        units=wei,
        asset=native.asset,
        decimals=native.decimals,
        block_hash=transfer["block_hash"],
    )


@cache
def configured_natives() -> dict[str, NativeAsset]:
    """Each chain's native asset, from the pricing file (`[fees.native_assets]`)."""
    return dict(load_pricing(Settings().pricing_file).fees.native_assets)


def _money(amount: dict[str, Any], registry: CurrencyRegistry) -> tuple[int, str, int]:
    units, currency, exponent = money_parts(amount)
    if registry.is_fiat(currency):
        registry.check(currency, exponent)
    elif "asset" not in amount:
        raise PostingError(f"{currency} is not an ISO 4217 currency")
    return units, currency, exponent


class LedgerHandler(BatchHandler):
    """Args:
    natives: each chain's native asset, in which outbound transactions pay gas (default: the
        pricing file's).
    """

    name = AGENT
    topics = (COMPLETED, FEES, CONVERSIONS, BANK, CARDS, CHAIN_CONFIRMED, CHAIN_REORGED)
    outputs = (POSTED,)

    def __init__(self, natives: Mapping[str, NativeAsset] | None = None) -> None:
        self.natives = dict(natives) if natives is not None else configured_natives()

    def handle(self, events: list[Event]) -> Result:
        result = Result()
        for event in events:
            record, meta = event.record, event.record["metadata"]
            try:
                journal = journal_for(event.topic, record, natives=self.natives)
            except (PostingError, CurrencyError, FeeError, InexactValue, KeyError, TypeError) as e:
                result.refused.append((event, f"cannot post {_subject(record)}: {e}"))
                continue
            if journal is None:
                continue
            metadata = derived_metadata(
                meta,
                "ledger.journal.posted",
                source="streams.ledger",
                event_id=derived_event_id(journal.reference_id, AGENT, "posted"),
            )
            result.outputs.append(
                Output(
                    POSTED,
                    journal_record(
                        journal,
                        journal_entry_id=journal_entry_id(journal.reference_id),
                        account_id=record["account_id"],
                        metadata=metadata,
                    ),
                )
            )
        return result


def _subject(record: dict[str, Any]) -> str:
    for key in ("transaction_id", "fee_id", "conversion_id"):
        if record.get(key):
            return str(record[key])
    return "event"
