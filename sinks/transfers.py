"""The transfer-request sink: `payments.transfer.requested.v1` into `transfer_requests`.

The simplest sink, one row per event (a `TableSink`): COPY into a staging table,
then `INSERT ... ON CONFLICT (event_id) DO NOTHING`, so a redelivered or replayed
event changes nothing.
"""

from __future__ import annotations

from sinks.staging import Row, TableSink
from topics.events import Event
from topics.money import money_parts
from topics.names import PAYMENTS_TRANSFER_REQUESTED_V1

TOPIC = PAYMENTS_TRANSFER_REQUESTED_V1
COLUMNS = (
    "event_id",
    "transfer_id",
    "account_id",
    "tenant_id",
    "environment",
    "amount_units",
    "currency",
    "exponent",
    "rail",
    "destination_account_id",
    "beneficiary_reference",
    "reference",
    "correlation_id",
    "idempotency_key",
    "occurred_at",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)


def row_from_event(event: Event) -> Row:
    r = event.record
    meta = r["metadata"]
    units, currency, exponent = money_parts(r["amount"])
    return (
        meta["event_id"],
        r["transfer_id"],
        r["account_id"],
        meta["tenant_id"],
        meta["environment"],
        units,
        currency,
        exponent,
        r["rail"],
        r["destination_account_id"],
        r["beneficiary_reference"],
        r["reference"],
        meta["correlation_id"],
        meta["idempotency_key"],
        meta["occurred_at"],
        event.topic,
        event.partition,
        event.offset,
    )


class TransferRequestSink(TableSink):
    name = "transfers_sink"
    topics = (TOPIC,)
    table, columns, conflict, noun = "transfer_requests", COLUMNS, "event_id", "transfer request"

    def row(self, event: Event) -> Row:
        return row_from_event(event)
