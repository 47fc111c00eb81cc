"""A table sink's row, declared once: each column and where in the event it comes from.

A `RowPlan` is the one description of a one-row-per-event table. Two paths read it:
- `row(event, key)`: the Python path, from the decoded record (any writer schema, any money);
- `native(schema, environment, key)`: a `ledgerstream_native.RowWriter` (Rust, built from
  `sinks/native` by `make install`) that reads the Avro bytes of a value written with the
  topic's current schema and writes its binary COPY tuple itself (each column in the binary
  form of its PostgreSQL type, which the plan names and `check_types` holds to the table),
  without building the record. It answers None for anything it is not certain of (crypto money, an
  unknown header, bytes the guard would refuse, another environment), and that event takes
  the Python path, which stores it or says why not. Both write the same row
  (`tests/unit/test_native_rows.py` holds them to it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from topics.errors import LedgerstreamError
from topics.events import Event
from topics.fields import seal_field, sealing_header
from topics.money import money_parts

try:
    from ledgerstream_native import RowWriter
except ImportError:  # not built (no cargo): every row takes the Python path
    RowWriter = None

log = logging.getLogger(__name__)

Row = tuple[Any, ...]
Getter = Callable[[dict[str, Any], Event, bytes | None], Any]
FIAT = "ledgerstream.common.FiatMoney"


def native_available() -> bool:
    return RowWriter is not None


@dataclass(frozen=True)
class Column:
    """One column: its name, what it holds (`value`, `sealed`, `units`, `currency`, `exponent`,
    `topic`, `partition`, `offset`), and the field it is read from (dotted path)."""

    name: str
    kind: str
    path: str = ""
    pg: str = "text"
    """The column's PostgreSQL type, as `regtype` names it (e.g. `timestamp with time zone`)."""
    where: str = ""
    """For a sealed column: the `table.column` it is sealed for (its associated data)."""


def value(name: str, path: str | None = None, pg: str = "text") -> Column:
    """The field at `path` (default: the column's name) as it is, None for a null, into a
    column of type `pg`."""
    return Column(name, "value", path or name, pg)


def sealed(name: str, path: str, where: str) -> Column:
    """The string at `path`, sealed under the bank-details key for `where` (`topics.fields`),
    into a bytea column."""
    return Column(name, "sealed", path, "bytea", where)


def money(path: str, units: str, currency: str, exponent: str) -> tuple[Column, Column, Column]:
    """A money field's three columns: units (numeric), currency or asset (text), and exponent
    or decimals (smallint)."""
    return (
        Column(units, "units", path, "numeric"),
        Column(currency, "currency", path, "text"),
        Column(exponent, "exponent", path, "smallint"),
    )


KAFKA = (
    Column("kafka_topic", "topic", pg="text"),
    Column("kafka_partition", "partition", pg="integer"),
    Column("kafka_offset", "offset", pg="bigint"),
)
"""Where the event was read: topic, partition and offset."""


def _at(path: str) -> Callable[[dict[str, Any]], Any]:
    keys = path.split(".")
    if len(keys) == 1:
        (k,) = keys
        return lambda r: r[k]
    if len(keys) == 2:
        a, b = keys
        return lambda r: r[a][b]

    def get(r: dict[str, Any]) -> Any:
        for k in keys:
            r = r[k]
        return r

    return get


def _getter(column: Column) -> Getter:
    kind = column.kind
    if kind == "topic":
        return lambda r, e, key: e.topic
    if kind == "partition":
        return lambda r, e, key: e.partition
    if kind == "offset":
        return lambda r, e, key: e.offset
    at = _at(column.path)
    if kind == "value":
        return lambda r, e, key: at(r)
    if kind == "sealed":
        where = column.where

        def seal(r: dict[str, Any], e: Event, key: bytes | None) -> Any:
            if key is None:
                raise RuntimeError(f"{where}: no bank-details key to seal with")
            return seal_field(key, at(r), where)

        return seal
    part = ("units", "currency", "exponent").index(kind)
    return lambda r, e, key: money_parts(at(r))[part]


class PlanMismatch(LedgerstreamError):
    """The table's columns are not of the types the plan writes (a migration the plan missed)."""


class RowPlan:
    """The columns of a one-row-per-event table, in order."""

    def __init__(self, *columns: Column | tuple[Column, ...]) -> None:
        flat: list[Column] = []
        for c in columns:
            flat.extend(c if isinstance(c, tuple) else (c,))
        self.columns = tuple(flat)
        self.names = tuple(c.name for c in self.columns)
        self.sealed_for = next((c.where for c in self.columns if c.kind == "sealed"), None)
        """The `table.column` a sealed column is sealed for (None: the plan seals nothing)."""
        self._getters = tuple(_getter(c) for c in self.columns)

    def row(self, event: Event, key: bytes | None = None) -> Row:
        """The row of a decoded event (KeyError or TypeError for a field it lacks)."""
        r = event.record
        return tuple(get(r, event, key) for get in self._getters)

    def native(self, schema: Any, environment: str, key: bytes | None = None) -> Any:
        """A `RowWriter` for values written with `schema` (JSON form) in `environment`, or None
        where it is not built or cannot read this schema (the Python path serves)."""
        if RowWriter is None:
            return None
        columns: list[tuple[str, list[str], str]] = []
        for c in self.columns:
            if c.kind in ("topic", "partition", "offset"):
                columns.append((c.kind, [], c.pg))
            elif c.kind in ("units", "currency", "exponent"):
                columns.append(("value", [*c.path.split("."), FIAT, c.kind], c.pg))
            else:
                columns.append((c.kind, c.path.split("."), c.pg))
        seal = None
        if key is not None and self.sealed_for is not None:
            seal = (key, sealing_header(key), self.sealed_for.encode())
        try:
            return RowWriter(json.dumps(schema), columns, [(["metadata", "environment"], environment)], seal)
        except ValueError as e:
            log.info("rows of this schema take the Python path: %s", e)
            return None

    def check_types(self, conn: Any, table: str) -> None:
        """Raise PlanMismatch unless each column of `table` is of the type the plan names (the
        native writer writes each in that type's binary form)."""
        found = dict(
            conn.execute(
                "SELECT attname, atttypid::regtype::text FROM pg_attribute"
                " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (table,),
            ).fetchall()
        )
        wrong = [
            f"{c.name} is {found.get(c.name, 'missing')}, not {c.pg}"
            for c in self.columns
            if found.get(c.name) != c.pg
        ]
        if wrong:
            raise PlanMismatch(
                f"{table}: " + "; ".join(wrong) + " (the sink's RowPlan and the migrations disagree)"
            )
