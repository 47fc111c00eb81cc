"""The transaction status agent.

Inputs: `payments.transfer.requested.v1` (creates a transaction, INITIATED),
`payments.transaction.status_reported.v1` (a service or provider reports a status)
and `compliance.transaction.blocked.v1` (a block decision fails or compensates it).
The transaction's current status and version live in PostgreSQL, changed only
here; each batch runs in one database transaction that locks the transactions it
touches. Every applied change is a history row keyed by the event that caused it,
so a redelivered event is recognised and its outputs emitted again with the same
deterministic ids, never applied twice. Illegal or stale reports are refused to
the dead-letter topic with the reason.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg

from streams.base import BatchHandler, Output, Result
from streams.fees.calc import Chargeable, FeeError, assess
from streams.fees.schedule import FeeBook, ScheduleError
from streams.pricing import load_pricing
from streams.status.machine import Applied, Illegal, State, block_target, transition
from streams.status.repository import (
    Change,
    Txn,
    applied_changes,
    lock_transactions,
    parked_reports,
    save,
)
from topics.balances import BalanceAnnouncer
from topics.catalog import load_catalog
from topics.codec import AvroCodec
from topics.currencies import CurrencyRegistry
from topics.database import Database
from topics.events import Event, derived_event_id, new_metadata
from topics.holds import AccountKey, Reservations, Spend, expire
from topics.journals import transfer_hold_id
from topics.money import InexactValue, money_parts, money_record
from topics.names import (
    ACCOUNTS_BALANCE_UPDATED_V1,
    COMPLIANCE_TRANSACTION_BLOCKED_V1,
    PAYMENTS_TRANSACTION_COMPLETED_V1,
    PAYMENTS_TRANSACTION_CREATED_V1,
    PAYMENTS_TRANSACTION_FAILED_V1,
    PAYMENTS_TRANSACTION_STATUS_CHANGED_V1,
    PAYMENTS_TRANSACTION_STATUS_REPORTED_V1,
    PAYMENTS_TRANSFER_REQUESTED_V1,
)
from topics.settings import Settings

REQUESTED = PAYMENTS_TRANSFER_REQUESTED_V1
REPORTED = PAYMENTS_TRANSACTION_STATUS_REPORTED_V1
BLOCKED = COMPLIANCE_TRANSACTION_BLOCKED_V1
CREATED = PAYMENTS_TRANSACTION_CREATED_V1
CHANGED = PAYMENTS_TRANSACTION_STATUS_CHANGED_V1
COMPLETED = PAYMENTS_TRANSACTION_COMPLETED_V1
FAILED = PAYMENTS_TRANSACTION_FAILED_V1
AGENT = "status_agent"
SWEEP_SECONDS = 30.0


@dataclass(frozen=True)
class Move:
    """The event moves the transaction: its new state, and the change to record."""

    txn: Txn
    change: Change


@dataclass(frozen=True)
class Park:
    """A report of a transaction whose request has not been seen yet: kept until it is."""


@dataclass(frozen=True)
class Refuse:
    """The event is refused (dead-lettered) for this reason."""

    reason: str


@dataclass(frozen=True)
class Ignore:
    """Nothing changes: the same request, or the same status, again."""


Decision = Move | Park | Refuse | Ignore


def step_event_id(source: str, to_status: str | None) -> str:
    """The history id of a change: the first step of a source event keeps the plain derived id,
    later steps it caused (VALIDATING, then BALANCE_RESERVED or FAILED) name their status."""
    suffix = "" if to_status is None else f":{to_status}"
    return derived_event_id(source, AGENT, "status_changed" + suffix)


def outputs_for(txn: Txn, change: Change) -> list[Output]:
    """The events one applied change emits (the same for a first delivery and a redelivery)."""

    step = "" if change.event_id == step_event_id(change.source_event_id, None) else f":{change.to_status}"

    def meta(kind: str) -> dict[str, Any]:
        return new_metadata(
            f"payments.transaction.{kind}",
            tenant_id=txn.tenant_id,
            environment=txn.environment,  # type: ignore[arg-type]
            source="streams.status",
            correlation_id=change.correlation_id,
            causation_id=change.source_event_id,
            event_id=derived_event_id(change.source_event_id, AGENT, kind + step),
            occurred_at=change.occurred_at,
        )

    base = {"account_id": txn.account_id, "transaction_id": txn.transaction_id, "version": change.version}
    amount = money_record(txn.amount_units, txn.currency, txn.exponent, chain=txn.chain or "ledger")
    out = []
    if change.from_status is None:
        out.append(
            Output(
                CREATED,
                {
                    "metadata": meta("created"),
                    **base,
                    "transaction_type": txn.transaction_type,
                    "direction": txn.direction,
                    "amount": amount,
                    "counterparty_account_id": txn.counterparty_account_id,
                    "rail": txn.rail,
                },
            )
        )
    out.append(
        Output(
            CHANGED,
            {
                "metadata": meta("status_changed"),
                **base,
                "from_status": change.from_status,
                "to_status": change.to_status,
                "reason": change.reason,
                "provider_update_id": change.provider_update_id,
            },
        )
    )
    if change.to_status == "COMPLETED":
        out.append(
            Output(
                COMPLETED,
                {
                    "metadata": meta("completed"),
                    **base,
                    "transaction_type": txn.transaction_type,
                    "direction": txn.direction,
                    "amount": amount,
                    "counterparty_account_id": txn.counterparty_account_id,
                    "rail": txn.rail,
                },
            )
        )
    elif change.to_status in ("FAILED", "COMPENSATING"):
        out.append(
            Output(
                FAILED,
                {
                    "metadata": meta("failed"),
                    **base,
                    "final_status": change.to_status,
                    "reason": change.reason or change.to_status.lower(),
                    "compensation_required": change.to_status == "COMPENSATING",
                },
            )
        )
    return out


class StatusHandler(BatchHandler):
    """The lifecycle of every transaction; state in PostgreSQL."""

    name = AGENT
    topics = (REQUESTED, REPORTED, BLOCKED)
    outputs = (CREATED, CHANGED, COMPLETED, FAILED)
    outbox_outputs = (ACCOUNTS_BALANCE_UPDATED_V1,)

    def __init__(self, settings: Settings, codec: AvroCodec, fees: FeeBook | None = None) -> None:
        self.settings = settings
        self.codec = codec
        self.fees = fees if fees is not None else load_pricing(settings.pricing_file).fees
        self.balances = BalanceAnnouncer(codec, load_catalog(), settings.environment, "streams.status", AGENT)
        self.db = Database(settings, dict_rows=True)
        self.field_key = settings.field_key()
        """Seals each new transaction's beneficiary (bank account details)."""
        self._swept = 0.0

    def close(self) -> None:
        self.db.close()

    def handle(self, events: list[Event]) -> Result:
        conn = self.db.connection()
        try:
            with conn.transaction():
                return self._handle(conn, events)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            self.db.discard()
            raise

    def _handle(self, conn: psycopg.Connection[dict[str, Any]], events: list[Event]) -> Result:
        txns = lock_transactions(conn, sorted({_transaction_id(e) for e in events}))
        applied = applied_changes(conn, [str(e.record["metadata"]["event_id"]) for e in events])
        requested = [e for e in events if e.topic == REQUESTED and _transaction_id(e) not in txns]
        new_ids = sorted({_transaction_id(e) for e in requested})
        with Reservations(conn, CurrencyRegistry.load(conn)) as reservations:  # placed at the end
            work = _Work(
                txns,
                applied,
                reservations=reservations,
                stored_parked=parked_reports(conn, new_ids),
            )
            reservations.lock(key for key in map(_spender, requested) if key is not None)
            for event in events:
                self._apply(work, event)
        self._write(conn, work)
        now = time.monotonic()
        if now - self._swept > SWEEP_SECONDS:
            for hold in expire(conn):
                work.holds.setdefault(hold, None)
            self._swept = now
        self.balances.holds_changed(conn, work.holds)
        return work.result

    def _apply(self, work: _Work, event: Event) -> None:
        source = str(event.record["metadata"]["event_id"])
        if source in work.applied:  # a redelivery: emit again, change nothing
            for done in work.applied[source]:
                work.result.outputs += outputs_for(work.txns[done.transaction_id], done)
            return
        decision = self._decide(event, source, work.txns)
        if isinstance(decision, Park):
            work.parked.setdefault(_transaction_id(event), {}).setdefault(source, event)
            return
        if isinstance(decision, Refuse):
            work.result.refused.append((event, decision.reason))
            return
        if isinstance(decision, Ignore):
            return
        txn, change = decision.txn, decision.change
        steps = [(txn, change)]
        if change.from_status is None:
            steps += self._validate_and_reserve(work, txn, source, event.record)
        elif change.to_status == "SENT_TO_PROVIDER":
            steps = self._dispatch(work, work.txns[txn.transaction_id], txn, change, source, event)
        for txn, change in steps:
            work.txns[txn.transaction_id] = txn
            work.changes.append(change)
            work.applied.setdefault(source, []).append(change)
            work.result.outputs += outputs_for(txn, change)
            if change.to_status in ("FAILED", "COMPENSATING"):
                hold = transfer_hold_id(txn.transaction_id)
                if work.reservations.release(hold, change.reason or change.to_status):
                    work.holds[hold] = source
        txn, change = steps[0]
        if change.from_status is None:
            work.created[txn.transaction_id] = txn
            for waiting in self._unpark(work, txn.transaction_id):
                self._apply(work, waiting)

    def _validate_and_reserve(
        self,
        work: _Work,
        txn: Txn,
        source: str,
        record: dict[str, Any],
    ) -> list[tuple[Txn, Change]]:
        """INITIATED -> VALIDATING -> BALANCE_RESERVED when the amount plus its fees fits the
        account's available balance (posted - active holds + overdraft limit), else FAILED; a CRYPTO
        transfer without its Travel Rule data (originator and beneficiary) fails before any reservation.

        The batch's requesting accounts were locked together first, so two workers reserving
        against one account take turns, and each sees the other's hold."""
        meta = record["metadata"]
        steps = [self._step(txn, "VALIDATING", source, meta, "validating account, currency and funds")]
        validating = steps[0][0]
        if txn.rail == "CRYPTO" and not record.get("travel_rule"):  # the Travel Rule: nothing reserved
            missing = "TRAVEL_RULE_MISSING: a crypto transfer must carry its originator and beneficiary"
            steps.append(self._step(validating, "FAILED", source, meta, missing))
            return steps
        try:
            fee = self._fee(txn, meta)
        except (FeeError, ScheduleError) as e:
            steps.append(self._step(validating, "FAILED", source, meta, f"FEE_UNAVAILABLE: {e}"))
            return steps
        need = txn.amount_units + fee
        breakdown = f"{txn.amount_units} + fees {fee}"
        refusal = work.reservations.reserve(
            Spend(
                transfer_hold_id(txn.transaction_id),
                txn.tenant_id,
                txn.account_id,
                txn.currency,
                txn.exponent,
                need,
                f"transfer {txn.transaction_id}",
                breakdown,
                txn.correlation_id,
            ),
        )
        if refusal is not None:
            steps.append(self._step(validating, "FAILED", source, meta, refusal))
            return steps
        work.holds[transfer_hold_id(txn.transaction_id)] = source
        reserved = f"reserved {need} ({breakdown}) {txn.currency}"
        steps.append(self._step(validating, "BALANCE_RESERVED", source, meta, reserved))
        return steps

    def _fee(self, txn: Txn, meta: dict[str, Any]) -> int:
        """The fees the transfer will be charged in its own currency, as the fees agent assesses them."""
        schedule = self.fees.for_event(txn.tenant_id, meta["occurred_at"])
        charge = Chargeable("transfer", txn.amount_units, txn.currency, txn.exponent, rail=txn.rail)
        return sum(a.total for a in assess(charge, schedule) if a.currency == txn.currency)

    def _dispatch(
        self,
        work: _Work,
        before: Txn,
        txn: Txn,
        change: Change,
        source: str,
        event: Event,
    ) -> list[tuple[Txn, Change]]:
        """Money leaves for the provider only while its hold stands; the hold then stays until
        the posting completes it or a failure releases it."""
        if not work.reservations.pin(transfer_hold_id(txn.transaction_id)):
            meta = event.record["metadata"]
            return [
                self._step(
                    before, "FAILED", source, meta, "HOLD_EXPIRED: the reservation lapsed before dispatch"
                )
            ]
        return [(txn, change)]

    def _step(
        self, txn: Txn, target: str, source: str, meta: dict[str, Any], reason: str
    ) -> tuple[Txn, Change]:
        """One more step caused by the same source event."""
        moved = replace(txn, status=target, version=txn.version + 1, updated_at=meta["occurred_at"])
        change = Change(
            event_id=step_event_id(source, target),
            transaction_id=txn.transaction_id,
            from_status=txn.status,
            to_status=target,
            reason=reason,
            provider_update_id=None,
            version=moved.version,
            source_event_id=source,
            correlation_id=txn.correlation_id,
            occurred_at=meta["occurred_at"],
        )
        return moved, change

    def _unpark(self, work: _Work, tid: str) -> list[Event]:
        """Events that waited for this transaction, oldest first (stored ones, then this batch's)."""
        stored = [
            Event(
                self.codec.decode(bytes(row["value"]), topic=row["kafka_topic"]),
                row["kafka_topic"],
                row["kafka_partition"],
                row["kafka_offset"],
                bytes(row["kafka_key"]) if row["kafka_key"] is not None else None,
                bytes(row["value"]),
            )
            for row in work.stored_parked.pop(tid, [])
        ]
        if stored:
            work.unparked.add(tid)
        fresh = list(work.parked.pop(tid, {}).values())
        return stored + fresh

    def _decide(self, event: Event, source: str, txns: dict[str, Txn]) -> Decision:
        record, meta = event.record, event.record["metadata"]
        when = meta["occurred_at"]
        if event.topic == REQUESTED:
            tid = record["transfer_id"]
            if tid in txns:
                return Ignore()  # the same transfer requested again: one transaction
            try:
                units, currency, exponent = money_parts(record["amount"])
            except InexactValue as e:
                return Refuse(f"transfer {tid}: {e}")
            if units <= 0:
                return Refuse(f"transfer {tid}: amount must be positive, got {units}")
            txn = Txn(
                transaction_id=tid,
                account_id=record["account_id"],
                tenant_id=meta["tenant_id"],
                environment=meta["environment"],
                transaction_type="TRANSFER",
                direction="DEBIT",
                amount_units=units,
                currency=currency,
                exponent=exponent,
                counterparty_account_id=record["destination_account_id"],
                status="INITIATED",
                version=1,
                correlation_id=meta["correlation_id"],
                created_at=when,
                updated_at=when,
                rail=record["rail"],
                chain=record["amount"].get("chain"),
                beneficiary_reference=record["beneficiary_reference"],
                travel_rule=_travel_rule(record),
            )
            return Move(txn, self._change(txn, None, source, meta, reason="transfer requested"))
        tid = record["transaction_id"]
        found = txns.get(tid)
        if found is None:
            return Park()  # its transfer request has not been seen yet
        txn = found
        if meta["tenant_id"] != txn.tenant_id:
            return Refuse(f"transaction {tid} is not tenant {meta['tenant_id']!r}'s: its report is refused")
        if event.topic == BLOCKED:
            target = block_target(txn.status)
            if target is None:
                return Refuse(
                    f"transaction {tid} is already {txn.status}; block by {record['rule_id']} refused"
                )
            outcome = transition(State(txn.status, txn.version), target)  # type: ignore[arg-type]
            reason: str | None = f"blocked by {record['rule_id']}: {record['reason']}"
            update_id = None
        else:
            outcome = transition(
                State(txn.status, txn.version),  # type: ignore[arg-type]
                record["status"],
                record.get("expected_version"),
            )
            reason, update_id = record.get("reason"), record.get("provider_update_id")
        if isinstance(outcome, Illegal):
            return Refuse(f"transaction {tid}: {outcome.reason}")
        if not isinstance(outcome, Applied):
            return Ignore()  # the same status again: nothing changes
        moved = replace(txn, status=outcome.current.status, version=outcome.current.version, updated_at=when)
        return Move(
            moved, self._change(moved, txn.status, source, meta, reason=reason, provider_update_id=update_id)
        )

    @staticmethod
    def _change(
        txn: Txn,
        previous: str | None,
        source: str,
        meta: dict[str, Any],
        *,
        reason: str | None,
        provider_update_id: str | None = None,
    ) -> Change:
        return Change(
            event_id=step_event_id(source, None),
            transaction_id=txn.transaction_id,
            from_status=previous,
            to_status=txn.status,
            reason=reason,
            provider_update_id=provider_update_id,
            version=txn.version,
            source_event_id=source,
            # a transaction's whole life follows the request that started it, whoever reports a step
            # (a provider's webhook is a new request at the edge; the causation id names it)
            correlation_id=txn.correlation_id,
            occurred_at=meta["occurred_at"],
        )

    def _write(self, conn: psycopg.Connection[dict[str, Any]], work: _Work) -> None:
        touched = {c.transaction_id for c in work.changes} - set(work.created)
        parked = [
            (source, tid, e.topic, e.partition, e.offset, e.key, e.value, e.record["metadata"]["occurred_at"])
            for tid, events in work.parked.items()
            for source, e in events.items()
        ]
        save(
            conn,
            created=[work.txns[t] for t in sorted(work.created)],  # created and moved on in one batch
            moved=[work.txns[t] for t in sorted(touched)],
            changes=work.changes,
            unparked=sorted(work.unparked),
            parked=parked,
            field_key=self.field_key,
        )


@dataclass
class _Work:
    """One batch's view: locked transactions, applied changes, and what to write."""

    txns: dict[str, Txn]
    applied: dict[str, list[Change]]
    reservations: Reservations
    """The batch's reservations: the requesting accounts locked and read together."""
    stored_parked: dict[str, list[dict[str, Any]]]
    """Reports parked in earlier batches for the transactions this batch may create (only a
    transfer request creates one, and every new one's are read when the batch starts)."""
    result: Result = field(default_factory=Result)
    created: dict[str, Txn] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    parked: dict[str, dict[str, Event]] = field(default_factory=dict)
    unparked: set[str] = field(default_factory=set)
    holds: dict[str, str | None] = field(default_factory=dict)
    """Holds this batch placed, released or expired, each with the event that did it (None for an
    expiry): their accounts' balances are announced."""


def _travel_rule(record: dict[str, Any]) -> str | None:
    """A transfer request's Travel Rule data as JSON, to be kept sealed (None: it carries none)."""
    found = record.get("travel_rule")
    return None if found is None else json.dumps(found, sort_keys=True, separators=(",", ":"))


def _spender(event: Event) -> AccountKey | None:
    """The account a transfer request would reserve from (None when its amount is unreadable:
    the request is refused without a reservation)."""
    try:
        _, currency, _ = money_parts(event.record["amount"])
    except (InexactValue, KeyError, TypeError):
        return None
    return (str(event.record["metadata"]["tenant_id"]), str(event.record["account_id"]), currency)


def _transaction_id(event: Event) -> str:
    record = event.record
    return str(record["transfer_id"] if event.topic == REQUESTED else record["transaction_id"])
