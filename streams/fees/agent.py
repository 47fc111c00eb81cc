"""The fees agent: every chargeable event gets its fee breakdown, one event per currency.

Chargeable events and their kind:
- `payments.transaction.completed.v1`: TRANSFER and BANK are `transfer`; CRYPTO
  paid in fiat is `onramp` (money out, DEBIT) or `offramp` (money in, CREDIT).
  CARD, FX and crypto-denominated CRYPTO transactions are charged from their own
  topics below, never twice.
- `cards.transaction.received.v1`: a CAPTURED credit is a `card_load`.
- `crypto.wallet.transfer.confirmed.v1`: `crypto_transfer`; an OUTBOUND one with
  gas figures also carries the NETWORK tier (the gas the platform paid).
- `fx.conversion.executed.v1`: `fx`, on the amount sold.
Anything else is not chargeable and produces nothing. Fee ids are derived from
the source event and the currency, so reprocessing yields the same fees.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from streams.base import BatchHandler, Output, Result
from streams.fees.calc import Assessment, Chargeable, FeeError, assess, gas_of
from streams.fees.schedule import FeeBook, ScheduleError
from topics.events import Event, derived_event_id, derived_metadata
from topics.money import InexactValue, money_parts, money_record
from topics.names import (
    BILLING_FEE_ASSESSED_V1,
    CARDS_TRANSACTION_RECEIVED_V1,
    CRYPTO_WALLET_TRANSFER_CONFIRMED_V1,
    FX_CONVERSION_EXECUTED_V1,
    PAYMENTS_TRANSACTION_COMPLETED_V1,
)

COMPLETED = PAYMENTS_TRANSACTION_COMPLETED_V1
CARDS = CARDS_TRANSACTION_RECEIVED_V1
CHAIN_CONFIRMED = CRYPTO_WALLET_TRANSFER_CONFIRMED_V1
FX_EXECUTED = FX_CONVERSION_EXECUTED_V1
ASSESSED = BILLING_FEE_ASSESSED_V1
AGENT = "fees_agent"


def chargeable(topic: str, record: dict[str, Any]) -> Chargeable | None:
    """What an event is charged on, or None when it is not chargeable here."""
    if topic == COMPLETED:
        units, currency, exponent = money_parts(record["amount"])
        crypto_amount = "asset" in record["amount"]
        kind = {"TRANSFER": "transfer", "BANK": "transfer"}.get(record["transaction_type"])
        if record["transaction_type"] == "CRYPTO" and not crypto_amount:
            kind = "onramp" if record["direction"] == "DEBIT" else "offramp"
        if kind is None:
            return None
        return Chargeable(kind, units, currency, exponent, rail=record.get("rail"))
    if topic == CARDS:
        if record["status"] != "CAPTURED" or record["direction"] != "CREDIT":
            return None
        units, currency, exponent = money_parts(record["amount"])
        return Chargeable("card_load", units, currency, exponent, rail="card")
    if topic == CHAIN_CONFIRMED:
        transfer = record["transfer"]
        units, currency, exponent = money_parts(transfer["amount"])
        return Chargeable(
            "crypto_transfer",
            units,
            currency,
            exponent,
            rail=transfer["chain"],
            chain=transfer["chain"],
            gas=gas_of(transfer),
            outbound=transfer["direction"] == "OUTBOUND",
        )
    if topic == FX_EXECUTED:
        units, currency, exponent = money_parts(record["sold"])
        return Chargeable("fx", units, currency, exponent)
    return None


def transaction_id_of(topic: str, record: dict[str, Any]) -> str | None:
    if topic in (COMPLETED, CARDS):
        return str(record["transaction_id"])
    if topic == CHAIN_CONFIRMED:
        t = record["transfer"]
        return f"{t['chain']}:{t['tx_hash']}" + (
            f":{t['log_index']}" if t.get("log_index") is not None else ""
        )
    if topic == FX_EXECUTED:
        return str(record["conversion_id"])
    return None


def fee_record(
    assessment: Assessment, *, event: Event, chain: str | None, metadata: dict[str, Any], fee_id: str
) -> dict[str, Any]:
    """The `FeeAssessed` record of one assessment."""
    chain_name = chain or "ledger"
    return {
        "metadata": metadata,
        "account_id": event.record["account_id"],
        "fee_id": fee_id,
        "source_event_id": str(event.record["metadata"]["event_id"]),
        "transaction_id": transaction_id_of(event.topic, event.record),
        "fee_config_version": assessment.schedule,
        "total": money_record(assessment.total, assessment.currency, assessment.exponent, chain_name),
        "lines": [
            {
                "tier": line.tier,
                "category": line.category,
                "method": line.method,
                "amount": money_record(line.units, line.currency, line.exponent, chain_name),
                "provider": line.provider,
            }
            for line in assessment.lines
        ],
    }


class FeesHandler(BatchHandler):
    name = AGENT
    topics = (COMPLETED, CARDS, CHAIN_CONFIRMED, FX_EXECUTED)
    outputs = (ASSESSED,)

    def __init__(self, book: FeeBook) -> None:
        self.book = book

    def handle(self, events: list[Event]) -> Result:
        result = Result()
        for event in events:
            try:
                result.outputs.extend(self.assess(event))
            except (FeeError, ScheduleError, InexactValue, KeyError, TypeError) as e:
                result.refused.append((event, f"cannot assess fees: {type(e).__name__}: {e}"))
        return result

    def assess(self, event: Event) -> list[Output]:
        record, meta = event.record, event.record["metadata"]
        charge = chargeable(event.topic, record)
        if charge is None:
            return []
        occurred: datetime = meta["occurred_at"]
        schedule = self.book.for_event(meta["tenant_id"], occurred)
        native = None
        if charge.chain is not None and charge.chain in self.book.native_assets:
            asset = self.book.native_assets[charge.chain]
            native = (asset.asset, asset.decimals)
        outputs = []
        for assessment in assess(charge, schedule, native):
            source = str(meta["event_id"])
            fee_id = derived_event_id(source, AGENT, assessment.currency)
            metadata = derived_metadata(
                meta,
                "billing.fee.assessed",
                source="streams.fees",
                event_id=derived_event_id(source, AGENT, f"assessed:{assessment.currency}"),
            )
            outputs.append(
                Output(
                    ASSESSED,
                    fee_record(assessment, event=event, chain=charge.chain, metadata=metadata, fee_id=fee_id),
                )
            )
        return outputs
