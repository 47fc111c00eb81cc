"""The AML sink: `compliance.aml.flagged.v1` into `aml_flags`, once per flag id."""

from __future__ import annotations

import uuid
from typing import Any

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


def recent_flags(
    conn: Any, environment: str, *, account: str | None = None, status: str | None = None, limit: int = 50
) -> list[tuple[Any, ...]]:
    """(flag, account, rule, version, risk, case status, raised at) of the newest flags."""
    return conn.execute(
        "SELECT flag_id, account_id, rule_id, rule_version, risk_score, case_status, occurred_at "
        "FROM aml_flags WHERE environment = %s AND (%s::text IS NULL OR account_id = %s) "
        "AND (%s::text IS NULL OR case_status = %s) ORDER BY occurred_at DESC LIMIT %s",
        (environment, account, account, status, status, limit),
    ).fetchall()


def set_case_status(conn: Any, environment: str, flag_id: str, status: str) -> tuple[str, str] | None:
    """Move a flag's case to `status`; (account, rule) of the flag, or None if there is no such flag."""
    try:
        key = uuid.UUID(flag_id)
    except ValueError:
        return None  # not a flag id at all
    row = conn.execute(
        "UPDATE aml_flags SET case_status = %s WHERE flag_id = %s AND environment = %s "
        "RETURNING account_id, rule_id",
        (status, key, environment),
    ).fetchone()
    return None if row is None else (row[0], row[1])
