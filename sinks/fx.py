"""The FX sink: `fx.conversion.executed.v1` into `fx_conversions`, once per conversion id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from sinks.base import Sink
from sinks.errors import PoisonEvent
from sinks.staging import copy_new
from topics.events import Event
from topics.money import InexactValue, money_parts

TOPIC = "fx.conversion.executed.v1"
COLUMNS = (
    "conversion_id", "event_id", "order_id", "account_id", "tenant_id", "environment", "pair", "rate",
    "market_rate", "markup_bps", "bonus_bps", "sold_units", "sold_currency", "sold_exponent", "bought_units",
    "bought_currency", "bought_exponent", "rate_source", "rate_quoted_at", "correlation_id", "occurred_at",
    "kafka_topic", "kafka_partition", "kafka_offset",
)  # fmt: skip
Row = tuple[Any, ...]


def conversion_row(event: Event) -> Row:
    r, meta = event.record, event.record["metadata"]
    sold, sold_currency, sold_exponent = money_parts(r["sold"])
    bought, bought_currency, bought_exponent = money_parts(r["bought"])
    return (
        r["conversion_id"], meta["event_id"], r["order_id"], r["account_id"], meta["tenant_id"],
        meta["environment"], r["pair"], r["rate"], r["market_rate"], r["markup_bps"], r["bonus_bps"], sold,
        sold_currency, sold_exponent, bought, bought_currency, bought_exponent, r["rate_source"],
        r["rate_quoted_at"], meta["correlation_id"], meta["occurred_at"], event.topic, event.partition,
        event.offset,
    )  # fmt: skip


class FxSink(Sink[Row]):
    name = "fx_sink"
    topics = (TOPIC,)

    def prepare(self, event: Event) -> Row:
        try:
            return conversion_row(event)
        except (KeyError, TypeError, InexactValue) as e:
            raise PoisonEvent(f"malformed conversion: {type(e).__name__}: {e}") from e

    def write(self, conn: psycopg.Connection, items: Sequence[Row]) -> None:
        with conn.cursor() as cur:
            copy_new(cur, "fx_conversions", COLUMNS, items, "conversion_id")
