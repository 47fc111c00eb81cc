"""The transfer-request sink: `payments.transfer.requested.v1` into `transfer_requests`.

The simplest sink, one row per event (a `TableSink` with a `RowPlan`): COPY into the table,
or through a staging table with `INSERT ... ON CONFLICT (event_id) DO NOTHING` when a row may
be there already, so a redelivered or replayed event changes nothing. The beneficiary's
reference (bank account details) is stored only sealed, under the bank-details key
(`topics.fields`).
"""

from __future__ import annotations

from sinks.rows import KAFKA, RowPlan, money, sealed, value
from sinks.staging import TableSink
from topics.fields import TRANSFER_REQUESTS_BENEFICIARY
from topics.names import PAYMENTS_TRANSFER_REQUESTED_V1

TOPIC = PAYMENTS_TRANSFER_REQUESTED_V1
PLAN = RowPlan(
    value("event_id", "metadata.event_id", "uuid"),
    value("transfer_id"),
    value("account_id"),
    value("tenant_id", "metadata.tenant_id"),
    value("environment", "metadata.environment"),
    money("amount", units="amount_units", currency="currency", exponent="exponent"),
    value("rail"),
    value("destination_account_id"),
    sealed("beneficiary_sealed", "beneficiary_reference", TRANSFER_REQUESTS_BENEFICIARY),
    value("reference"),
    value("correlation_id", "metadata.correlation_id"),
    value("idempotency_key", "metadata.idempotency_key"),
    value("occurred_at", "metadata.occurred_at", "timestamp with time zone"),
    KAFKA,
)
COLUMNS = PLAN.names


class TransferRequestSink(TableSink):
    name = "transfers_sink"
    topics = (TOPIC,)
    table, columns, plan, conflict, noun = "transfer_requests", COLUMNS, PLAN, "event_id", "transfer request"
