"""One request's story from the audit trail: every event with its correlation id, in order.

Derived events often carry their cause's time, so ties are broken by where a topic
sits in the flow (command, lifecycle, money, ledger), then by arrival.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

from topics.names import (
    ACCOUNTS_BALANCE_UPDATED_V1,
    AUDIT_EVENTS_LOG_V1,
    BILLING_FEE_ASSESSED_V1,
    BILLING_INVOICE_LINE_ITEM_ADDED_V1,
    COMPLIANCE_AML_FLAGGED_V1,
    COMPLIANCE_TRANSACTION_BLOCKED_V1,
    FX_CONVERSION_EXECUTED_V1,
    FX_ORDER_APPROVED_V1,
    FX_ORDER_REQUESTED_V1,
    LEDGER_JOURNAL_POSTED_V1,
    PAYMENTS_TRANSACTION_COMPLETED_V1,
    PAYMENTS_TRANSACTION_CREATED_V1,
    PAYMENTS_TRANSACTION_FAILED_V1,
    PAYMENTS_TRANSACTION_STATUS_CHANGED_V1,
    PAYMENTS_TRANSACTION_STATUS_REPORTED_V1,
    PAYMENTS_TRANSFER_REQUESTED_V1,
)

FLOW = [
    AUDIT_EVENTS_LOG_V1,
    PAYMENTS_TRANSFER_REQUESTED_V1,
    FX_ORDER_REQUESTED_V1,
    FX_ORDER_APPROVED_V1,
    PAYMENTS_TRANSACTION_CREATED_V1,
    COMPLIANCE_AML_FLAGGED_V1,
    COMPLIANCE_TRANSACTION_BLOCKED_V1,
    PAYMENTS_TRANSACTION_STATUS_REPORTED_V1,
    PAYMENTS_TRANSACTION_STATUS_CHANGED_V1,
    PAYMENTS_TRANSACTION_COMPLETED_V1,
    PAYMENTS_TRANSACTION_FAILED_V1,
    FX_CONVERSION_EXECUTED_V1,
    BILLING_FEE_ASSESSED_V1,
    BILLING_INVOICE_LINE_ITEM_ADDED_V1,
    LEDGER_JOURNAL_POSTED_V1,
    ACCOUNTS_BALANCE_UPDATED_V1,
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


def _amount(money: dict[str, Any]) -> str:
    """A money record of an audited payload (fiat or crypto) in its currency's units."""
    exponent = int(money.get("exponent", money.get("decimals", 0)))
    return f"{Decimal(str(money['units'])).scaleb(-exponent):f}"


def _change(before: Any, after: Any, payload: dict[str, Any]) -> str:
    if "available" in payload and "total" in payload:  # a balance announcement
        available, currency = payload["available"], payload.get("asset", "")
        return (
            f"available {_amount(available)} {currency} "
            f"(total {_amount(payload['total'])}, reserved {_amount(payload['reserved'])})"
        )
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
