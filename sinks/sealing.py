"""Bank account details written as text before they were sealed (migration 0023), or sealed
under a key since rotated out: sealed under the current key now.

`ledgerstream db seal` seals each text beneficiary into its `beneficiary_sealed` column and
empties the text one, a batch per transaction (rows being written meanwhile are skipped, not
waited for), then validates the constraint that keeps the text column empty, which until
then held for new rows only. It then re-seals under the current key every value a previous
key sealed (LEDGERSTREAM_FIELD_KEY_PREVIOUS), beneficiaries and Travel Rule records alike, so
that key can be retired; a value sealed under a key it was not given stops it, named. Run
again, it finds nothing to do.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg
from psycopg import sql

from topics.fields import (
    TRANSACTIONS_BENEFICIARY,
    TRANSACTIONS_TRAVEL_RULE,
    TRANSFER_REQUESTS_BENEFICIARY,
    key_id,
    open_field,
    seal_field,
)

KEPT_SEALED = (
    ("transfer_requests", "event_id", "beneficiary_sealed", TRANSFER_REQUESTS_BENEFICIARY),
    ("transactions", "transaction_id", "beneficiary_sealed", TRANSACTIONS_BENEFICIARY),
    ("transactions", "transaction_id", "travel_rule_sealed", TRANSACTIONS_TRAVEL_RULE),
)
"""(table, its primary key, the column, its `topics.fields` name) of every sealed value kept."""
SEALED = tuple(
    (table, pk, where) for table, pk, column, where in KEPT_SEALED if column == "beneficiary_sealed"
)
"""(table, its primary key, the sealed column) of every beneficiary kept (once written as text)."""


def plaintext_left(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Per table, the rows whose beneficiary is still text."""
    return {
        table: int(
            conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE beneficiary_reference IS NOT NULL").format(
                    sql.Identifier(table)
                )
            ).fetchone()[0]  # type: ignore[index]
        )
        for table, _, _ in SEALED
    }


def _rewrite(
    conn: psycopg.Connection[Any],
    table: str,
    pk: str,
    column: str,
    where: sql.Composable,
    arguments: tuple[Any, ...],
    assign: sql.Composable,
    values: Callable[[Any], tuple[Any, ...]],
    batch_size: int,
    progress: Callable[[str, int], None],
) -> int:
    """Rewrite, a batch per transaction, every row of `table` that `where` picks: `assign` (its
    placeholders filled by `values(column's value)`) for each; returns the rows rewritten. Rows
    locked by a writer are skipped, not waited for."""
    select = sql.SQL(
        "SELECT {pk}, {column} FROM {table} WHERE {where} LIMIT %s FOR UPDATE SKIP LOCKED"
    ).format(pk=sql.Identifier(pk), column=sql.Identifier(column), table=sql.Identifier(table), where=where)
    update = sql.SQL("UPDATE {table} SET {assign} WHERE {pk} = %s").format(
        table=sql.Identifier(table), assign=assign, pk=sql.Identifier(pk)
    )
    done = 0
    while True:
        with conn.transaction(), conn.cursor() as cur:
            rows = cur.execute(select, (*arguments, batch_size)).fetchall()
            if rows:
                cur.executemany(update, [(*values(value), row_id) for row_id, value in rows])
        if not rows:
            return done
        done += len(rows)
        progress(table, done)


def _sealed(key: bytes, where: str, text: str) -> tuple[bytes | None]:
    return (seal_field(key, text, where),)


def _resealed(keys: list[bytes], where: str, old: bytes) -> tuple[bytes | None]:
    """Opened with whichever of `keys` sealed it, sealed again under the first (the current key)."""
    return (seal_field(keys[0], open_field(keys, old, where), where),)


def seal_plaintext(
    conn: psycopg.Connection[Any],
    key: bytes,
    *,
    batch_size: int = 1000,
    progress: Callable[[str, int], None] = lambda table, sealed: None,
) -> dict[str, int]:
    """Seal every text beneficiary and empty its text column; returns the rows sealed per table.
    `conn` is the database owner's (it validates the constraints), in autocommit mode."""
    sealed: dict[str, int] = {}
    for table, pk, where in SEALED:
        sealed[table] = _rewrite(
            conn,
            table,
            pk,
            "beneficiary_reference",
            sql.SQL("beneficiary_reference IS NOT NULL"),
            (),
            sql.SQL("beneficiary_sealed = %s, beneficiary_reference = NULL"),
            partial(_sealed, key, where),
            batch_size,
            progress,
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                sql.Identifier(table), sql.Identifier(f"{table}_beneficiary_sealed")
            )
        )
    return sealed


def reseal(
    conn: psycopg.Connection[Any],
    keys: list[bytes],
    *,
    batch_size: int = 1000,
    progress: Callable[[str, int], None] = lambda table, sealed: None,
) -> dict[str, int]:
    """Re-seal under `keys[0]` (the current key) every value another of `keys` sealed (each
    beneficiary, each Travel Rule record); returns the rows re-sealed per table. `conn` in
    autocommit mode."""
    current = keys[0]
    resealed: dict[str, int] = {}
    for table, pk, column, where in KEPT_SEALED:
        name = sql.Identifier(column)
        resealed[table] = resealed.get(table, 0) + _rewrite(
            conn,
            table,
            pk,
            column,
            sql.SQL("{c} IS NOT NULL AND substring({c} from 2 for 8) <> %s").format(c=name),
            (key_id(current),),
            sql.SQL("{c} = %s").format(c=name),
            partial(_resealed, keys, where),
            batch_size,
            progress,
        )
    return resealed
