"""The AML sink: `compliance.aml.flagged.v1` into `aml_flags`, once per flag id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from sinks.base import Sink
from sinks.errors import PoisonEvent
from sinks.staging import copy_new
from topics.events import Event

TOPIC = "compliance.aml.flagged.v1"
COLUMNS = (
    "flag_id", "event_id", "account_id", "tenant_id", "environment", "rule_id", "rule_version", "risk_score",
    "time_window", "evidence", "trigger_event_id", "trigger_topic", "correlation_id", "occurred_at",
    "kafka_topic", "kafka_partition", "kafka_offset",
)  # fmt: skip
Row = tuple[Any, ...]


def flag_row(event: Event) -> Row:
    r, meta = event.record, event.record["metadata"]
    return (
        r["flag_id"], meta["event_id"], r["account_id"], meta["tenant_id"], meta["environment"], r["rule_id"],
        r["rule_version"], r["risk_score"], r["window"], Jsonb(dict(r["evidence"])), r["trigger_event_id"],
        r["trigger_topic"], meta["correlation_id"], meta["occurred_at"], event.topic, event.partition,
        event.offset,
    )  # fmt: skip


class AmlSink(Sink[Row]):
    name = "aml_sink"
    topics = (TOPIC,)

    def prepare(self, event: Event) -> Row:
        try:
            return flag_row(event)
        except (KeyError, TypeError) as e:
            raise PoisonEvent(f"malformed flag: {type(e).__name__}: {e}") from e

    def write(self, conn: psycopg.Connection, items: Sequence[Row]) -> None:
        with conn.cursor() as cur:
            copy_new(cur, "aml_flags", COLUMNS, items, "flag_id")
