"""The AML sink: `compliance.aml.flagged.v1` into `aml_flags`, once per flag id."""

from __future__ import annotations

from psycopg.types.json import Jsonb

from sinks.staging import Row, TableSink
from topics.events import Event
from topics.names import COMPLIANCE_AML_FLAGGED_V1

TOPIC = COMPLIANCE_AML_FLAGGED_V1
COLUMNS = (
    "flag_id",
    "event_id",
    "account_id",
    "tenant_id",
    "environment",
    "rule_id",
    "rule_version",
    "risk_score",
    "time_window",
    "evidence",
    "trigger_event_id",
    "trigger_topic",
    "correlation_id",
    "occurred_at",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)


def flag_row(event: Event) -> Row:
    r, meta = event.record, event.record["metadata"]
    return (
        r["flag_id"],
        meta["event_id"],
        r["account_id"],
        meta["tenant_id"],
        meta["environment"],
        r["rule_id"],
        r["rule_version"],
        r["risk_score"],
        r["window"],
        Jsonb(dict(r["evidence"])),
        r["trigger_event_id"],
        r["trigger_topic"],
        meta["correlation_id"],
        meta["occurred_at"],
        event.topic,
        event.partition,
        event.offset,
    )


class AmlSink(TableSink):
    name = "aml_sink"
    topics = (TOPIC,)
    table, columns, conflict, noun = "aml_flags", COLUMNS, "flag_id", "flag"

    def row(self, event: Event) -> Row:
        return flag_row(event)
