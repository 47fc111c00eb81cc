"""The transactional outbox's write side: an event becomes a row in the caller's transaction.

`enqueue` encodes the event first, so a record that does not fit its schema is refused before
anything commits. The relay (connectors/outbox.py) publishes the rows; connectors and the ledger
sink enqueue them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.database import copy_new_rows
from topics.headers import header_map, routing_headers

INSERT = """
INSERT INTO outbox (aggregate_id, topic, event_id, event_type, key, value, headers)
VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING
"""
COPY = "COPY outbox (aggregate_id, topic, event_id, event_type, key, value, headers) FROM STDIN"


def outbox_row(codec: AvroCodec, catalog: Catalog, topic: str, record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The parameters of INSERT for one event (raises EncodeError if it does not fit its schema)."""
    value = codec.encode(topic, record)
    key = catalog.topic(topic).key_of(dict(record))
    meta = record["metadata"]
    headers = header_map(routing_headers(meta, codec.store.for_topic(topic).fullname))
    aggregate = record.get("account_id") or key
    return (
        aggregate,
        topic,
        meta["event_id"],
        meta["event_type"],
        (key or "").encode(),
        value,
        Jsonb(headers),
    )


def enqueue(
    conn: psycopg.Connection[Any], codec: AvroCodec, catalog: Catalog, topic: str, record: Mapping[str, Any]
) -> None:
    """Add one event to the outbox in the caller's transaction (raises EncodeError if it does not fit)."""
    conn.execute(INSERT, outbox_row(codec, catalog, topic, record))


def enqueue_many(
    conn: psycopg.Connection[Any],
    codec: AvroCodec,
    catalog: Catalog,
    topic: str,
    records: Iterable[Mapping[str, Any]],
) -> int:
    """Add events to the outbox in the caller's transaction (every record is encoded before any
    row is sent): one COPY, under a savepoint; an event id already there (the batch is worked
    again) falls back to inserting each row that is new (`copy_new_rows`). Returns how many
    were given."""
    rows = [outbox_row(codec, catalog, topic, record) for record in records]
    if rows:
        with conn.cursor() as cur:
            copy_new_rows(cur, COPY, INSERT, rows)
    return len(rows)
