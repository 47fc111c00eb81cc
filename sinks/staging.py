"""Insert what is new of a batch: the idempotent write every sink shares (the event's id or the
entity's id is the conflict target), at the speed of COPY when nothing conflicts, and the base
of the sinks that write one row per event."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import errors, sql

from sinks.base import Sink
from sinks.errors import PoisonEvent
from sinks.rows import RowPlan
from topics.codec import AvroCodec
from topics.events import Event
from topics.money import InexactValue
from topics.runtime import FastRows
from topics.settings import Settings

Row = tuple[Any, ...]
BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
"""Binary COPY's signature, then no flags and no header extension."""
BINARY_TRAILER = b"\xff\xff"


_CONFLICTED: set[str] = set()
"""Tables whose last batch in this process met a row already there (a redelivery, a replay):
they take the staging path until a batch inserts every row again."""
_CHECKED: set[str] = set()
"""Tables whose column types this process has held to their sink's plan (`RowPlan.check_types`)."""
STAGING_ONLY = False
"""Every batch takes the staging path (`ledgerstream replay`: nothing is attempted and rolled
back, so the transaction's statistics count only rows really changed)."""


def copy_new(
    cur: psycopg.Cursor[Any],
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    conflict: str | Sequence[str],
    returning: str | None = None,
) -> list[Any]:
    """Insert `rows` into `table` unless a row with the same `conflict` key exists.

    The batch is first COPied straight into the table, under a savepoint: nothing can conflict
    in a stream read for the first time, and that is the speed of COPY. If a row is already
    there, the savepoint is rolled back and the batch takes the staging path instead (COPY into
    a temporary table, then `INSERT ... ON CONFLICT DO NOTHING`), as do the table's next batches
    until one inserts every row: a replay does not pay twice per batch.

    A row is a tuple of values, or a binary COPY tuple already (`sinks.rows`), which cannot be
    asked for a `returning` column. Tuples go in one binary COPY, values in one text COPY.

    Returns the `returning` column (one of `columns`) of the rows actually inserted (when asked).
    """
    rows = list(rows)
    if not rows:
        return []
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    if table not in _CONFLICTED and not STAGING_ONLY:
        try:
            with cur.connection.transaction():
                _copy(cur, sql.Identifier(table), cols, rows)
        except errors.UniqueViolation:
            _CONFLICTED.add(table)
        else:
            if returning is None:
                return []
            at = list(columns).index(returning)
            return [row[at] for row in rows]
    keys = (conflict,) if isinstance(conflict, str) else tuple(conflict)
    stage = sql.Identifier(f"stage_{table}")
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        ).format(stage, sql.Identifier(table))
    )
    _copy(cur, stage, cols, rows)
    insert = sql.SQL(
        "INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT ({key}) DO NOTHING"
    ).format(
        table=sql.Identifier(table), cols=cols, stage=stage, key=sql.SQL(", ").join(map(sql.Identifier, keys))
    )
    if returning is None:
        cur.execute(insert)
        inserted = [None] * max(cur.rowcount, 0)
    else:
        cur.execute(insert + sql.SQL(" RETURNING {}").format(sql.Identifier(returning)))
        inserted = [r[0] for r in cur.fetchall()]
    if len(inserted) == len(rows):
        _CONFLICTED.discard(table)
    return inserted if returning is not None else []


def _copy(
    cur: psycopg.Cursor[Any], table: sql.Identifier, cols: sql.Composed, rows: list[Sequence[Any]]
) -> None:
    tuples = [row for row in rows if type(row) is bytes]
    if tuples:
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(table, cols)) as copy:
            copy.write(b"".join((BINARY_HEADER, *tuples, BINARY_TRAILER)))
    if len(tuples) < len(rows):
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(table, cols)) as copy:
            for row in rows:
                if type(row) is not bytes:
                    copy.write_row(row)


class TableSink(Sink[Row]):
    """A sink of one row per event into one table: a `RowPlan` (`plan`), or `row(event)`, is the
    only per-table code.

    A row that cannot be built (a missing field, an inexact amount) dead-letters its
    event; a batch is written with `copy_new`, so a repeated `conflict` key changes nothing.
    A sink with a plan also has its rows written natively where `ledgerstream_native` is built
    (`fast_rows`).
    """

    table: str
    columns: tuple[str, ...]
    conflict: str | tuple[str, ...]
    noun: str
    """What one event is, for the dead-letter reason (`malformed <noun>: ...`)."""
    plan: RowPlan | None = None
    field_key: bytes | None = None
    """The bank-details key, for a plan that seals a column (`bind` takes it)."""
    overlap = 2
    """Its batches only insert rows new by `conflict`: under a backlog, the next one is COPied
    while the one before it commits (`bench sink`: 117k -> 138k events/s)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.plan is None and cls.row is TableSink.row:
            raise TypeError(f"{cls.__name__}: a TableSink needs a plan or a row()")

    def bind(self, codec: AvroCodec, settings: Settings) -> None:
        if self.plan is not None and self.plan.sealed_for is not None:
            self.field_key = settings.field_key()

    def row(self, event: Event) -> Row:
        """The table row of one event, in `columns` order (from the plan)."""
        assert self.plan is not None  # __init_subclass__: a sink without a plan has its own row()
        if self.plan.sealed_for is not None and self.field_key is None:
            raise RuntimeError(f"{self.name}: bind() gives it the bank-details key before its first row")
        return self.plan.row(event, self.field_key)

    def fast_rows(self, codec: AvroCodec, settings: Settings) -> dict[str, FastRows]:
        """Per input topic, the native writer of its rows (none without a plan or the module)."""
        if self.plan is None:
            return {}
        found = {}
        for topic in self.topics:
            if not codec.store.has_topic(topic):  # a topic of no schema of ours: decoded as it comes
                continue
            writer = self.plan.native(
                codec.store.for_topic(topic).definition, settings.environment, self.field_key
            )
            if writer is not None:
                found[topic] = writer
        return found

    def prepare(self, event: Event) -> Row:
        try:
            return self.row(event)
        except (KeyError, TypeError, InexactValue) as e:
            raise PoisonEvent(f"malformed {self.noun}: {type(e).__name__}: {e}") from e

    def write(self, conn: psycopg.Connection, items: Sequence[Row]) -> None:
        with conn.cursor() as cur:
            self.before_write(cur)
            if self.plan is not None and self.table not in _CHECKED:
                self.plan.check_types(conn, self.table)
                _CHECKED.add(self.table)
            copy_new(cur, self.table, self.columns, items, self.conflict)

    def before_write(self, cur: psycopg.Cursor[Any]) -> None:
        """Runs first in the batch's transaction (e.g. to take a narrower role)."""
