"""The AML velocity agent: sliding windows per account in Redis, rules as data, flags and blocks.

Inputs and how each becomes a movement (IN or OUT) of an account:
- `payments.transfer.requested.v1`: OUT; counterparty the beneficiary (or the
  destination account). A CRYPTO transfer to a sanctioned address is flagged and
  blocked (`compliance.transaction.blocked.v1`, which the status agent applies:
  Failed before the reservation, Compensating after).
- `banking.transaction.received.v1`: DEBIT is OUT, CREDIT is IN; CANCELLED ones are skipped.
- `cards.transaction.received.v1`: CAPTURED ones only.
- `crypto.wallet.transfer.detected.v1`: INBOUND is IN, OUTBOUND is OUT; both
  addresses are screened (a hit is flagged; there is no transaction to block).
- `crypto.wallet.transfer.reorged.v1`: a transfer reorged off the chain after its
  confirmation (its deposit was posted, and is being reversed) is flagged for review.

Redis down: the batch is retried with backoff (the runtime treats Redis connection
errors as transient), so velocity is never silently skipped and the partition
waits. Sanctions screening needs no Redis (the list is in memory) and fails
closed: an empty or unreadable list stops the agent from starting. Flag ids are
derived from the triggering event and the rule, so a redelivery or a replay
emits the same flags, which the sink stores once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from streams.aml.rules import Direction, Hit, Movement, RuleBook, evaluate
from streams.aml.windows import Windows
from streams.base import BatchHandler, Output, Result
from topics.events import Event, derived_event_id, derived_metadata, to_micros
from topics.money import InexactValue, money_parts
from topics.names import (
    BANKING_TRANSACTION_RECEIVED_V1,
    CARDS_TRANSACTION_RECEIVED_V1,
    COMPLIANCE_AML_FLAGGED_V1,
    COMPLIANCE_TRANSACTION_BLOCKED_V1,
    CRYPTO_WALLET_TRANSFER_DETECTED_V1,
    CRYPTO_WALLET_TRANSFER_REORGED_V1,
    PAYMENTS_TRANSFER_REQUESTED_V1,
)
from topics.settings import Settings

REQUESTED = PAYMENTS_TRANSFER_REQUESTED_V1
BANKING = BANKING_TRANSACTION_RECEIVED_V1
CARDS = CARDS_TRANSACTION_RECEIVED_V1
DETECTED = CRYPTO_WALLET_TRANSFER_DETECTED_V1
REORGED = CRYPTO_WALLET_TRANSFER_REORGED_V1
REORG_RULE = "reorg-after-confirmation"
REORG_SCORE = 70
FLAGGED = COMPLIANCE_AML_FLAGGED_V1
BLOCKED = COMPLIANCE_TRANSACTION_BLOCKED_V1
AGENT = "aml_agent"
SANCTIONS_RULE = "sanctioned-address"


@dataclass(frozen=True)
class Signal:
    """An event reduced to what the rules look at."""

    account_id: str
    currency: str
    units: int
    direction: Direction
    counterparty: str | None
    addresses: tuple[str | None, ...] = ()
    blockable: str | None = None
    """The transaction a sanctions hit blocks (a transfer request's id)."""


def signal_of(topic: str, record: dict[str, Any]) -> Signal | None:
    if topic == REQUESTED:
        units, currency, _ = money_parts(record["amount"])
        beneficiary = record.get("beneficiary_reference")
        crypto = record["rail"] == "CRYPTO"
        return Signal(
            record["account_id"],
            currency,
            abs(units),
            "OUT",
            beneficiary or record.get("destination_account_id"),
            (beneficiary,) if crypto else (),
            str(record["transfer_id"]) if crypto else None,
        )
    if topic == BANKING:
        if record["status"] == "CANCELLED":
            return None
        units, currency, _ = money_parts(record["amount"])
        direction: Direction = "OUT" if record["direction"] == "DEBIT" else "IN"
        return Signal(
            record["account_id"], currency, abs(units), direction, record.get("counterparty_reference")
        )
    if topic == CARDS:
        if record["status"] != "CAPTURED":
            return None
        units, currency, _ = money_parts(record["amount"])
        direction = "OUT" if record["direction"] == "DEBIT" else "IN"
        return Signal(record["account_id"], currency, abs(units), direction, record.get("merchant_name"))
    if topic == DETECTED:
        t = record["transfer"]
        units, currency, _ = money_parts(t["amount"])
        inbound = t["direction"] == "INBOUND"
        other = t["from_address"] if inbound else t["to_address"]
        return Signal(
            record["account_id"],
            currency,
            abs(units),
            "IN" if inbound else "OUT",
            other.lower(),
            (t["from_address"], t["to_address"]),
        )
    return None


def _ms(at: datetime) -> int:
    return to_micros(at) // 1_000


class AmlHandler(BatchHandler):
    """Args:
    settings: Redis and the environment.
    book: rulesets and the sanctions list.
    """

    name = AGENT
    topics = (REQUESTED, BANKING, CARDS, DETECTED, REORGED)
    outputs = (FLAGGED, BLOCKED)

    def __init__(self, settings: Settings, book: RuleBook) -> None:
        self.book = book
        self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        self.windows = Windows(self.redis, settings.environment, book.horizon_ms)

    def handle(self, events: list[Event]) -> Result:
        result = Result()
        observed: list[tuple[Event, Signal]] = []
        for event in events:
            if event.topic == REORGED:
                if event.record.get("was_confirmed"):
                    result.outputs.append(self._reorged(event))
                continue
            try:
                signal = signal_of(event.topic, event.record)
            except (InexactValue, KeyError, TypeError) as e:
                result.refused.append((event, f"cannot screen: {type(e).__name__}: {e}"))
                continue
            if signal is not None:
                observed.append((event, signal))
        for event, signal in observed:  # sanctions first: they need no window
            hit = self.book.sanctioned(*signal.addresses)
            if hit is not None:
                result.outputs.extend(self._sanctioned(event, signal, hit))
        observations = self.windows.observe_many(
            [
                (
                    s.account_id,
                    s.currency,
                    str(e.record["metadata"]["event_id"]),
                    _ms(e.record["metadata"]["occurred_at"]),
                    s.units,
                    s.direction,
                    s.counterparty,
                )
                for e, s in observed
            ]
        )
        for (event, signal), seen in zip(observed, observations, strict=True):
            meta = event.record["metadata"]
            current = Movement(
                str(meta["event_id"]), _ms(meta["occurred_at"]), signal.units, signal.direction
            )
            for ruleset, rule in self.book.for_event(signal.currency, meta["tenant_id"]):
                found = evaluate(
                    rule, ruleset, current, seen.movements, seen.counterparties_first_seen, signal.currency
                )
                if found is not None:
                    result.outputs.append(self._flag(event, signal, found))
        return result

    def _flag(self, event: Event, signal: Signal, hit: Hit) -> Output:
        meta = event.record["metadata"]
        source = str(meta["event_id"])
        return Output(
            FLAGGED,
            {
                "metadata": self._metadata(
                    meta, "compliance.aml.flagged", derived_event_id(source, AGENT, hit.rule_id)
                ),
                "account_id": signal.account_id,
                "flag_id": derived_event_id(source, AGENT, f"flag:{hit.rule_id}"),
                "rule_id": hit.rule_id,
                "rule_version": f"{hit.ruleset}@v{hit.version}",
                "risk_score": hit.score,
                "window": hit.window,
                "evidence": hit.evidence,
                "trigger_event_id": source,
                "trigger_topic": event.topic,
            },
        )

    def _reorged(self, event: Event) -> Output:
        """Money posted on a confirmation that the chain no longer holds: someone must look."""
        transfer = event.record["transfer"]
        units, asset, _ = money_parts(transfer["amount"])
        signal = Signal(event.record["account_id"], asset, units, "IN", transfer["from_address"])
        hit = Hit(
            REORG_RULE,
            "chain",
            1,
            REORG_SCORE,
            "",
            {
                "chain": transfer["chain"],
                "tx_hash": transfer["tx_hash"],
                "block_hash": transfer["block_hash"],
                "replaced_by": event.record.get("replaced_by_block_hash") or "",
                "units": str(units),
                "asset": asset,
            },
        )
        return self._flag(event, signal, hit)

    def _sanctioned(self, event: Event, signal: Signal, address: str) -> list[Output]:
        meta = event.record["metadata"]
        source = str(meta["event_id"])
        hit = Hit(
            SANCTIONS_RULE,
            "sanctions",
            1,
            self.book.sanctions_score,
            "",
            {"address": address, "list": self.book.sanctions_list, "currency": signal.currency},
        )
        outputs = [self._flag(event, signal, hit)]
        if signal.blockable is not None:
            outputs.append(
                Output(
                    BLOCKED,
                    {
                        "metadata": self._metadata(
                            meta, "compliance.transaction.blocked", derived_event_id(source, AGENT, "blocked")
                        ),
                        "account_id": signal.account_id,
                        "transaction_id": signal.blockable,
                        "rule_id": SANCTIONS_RULE,
                        "reason": f"beneficiary {address} is on the sanctions list",
                        "address": address,
                    },
                )
            )
        return outputs

    @staticmethod
    def _metadata(meta: dict[str, Any], event_type: str, event_id: str) -> dict[str, Any]:
        return derived_metadata(meta, event_type, source="streams.aml", event_id=event_id)

    def close(self) -> None:
        self.redis.close()
