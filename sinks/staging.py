"""COPY a batch into a temporary staging table, then insert what is new: the idempotent write
every sink shares (the event's id or the entity's id is the conflict target), and the base
of the sinks that write one row per event."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from sinks.base import Sink
from sinks.errors import PoisonEvent
from topics.events import Event
from topics.money import InexactValue

Row = tuple[Any, ...]


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


class TableSink(Sink[Row]):
    """A sink of one row per event into one table: `row(event)` is the only per-table code.

    A row that cannot be built (a missing field, an inexact amount) dead-letters its
    event; a batch is written with `copy_new`, so a repeated `conflict` key changes nothing.
    """

    table: str
    columns: tuple[str, ...]
    conflict: str | tuple[str, ...]
    noun: str
    """What one event is, for the dead-letter reason (`malformed <noun>: ...`)."""

    @abstractmethod
    def row(self, event: Event) -> Row:
        """The table row of one event, in `columns` order."""

    def prepare(self, event: Event) -> Row:
        try:
            return self.row(event)
        except (KeyError, TypeError, InexactValue) as e:
            raise PoisonEvent(f"malformed {self.noun}: {type(e).__name__}: {e}") from e

    def write(self, conn: psycopg.Connection, items: Sequence[Row]) -> None:
        with conn.cursor() as cur:
            self.before_write(cur)
            copy_new(cur, self.table, self.columns, items, self.conflict)

    def before_write(self, cur: psycopg.Cursor[Any]) -> None:
        """Runs first in the batch's transaction (e.g. to take a narrower role)."""
