"""A time range of a topic as a table, for analysts: `ledgerstream export`, or `topic_table`
from a notebook.

Every event becomes one row: where it is (partition, offset, timestamp, key) and its
fields, nested records flattened to dotted names (`amount.units`, `metadata.tenant_id`),
lists kept as JSON text. Money stays exact: integer minor units stay 64-bit integers, and a
column of decimals (a crypto amount in base units, a rate) becomes a decimal column wide
enough for every value in it: decimal128 up to 38 digits, decimal256 up to 76. A column
holding a wider value (uint256 reaches 78 digits) is written as text rather than rounded.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

from ops.topic_reader import Start, TopicReader, jsonable
from topics.codec import AvroCodec, DecodeError
from topics.errors import LedgerstreamError
from topics.masking import conceal
from topics.settings import Settings

DECIMAL256_DIGITS = 76


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested records to dotted names; lists to JSON text (money in them kept exact as text)."""
    flat: dict[str, Any] = {}
    for name, value in record.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{key}."))
        elif isinstance(value, list | tuple):
            flat[key] = json.dumps(jsonable(value), separators=(",", ":"))
        elif isinstance(value, uuid.UUID):
            flat[key] = str(value)
        else:
            flat[key] = value
    return flat


def _digits(value: Decimal) -> tuple[int, int]:
    """(digits before the point, digits after it)."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    scale = max(-exponent, 0)
    return max(len(digits) + exponent, 1), scale


def column(values: list[Any]) -> tuple[pa.Array, str | None]:
    """An Arrow array for one column, and a note when exactness needed text."""
    present = [v for v in values if v is not None]
    if (
        present
        and all(isinstance(v, Decimal | int) and not isinstance(v, bool) for v in present)
        and any(isinstance(v, Decimal) for v in present)
    ):
        shapes = [_digits(Decimal(v)) for v in present]
        whole, scale = max(s[0] for s in shapes), max(s[1] for s in shapes)
        precision = whole + scale
        if precision <= DECIMAL256_DIGITS:
            kind = pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
            return pa.array([None if v is None else Decimal(v) for v in values], type=kind), None
        return pa.array([None if v is None else str(v) for v in values], type=pa.string()), (
            f"{precision} digits: kept as text to stay exact"
        )
    if present and len({type(v) for v in present}) > 1:
        if all(isinstance(v, datetime | date) for v in present):
            return pa.array(values), None
        return pa.array([None if v is None else str(jsonable(v)) for v in values], type=pa.string()), None
    if present and all(isinstance(v, datetime) for v in present):
        return pa.array(
            [None if v is None else v.astimezone(UTC) for v in values], type=pa.timestamp("us", "UTC")
        ), None
    return pa.array(values), None


def topic_table(
    settings: Settings,
    codec: AvroCodec,
    topic: str,
    *,
    start: Start,
    until_ms: int | None = None,
    partitions: Sequence[int] | None = None,
    group_prefix: str = "ledgerstream.operator",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pa.Table, list[str]]:
    """The events of `topic` from `start` to `until_ms` (epoch ms, exclusive; the end if None)
    as an Arrow table (`.to_pandas()` for a DataFrame), and notes on columns kept as text or
    events that did not decode."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    undecodable = 0
    with TopicReader(settings, topic, start, partitions=partitions, group_prefix=group_prefix) as reader:
        total = reader.pending()
        seen = 0
        for msg in reader.messages():
            seen += 1
            if progress is not None:
                progress(seen, total)
            kind, ms = msg.timestamp()
            if until_ms is not None and kind and ms >= until_ms:
                continue
            try:
                record = codec.decode(
                    msg.value() or b"", topic=topic, partition=msg.partition(), offset=msg.offset()
                )
            except DecodeError:
                undecodable += 1
                continue
            key = msg.key()
            rows.append(
                {
                    "_partition": msg.partition(),
                    "_offset": msg.offset(),
                    "_timestamp": datetime.fromtimestamp(ms / 1000, UTC) if kind else None,
                    "_key": key.decode(errors="replace") if key is not None else None,
                    **flatten(conceal(record)),  # account numbers to their last four, PANs redacted
                }
            )
    if undecodable:
        notes.append(f"{undecodable} events did not decode and are left out (see `ledgerstream tail`)")
    names: list[str] = []
    for row in rows:
        names += [n for n in row if n not in names]
    arrays = []
    for name in names:
        array, note = column([row.get(name) for row in rows])
        arrays.append(array)
        if note is not None:
            notes.append(f"{name}: {note}")
    return pa.table(dict(zip(names, arrays, strict=True))), notes


def write(table: pa.Table, path: Path, form: str) -> None:
    """Parquet (decimal columns as Parquet decimals) or CSV (decimals written in full)."""
    if form == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    elif form == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
    else:
        raise LedgerstreamError(f"--format {form!r}: parquet or csv")
