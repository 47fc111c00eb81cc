"""The billing sink: `billing.invoice.line_item_added.v1` into `invoice_line_items`.

Line item ids are derived from the fee line (or the invoice and plan), so a
replayed fee or a re-emitted subscription line is written once. Invoice totals
per currency are the `invoice_totals` view over these rows.
"""

from __future__ import annotations

from typing import Any

from sinks.staging import Row, TableSink
from topics.events import Event
from topics.money import money_parts
from topics.names import BILLING_INVOICE_LINE_ITEM_ADDED_V1

TOPIC = BILLING_INVOICE_LINE_ITEM_ADDED_V1
COLUMNS = (
    "line_item_id",
    "event_id",
    "invoice_id",
    "tenant_id",
    "environment",
    "period",
    "account_id",
    "fee_type",
    "amount",
    "currency",
    "exponent",
    "source_fee_id",
    "correlation_id",
    "occurred_at",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)


def line_item_row(event: Event) -> Row:
    r, meta = event.record, event.record["metadata"]
    units, currency, exponent = money_parts(r["amount"])
    return (
        r["line_item_id"],
        meta["event_id"],
        r["invoice_id"],
        meta["tenant_id"],
        meta["environment"],
        r["period"],
        r["account_id"],
        r["fee_type"],
        units,
        currency,
        exponent,
        r["source_fee_id"],
        meta["correlation_id"],
        meta["occurred_at"],
        event.topic,
        event.partition,
        event.offset,
    )


class BillingSink(TableSink):
    name = "billing_sink"
    topics = (TOPIC,)
    table, columns, conflict, noun = "invoice_line_items", COLUMNS, "line_item_id", "line item"

    def row(self, event: Event) -> Row:
        return line_item_row(event)


def invoice_totals(
    conn: Any, environment: str, *, tenant: str | None = None, period: str | None = None
) -> list[tuple[str, str, str, str, int, int]]:
    """(tenant, period, status, currency, line items, total) of each invoice, optionally one
    tenant's or one period's."""
    return conn.execute(
        "SELECT tenant_id, period, status, currency, line_items, total FROM invoice_totals "
        "WHERE environment = %s AND (%s::text IS NULL OR tenant_id = %s) "
        "AND (%s::text IS NULL OR period = %s) ORDER BY tenant_id, period, currency",
        (environment, tenant, tenant, period, period),
    ).fetchall()
