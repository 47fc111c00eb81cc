"""One request's story from the audit trail: every event with its correlation id, in order.

Derived events often carry their cause's time, so ties are broken by where a topic
sits in the flow (command, lifecycle, money, ledger), then by arrival.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

FLOW = [
    "audit.events.log.v1",
    "payments.transfer.requested.v1",
    "fx.order.requested.v1",
    "fx.order.approved.v1",
    "payments.transaction.created.v1",
    "compliance.aml.flagged.v1",
    "compliance.transaction.blocked.v1",
    "payments.transaction.status_reported.v1",
    "payments.transaction.status_changed.v1",
    "payments.transaction.completed.v1",
    "payments.transaction.failed.v1",
    "fx.conversion.executed.v1",
    "billing.fee.assessed.v1",
    "billing.invoice.line_item_added.v1",
    "ledger.journal.posted.v1",
    "accounts.balance.updated.v1",
]
TRACE = """
SELECT occurred_at, topic, entity_type, entity_id, actor, before, after, pan_redacted, payload
  FROM audit_log
 WHERE correlation_id = %s AND environment = %s
 ORDER BY occurred_at, coalesce(array_position(%s::text[], topic), 999), recorded_at, kafka_offset
"""


@dataclass(frozen=True)
class Step:
    time: str
    topic: str
    entity: str
    actor: str
    change: str
    notes: str


def _change(before: Any, after: Any, payload: dict[str, Any]) -> str:
    if before or after:
        b = (before or {}).get("status", (before or {}).get("value"))
        a = (after or {}).get("status", (after or {}).get("value"))
        return f"{b or '-'} -> {a or '-'}"
    for key in ("action", "status", "reason", "rule_id", "reference_id"):
        if payload.get(key):
            return str(payload[key])
    return ""


def trace(conn: psycopg.Connection[Any], correlation_id: str, environment: str) -> list[Step]:
    steps = []
    for at, topic, etype, eid, actor, before, after, pan, payload in conn.execute(
        TRACE, (correlation_id, environment, FLOW)
    ).fetchall():
        notes = "PAN redacted" if pan else ""
        steps.append(
            Step(
                at.isoformat(timespec="milliseconds"),
                topic,
                f"{etype or '-'} {eid or ''}".strip(),
                actor or "-",
                _change(before, after, payload),
                notes,
            )
        )
    return steps
