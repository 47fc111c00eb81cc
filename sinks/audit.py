"""The audit trail: every event on every topic becomes one append-only `audit_log` row.

Inputs: `audit.events.log.v1` (services' trace events) and every domain topic
in the catalog. A row carries the event's identity and place (id, type, topic,
partition, offset), its context (tenant, environment, actor, correlation and
causation ids), the entity it is about, before/after where the event carries
them, and the payload masked (see `topics.masking`). The sink writes as
`ledgerstream_audit_writer`, a role with INSERT and SELECT only, and a trigger
refuses UPDATE, DELETE and TRUNCATE for everyone. A replayed event hits the
primary key (event id, time) and adds nothing.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from sinks.staging import Row, TableSink
from topics.catalog import Catalog
from topics.events import Event
from topics.masking import mask
from topics.names import AUDIT_EVENTS_LOG_V1

TRACE = AUDIT_EVENTS_LOG_V1
WRITER_ROLE = "ledgerstream_audit_writer"
COLUMNS = (
    "event_id",
    "event_type",
    "topic",
    "kafka_partition",
    "kafka_offset",
    "tenant_id",
    "environment",
    "actor",
    "correlation_id",
    "causation_id",
    "account_id",
    "entity_type",
    "entity_id",
    "before",
    "after",
    "payload",
    "pan_redacted",
    "occurred_at",
)
ENTITY_KEYS = (
    ("transaction_id", "transaction"),
    ("transfer_id", "transaction"),
    ("order_id", "fx_order"),
    ("conversion_id", "fx_conversion"),
    ("fee_id", "fee"),
    ("flag_id", "aml_flag"),
    ("line_item_id", "invoice_line_item"),
    ("reference_id", "journal_entry"),
)


def entity_of(topic: str, record: dict[str, Any]) -> tuple[str | None, str | None]:
    if topic == TRACE:
        return record.get("entity_type"), record.get("entity_id")
    for key, kind in ENTITY_KEYS:
        if record.get(key):
            return kind, str(record[key])
    if "transfer" in record and isinstance(record["transfer"], dict):
        t = record["transfer"]
        return "chain_transfer", f"{t.get('chain')}:{t.get('tx_hash')}"
    return None, None


def before_after(topic: str, record: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    if topic == TRACE:
        details = record.get("details") or {}
        before, after = details.get("before"), details.get("after")
        return (
            {"value": before} if before is not None else None,
            {"value": after} if after is not None else None,
        )
    if "from_status" in record or "to_status" in record:
        return {"status": record.get("from_status")}, {"status": record.get("to_status")}
    return None, None


def audit_row(event: Event) -> Row:
    record, meta = event.record, event.record["metadata"]
    masked = mask(record)
    before, after = before_after(event.topic, record)
    entity_type, entity_id = entity_of(event.topic, record)
    actor = (
        (record.get("actor") if event.topic == TRACE else None) or meta.get("user_id") or meta.get("source")
    )
    return (
        meta["event_id"],
        meta["event_type"],
        event.topic,
        event.partition,
        event.offset,
        meta["tenant_id"],
        meta["environment"],
        actor,
        meta["correlation_id"],
        meta.get("causation_id"),
        record.get("account_id"),
        entity_type,
        entity_id,
        Jsonb(mask(before).value) if before else None,
        Jsonb(mask(after).value) if after else None,
        Jsonb(masked.value),
        masked.pan_redacted,
        meta["occurred_at"],
    )


class AuditSink(TableSink):
    """Args:
    catalog: the topics to audit (every topic with a schema).
    """

    name = "audit_sink"
    table, columns, conflict, noun = "audit_log", COLUMNS, ("event_id", "occurred_at"), "event to audit"

    def __init__(self, catalog: Catalog) -> None:
        self.topics = tuple(catalog.schema_topics())

    def row(self, event: Event) -> Row:
        return audit_row(event)

    def before_write(self, cur: psycopg.Cursor[Any]) -> None:
        cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(WRITER_ROLE)))
