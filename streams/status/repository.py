"""The status agent's tables: transactions, their status history, and reports parked until
their transaction exists. Every SQL statement of the agent is here; the agent decides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from topics.database import copy_new_rows
from topics.fields import TRANSACTIONS_BENEFICIARY, TRANSACTIONS_TRAVEL_RULE, seal_field

TXN_COLUMNS = (
    "transaction_id",
    "account_id",
    "tenant_id",
    "environment",
    "transaction_type",
    "direction",
    "amount_units",
    "currency",
    "exponent",
    "counterparty_account_id",
    "status",
    "version",
    "correlation_id",
    "created_at",
    "updated_at",
    "rail",
    "chain",
    "beneficiary_sealed",
    "travel_rule_sealed",
)
"""What a new transaction's row is written with: its beneficiary and its Travel Rule data only
sealed (`topics.fields`)."""
SEALED = {
    "beneficiary_sealed": ("beneficiary_reference", TRANSACTIONS_BENEFICIARY),
    "travel_rule_sealed": ("travel_rule", TRANSACTIONS_TRAVEL_RULE),
}
"""Each sealed column: the transaction's field it seals, and its `topics.fields` name."""
HISTORY_COLUMNS = (
    "event_id",
    "transaction_id",
    "from_status",
    "to_status",
    "reason",
    "provider_update_id",
    "version",
    "source_event_id",
    "correlation_id",
    "occurred_at",
)


def _columns(names: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(map(sql.Identifier, names))


def _placeholders(names: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Placeholder() * len(names))


SELECT_TXNS = "SELECT * FROM transactions WHERE transaction_id = ANY(%s) ORDER BY transaction_id FOR UPDATE"
SELECT_APPLIED = sql.SQL(
    "SELECT {} FROM transaction_status_history WHERE source_event_id = ANY(%s) ORDER BY version"
).format(_columns(HISTORY_COLUMNS))
COPY_TXNS = sql.SQL("COPY transactions ({}) FROM STDIN").format(_columns(TXN_COLUMNS))
COPY_HISTORY = sql.SQL("COPY transaction_status_history ({}) FROM STDIN").format(_columns(HISTORY_COLUMNS))
INSERT_TXNS = sql.SQL(
    "INSERT INTO transactions ({}) VALUES ({}) ON CONFLICT (transaction_id) DO NOTHING"
).format(_columns(TXN_COLUMNS), _placeholders(TXN_COLUMNS))
SELECT_PARKED = (
    "SELECT * FROM transaction_status_parked WHERE transaction_id = ANY(%s) "
    "ORDER BY transaction_id, occurred_at, kafka_topic, kafka_partition, kafka_offset FOR UPDATE"
)
DELETE_PARKED = "DELETE FROM transaction_status_parked WHERE transaction_id = ANY(%s)"
INSERT_PARKED = (
    "INSERT INTO transaction_status_parked (source_event_id, transaction_id, kafka_topic, kafka_partition, "
    "kafka_offset, kafka_key, value, occurred_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (source_event_id) DO NOTHING"
)
UPDATE_TXN = (
    "UPDATE transactions SET status = %s, version = %s, updated_at = %s "
    "WHERE transaction_id = %s AND version < %s"
)
INSERT_HISTORY = sql.SQL(
    "INSERT INTO transaction_status_history ({}) VALUES ({}) ON CONFLICT DO NOTHING"
).format(_columns(HISTORY_COLUMNS), _placeholders(HISTORY_COLUMNS))


@dataclass(frozen=True)
class Txn:
    transaction_id: str
    account_id: str
    tenant_id: str
    environment: str
    transaction_type: str
    direction: str
    amount_units: int
    currency: str
    exponent: int
    counterparty_account_id: str | None
    status: str
    version: int
    correlation_id: str
    created_at: datetime
    updated_at: datetime
    rail: str | None
    chain: str | None = None
    """The chain of a crypto amount (where a CRYPTO transfer is sent from)."""
    beneficiary_reference: str | None = None
    travel_rule: str | None = None
    """A crypto transfer's Travel Rule data as JSON (written sealed; not read back)."""


@dataclass(frozen=True)
class Change:
    event_id: str
    transaction_id: str
    from_status: str | None
    to_status: str
    reason: str | None
    provider_update_id: str | None
    version: int
    source_event_id: str
    correlation_id: str
    occurred_at: datetime


def lock_transactions(conn: psycopg.Connection[Any], ids: Sequence[str]) -> dict[str, Txn]:
    """The transactions with these ids, locked for the batch's transaction."""
    return {
        row["transaction_id"]: Txn(
            **{
                **{k: v for k, v in row.items() if k not in SEALED},  # the agent needs no sealed value again
                "amount_units": _exact_int(row["amount_units"]),
            }
        )
        for row in conn.execute(SELECT_TXNS, (list(ids),)).fetchall()
    }


def applied_changes(conn: psycopg.Connection[Any], sources: Sequence[str]) -> dict[str, list[Change]]:
    """The changes these source events already made (a redelivery), by source event id."""
    applied: dict[str, list[Change]] = {}
    for row in conn.execute(SELECT_APPLIED, (list(sources),)).fetchall():
        applied.setdefault(str(row["source_event_id"]), []).append(
            Change(**{k: _text(row[k]) for k in HISTORY_COLUMNS})
        )
    return applied


def parked_reports(conn: psycopg.Connection[Any], ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The reports kept for these transactions until they existed, oldest first (locked), by
    transaction id."""
    parked: dict[str, list[dict[str, Any]]] = {}
    for row in conn.execute(SELECT_PARKED, (list(ids),)).fetchall():
        parked.setdefault(str(row["transaction_id"]), []).append(row)
    return parked


def save(
    conn: psycopg.Connection[Any],
    *,
    created: Sequence[Txn],
    moved: Sequence[Txn],
    changes: Sequence[Change],
    unparked: Sequence[str],
    parked: Sequence[tuple[Any, ...]],
    field_key: bytes,
) -> None:
    """Write a batch: new transactions (each beneficiary sealed under `field_key`), the new state
    of moved ones, their history, and the parked reports taken or kept."""
    with conn.cursor() as cur:
        if created:
            copy_new_rows(cur, COPY_TXNS, INSERT_TXNS, [_txn_row(t, field_key) for t in created])
        if moved:
            cur.executemany(
                UPDATE_TXN, [(t.status, t.version, t.updated_at, t.transaction_id, t.version) for t in moved]
            )
        if changes:
            history = [tuple(getattr(c, k) for k in HISTORY_COLUMNS) for c in changes]
            copy_new_rows(cur, COPY_HISTORY, INSERT_HISTORY, history)
        if unparked:
            cur.execute(DELETE_PARKED, (sorted(unparked),))
        if parked:
            cur.executemany(INSERT_PARKED, parked)


def _txn_row(txn: Txn, field_key: bytes) -> tuple[Any, ...]:
    return tuple(
        seal_field(field_key, getattr(txn, SEALED[column][0]), SEALED[column][1])
        if column in SEALED
        else getattr(txn, column)
        for column in TXN_COLUMNS
    )


def _exact_int(value: Any) -> int:
    """NUMERIC(78,0) comes back as Decimal; it is a whole number of minor/base units."""
    as_int = int(value)
    if as_int != value:
        raise ValueError(f"amount {value} is not a whole number of units")
    return as_int


def _text(value: Any) -> Any:
    """UUIDs from the database as text, like the ids in events."""
    return str(value) if value.__class__.__name__ == "UUID" else value
