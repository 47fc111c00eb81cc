"""The transfer-request sink: `payments.transfer.requested.v1` into `transfer_requests`.

The simplest sink, one row per event (a `TableSink`): COPY into a staging table,
then `INSERT ... ON CONFLICT (event_id) DO NOTHING`, so a redelivered or replayed
event changes nothing. The beneficiary's reference (bank account details) is stored only
sealed, under the bank-details key (`topics.fields`).
"""

from __future__ import annotations

from sinks.staging import Row, TableSink
from topics.codec import AvroCodec
from topics.events import Event
from topics.fields import TRANSFER_REQUESTS_BENEFICIARY, seal_field
from topics.money import money_parts
from topics.names import PAYMENTS_TRANSFER_REQUESTED_V1
from topics.settings import Settings

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
    "beneficiary_sealed",
    "reference",
    "correlation_id",
    "idempotency_key",
    "occurred_at",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)


def row_from_event(event: Event, field_key: bytes) -> Row:
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
        seal_field(field_key, r["beneficiary_reference"], TRANSFER_REQUESTS_BENEFICIARY),
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

    def __init__(self) -> None:
        self.field_key: bytes | None = None

    def bind(self, codec: AvroCodec, settings: Settings) -> None:
        self.field_key = settings.field_key()

    def row(self, event: Event) -> Row:
        if self.field_key is None:
            raise RuntimeError("transfers_sink: bind() gives it the bank-details key before its first row")
        return row_from_event(event, self.field_key)
