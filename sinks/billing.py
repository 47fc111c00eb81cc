"""The billing sink: `billing.invoice.line_item_added.v1` into `invoice_line_items`.

Line item ids are derived from the fee line (or the invoice and plan), so a
replayed fee or a re-emitted subscription line is written once. Invoice totals
per currency are the `invoice_totals` view over these rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from sinks.base import Sink
from sinks.errors import PoisonEvent
from sinks.staging import copy_new
from topics.events import Event
from topics.money import InexactValue, money_parts

TOPIC = "billing.invoice.line_item_added.v1"
COLUMNS = (
    "line_item_id", "event_id", "invoice_id", "tenant_id", "environment", "period", "account_id", "fee_type",
    "amount", "currency", "exponent", "source_fee_id", "correlation_id", "occurred_at", "kafka_topic",
    "kafka_partition", "kafka_offset",
)  # fmt: skip
Row = tuple[Any, ...]


def line_item_row(event: Event) -> Row:
    r, meta = event.record, event.record["metadata"]
    units, currency, exponent = money_parts(r["amount"])
    return (
        r["line_item_id"], meta["event_id"], r["invoice_id"], meta["tenant_id"], meta["environment"],
        r["period"], r["account_id"], r["fee_type"], units, currency, exponent, r["source_fee_id"],
        meta["correlation_id"], meta["occurred_at"], event.topic, event.partition, event.offset,
    )  # fmt: skip


class BillingSink(Sink[Row]):
    name = "billing_sink"
    topics = (TOPIC,)

    def prepare(self, event: Event) -> Row:
        try:
            return line_item_row(event)
        except (KeyError, TypeError, InexactValue) as e:
            raise PoisonEvent(f"malformed line item: {type(e).__name__}: {e}") from e

    def write(self, conn: psycopg.Connection, items: Sequence[Row]) -> None:
        with conn.cursor() as cur:
            copy_new(cur, "invoice_line_items", COLUMNS, items, "line_item_id")
