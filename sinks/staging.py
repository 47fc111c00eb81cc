"""COPY a batch into a temporary staging table, then insert what is new: the idempotent write
every sink shares (the event's id or the entity's id is the conflict target)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql


def copy_new(
    cur: psycopg.Cursor[Any],
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    conflict: str | Sequence[str],
    returning: str | None = None,
) -> list[Any]:
    """Insert `rows` into `table` unless a row with the same `conflict` key exists.

    Returns the `returning` column of the rows actually inserted (when asked).
    """
    keys = (conflict,) if isinstance(conflict, str) else tuple(conflict)
    stage = sql.Identifier(f"stage_{table}")
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        ).format(stage, sql.Identifier(table))
    )
    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, cols)) as copy:
        for row in rows:
            copy.write_row(row)
    insert = sql.SQL(
        "INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT ({key}) DO NOTHING"
    ).format(
        table=sql.Identifier(table), cols=cols, stage=stage, key=sql.SQL(", ").join(map(sql.Identifier, keys))
    )
    if returning is None:
        cur.execute(insert)
        return []
    cur.execute(insert + sql.SQL(" RETURNING {}").format(sql.Identifier(returning)))
    return [r[0] for r in cur.fetchall()]
