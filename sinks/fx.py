"""The FX sink: `fx.conversion.executed.v1` into `fx_conversions`, once per conversion id."""

from __future__ import annotations

from sinks.staging import Row, TableSink
from topics.events import Event
from topics.money import money_parts
from topics.names import FX_CONVERSION_EXECUTED_V1

TOPIC = FX_CONVERSION_EXECUTED_V1
COLUMNS = (
    "conversion_id",
    "event_id",
    "order_id",
    "account_id",
    "tenant_id",
    "environment",
    "pair",
    "rate",
    "market_rate",
    "markup_bps",
    "bonus_bps",
    "sold_units",
    "sold_currency",
    "sold_exponent",
    "bought_units",
    "bought_currency",
    "bought_exponent",
    "rate_source",
    "rate_quoted_at",
    "correlation_id",
    "occurred_at",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)


def conversion_row(event: Event) -> Row:
    r, meta = event.record, event.record["metadata"]
    sold, sold_currency, sold_exponent = money_parts(r["sold"])
    bought, bought_currency, bought_exponent = money_parts(r["bought"])
    return (
        r["conversion_id"],
        meta["event_id"],
        r["order_id"],
        r["account_id"],
        meta["tenant_id"],
        meta["environment"],
        r["pair"],
        r["rate"],
        r["market_rate"],
        r["markup_bps"],
        r["bonus_bps"],
        sold,
        sold_currency,
        sold_exponent,
        bought,
        bought_currency,
        bought_exponent,
        r["rate_source"],
        r["rate_quoted_at"],
        meta["correlation_id"],
        meta["occurred_at"],
        event.topic,
        event.partition,
        event.offset,
    )


class FxSink(TableSink):
    name = "fx_sink"
    topics = (TOPIC,)
    table, columns, conflict, noun = "fx_conversions", COLUMNS, "conversion_id", "conversion"

    def row(self, event: Event) -> Row:
        return conversion_row(event)
