"""The transfer-request sink: `payments.transfer.requested.v1` into `transfer_requests`.

The simplest sink, one row per event: COPY into a staging table, then
`INSERT ... ON CONFLICT (event_id) DO NOTHING`, so a redelivered or replayed
event changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from sinks.base import Sink
from sinks.errors import PoisonEvent
from topics.events import Event

TOPIC = "payments.transfer.requested.v1"
COLUMNS = (
    "event_id", "transfer_id", "account_id", "tenant_id", "environment", "amount_units", "currency",
    "exponent", "rail", "destination_account_id", "beneficiary_reference", "reference", "correlation_id",
    "idempotency_key", "occurred_at", "kafka_topic", "kafka_partition", "kafka_offset",
)  # fmt: skip
COLUMN_LIST = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
STAGE = """CREATE TEMP TABLE IF NOT EXISTS stage_transfer_requests
           (LIKE transfer_requests INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"""
COPY = sql.SQL("COPY stage_transfer_requests ({}) FROM STDIN").format(COLUMN_LIST)
INSERT = sql.SQL(
    "INSERT INTO transfer_requests ({cols}) SELECT {cols} FROM stage_transfer_requests "
    "ON CONFLICT (event_id) DO NOTHING"
).format(cols=COLUMN_LIST)

Row = tuple[Any, ...]


def row_from_event(event: Event) -> Row:
    r = event.record
    meta = r["metadata"]
    amount = r["amount"]
    if "asset" in amount:
        units, currency, exponent = amount["units"], amount["asset"], amount["decimals"]
    else:
        units, currency, exponent = amount["units"], amount["currency"], amount["exponent"]
    return (
        meta["event_id"], r["transfer_id"], r["account_id"], meta["tenant_id"], meta["environment"],
        units, currency, exponent, r["rail"], r["destination_account_id"], r["beneficiary_reference"],
        r["reference"], meta["correlation_id"], meta["idempotency_key"], meta["occurred_at"],
        event.topic, event.partition, event.offset,
    )  # fmt: skip


class TransferRequestSink(Sink[Row]):
    name = "transfers_sink"
    topics = (TOPIC,)

    def prepare(self, event: Event) -> Row:
        try:
            return row_from_event(event)
        except (KeyError, TypeError) as e:
            raise PoisonEvent(f"malformed transfer request: {e}") from e

    def write(self, conn: psycopg.Connection, items: Sequence[Row]) -> None:
        with conn.cursor() as cur:
            cur.execute(STAGE)
            with cur.copy(COPY) as copy:
                for row in items:
                    copy.write_row(row)
            cur.execute(INSERT)
