"""The fees sink: `billing.fee.assessed.v1` into `fees` and `fee_lines`.

A fee's id is derived from its source event, so a redelivered or replayed fee
is recognised by `fee_id` and neither it nor its lines are written twice. A fee
whose lines do not add up to its total is refused (dead-lettered), never stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from sinks.base import Sink
from sinks.errors import PoisonEvent
from sinks.staging import copy_new
from topics.events import Event
from topics.money import InexactValue, money_parts
from topics.names import BILLING_FEE_ASSESSED_V1

TOPIC = BILLING_FEE_ASSESSED_V1
FEE_COLUMNS = (
    "fee_id",
    "event_id",
    "source_event_id",
    "account_id",
    "tenant_id",
    "environment",
    "transaction_id",
    "fee_config_version",
    "total",
    "currency",
    "exponent",
    "correlation_id",
    "occurred_at",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)
LINE_COLUMNS = ("fee_id", "line_no", "tier", "category", "method", "amount", "currency", "provider")


@dataclass(frozen=True)
class FeeRows:
    fee: tuple[Any, ...]
    lines: tuple[tuple[Any, ...], ...]


def fee_rows(event: Event) -> FeeRows:
    r, meta = event.record, event.record["metadata"]
    total, currency, exponent = money_parts(r["total"])
    lines = []
    for n, line in enumerate(r["lines"], start=1):
        units, line_currency, _ = money_parts(line["amount"])
        if line_currency != currency:
            raise PoisonEvent(f"fee {r['fee_id']}: a {line_currency} line in a {currency} fee")
        lines.append(
            (
                r["fee_id"],
                n,
                line["tier"],
                line["category"],
                line["method"],
                units,
                line_currency,
                line["provider"],
            )
        )
    if sum(line[5] for line in lines) != total:
        raise PoisonEvent(
            f"fee {r['fee_id']}: lines add up to {sum(x[5] for x in lines)}, not the total {total}"
        )
    fee = (
        r["fee_id"],
        meta["event_id"],
        r["source_event_id"],
        r["account_id"],
        meta["tenant_id"],
        meta["environment"],
        r["transaction_id"],
        r["fee_config_version"],
        total,
        currency,
        exponent,
        meta["correlation_id"],
        meta["occurred_at"],
        event.topic,
        event.partition,
        event.offset,
    )
    return FeeRows(fee, tuple(lines))


class FeesSink(Sink[FeeRows]):
    name = "fees_sink"
    topics = (TOPIC,)
    overlap = 2
    """It only inserts fees new by id, and the lines of the fees it inserted."""

    def prepare(self, event: Event) -> FeeRows:
        try:
            return fee_rows(event)
        except (KeyError, TypeError, InexactValue) as e:
            raise PoisonEvent(f"malformed fee: {type(e).__name__}: {e}") from e

    def write(self, conn: psycopg.Connection, items: Sequence[FeeRows]) -> None:
        unique = {str(item.fee[0]): item for item in items}
        with conn.cursor() as cur:
            new = {
                str(f)
                for f in copy_new(
                    cur, "fees", FEE_COLUMNS, (i.fee for i in unique.values()), "fee_id", returning="fee_id"
                )
            }
            copy_new(
                cur,
                "fee_lines",
                LINE_COLUMNS,
                (line for fee_id, item in unique.items() if fee_id in new for line in item.lines),
                ("fee_id", "line_no"),
            )
