"""One PostgreSQL connection per worker, made when first needed and made again once broken.

A worker may start while the database is down, and lose its connection between batches: it
connects lazily, and after a transient error it drops the connection (`discard`), so the
next batch connects afresh. Every worker does it this way, with one connect timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.abc import Query
from psycopg.rows import dict_row

from topics.settings import Settings

CONNECT_TIMEOUT = 10
"""Seconds a connection attempt may take before it counts as the database being down."""


BINARY_FORMAT = {"22P03", "22P04"}
"""A binary COPY tuple in the wrong form for its column, or with the wrong column count: the
native writer's plan and the table disagree (`sinks.rows`), never an event's fault."""


def refused_by_schema(error: psycopg.Error) -> bool:
    """Whether PostgreSQL refused the statement itself (SQLSTATE class 42: a privilege the role
    lacks, a table or column a migration has not made; or a binary COPY in a form the table does
    not take), never the data's fault: retrying will not help and neither will dead-lettering
    the events."""
    state = error.sqlstate or ""
    return state.startswith("42") or state in BINARY_FORMAT


FEW = 8
"""Up to this many rows, `copy_new_rows` inserts them (fewer round trips than a savepoint and a COPY)."""


def copy_new_rows(
    cur: psycopg.Cursor[Any],
    copy: Query,
    insert: Query,
    rows: Sequence[Sequence[Any]],
) -> None:
    """Write rows that are new in the common case, in the caller's transaction: one COPY under a
    savepoint. When one is already there (a batch worked again, or two workers racing for the
    same events), the savepoint is rolled back and each row goes through `insert`, whose ON
    CONFLICT decides."""
    if len(rows) <= FEW:
        cur.executemany(insert, rows)
        return
    try:
        with cur.connection.transaction(), cur.copy(copy) as writer:
            for row in rows:
                writer.write_row(row)
    except psycopg.errors.UniqueViolation:
        cur.executemany(insert, rows)


class Database:
    """Args:
    settings: where the database is.
    dict_rows: rows as dicts (column -> value) instead of tuples.
    """

    def __init__(self, settings: Settings, *, dict_rows: bool = False) -> None:
        self.settings, self.dict_rows = settings, dict_rows
        self._conn: psycopg.Connection[Any] | None = None

    def connection(self) -> psycopg.Connection[Any]:
        """The open connection, made now if there is none (or it broke)."""
        if self._conn is None or self._conn.closed:
            url = self.settings.database_url.get_secret_value()
            if self.dict_rows:
                self._conn = psycopg.connect(url, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT)
            else:
                self._conn = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT)
        return self._conn

    def discard(self) -> None:
        """Close the connection after an error that may have broken it; the next use reconnects."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    close = discard
