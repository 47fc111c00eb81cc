"""The billing agent: assessed fees become invoice line items, per tenant per month.

State lives in PostgreSQL: `invoices` (open or closed) and `billed_fees` (which
invoice each fee went to), changed in one transaction per batch. Each batch
first closes the invoices whose period has ended (plus `close_after_hours`);
a fee whose own period is closed goes to the next open one. A fee seen before
is re-emitted to the invoice it was billed to, with the same line item ids, so
the billing sink never adds it twice. Every invoice a batch touches also emits
its subscription line item (a deterministic id per invoice and plan), so a
plan's monthly fee is billed exactly once per period even across crashes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from streams.base import BatchHandler, Output, Result
from streams.billing.invoicing import (
    BillingBook,
    BillingError,
    fee_type,
    invoice_id,
    line_item_id,
    next_period,
    period_end,
    period_of,
    subscription_line_item_id,
    target_period,
)
from streams.billing.repository import (
    bill,
    billed_fees,
    close_due,
    close_open_invoices,
    open_invoice,
    period_statuses,
)
from topics.database import Database
from topics.events import Event, derived_event_id, derived_metadata
from topics.money import InexactValue, money_parts, money_record
from topics.names import BILLING_FEE_ASSESSED_V1, BILLING_INVOICE_LINE_ITEM_ADDED_V1
from topics.settings import Settings

ASSESSED = BILLING_FEE_ASSESSED_V1
LINE_ITEM = BILLING_INVOICE_LINE_ITEM_ADDED_V1
AGENT = "billing_agent"


class BillingHandler(BatchHandler):
    """Args:
    settings: the PostgreSQL connection.
    book: subscription plans and when invoices close.
    clock: the current time (a test may fix it).
    """

    name = AGENT
    topics = (ASSESSED,)
    outputs = (LINE_ITEM,)

    def __init__(self, settings: Settings, book: BillingBook, clock: Any = None) -> None:
        self.settings = settings
        self.book = book
        self.close_after = timedelta(hours=book.close_after_hours)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.db = Database(settings)

    def handle(self, events: list[Event]) -> Result:
        result = Result()
        conn = self.db.connection()
        now = self.clock()
        try:
            with conn.transaction():
                close_due(conn, now, self.close_after)
                fee_ids = [str(e.record["fee_id"]) for e in events]
                billed = billed_fees(conn, fee_ids)
                statuses: dict[tuple[str, str], dict[str, str]] = {}
                touched: dict[str, tuple[str, str, str, Event]] = {}
                new_bills: list[tuple[str, str]] = []
                for event in events:
                    try:
                        invoice, period = self._bill(conn, event, billed, statuses, now, new_bills)
                    except (BillingError, InexactValue, KeyError, TypeError) as e:
                        result.refused.append((event, f"cannot bill fee {event.record.get('fee_id')}: {e}"))
                        continue
                    meta = event.record["metadata"]
                    touched.setdefault(invoice, (meta["tenant_id"], meta["environment"], period, event))
                    result.outputs.extend(self._line_items(event, invoice, period))
                with conn.cursor() as cur:
                    bill(cur, new_bills)  # one pipelined round trip for the batch
                for invoice, (tenant, _, period, event) in touched.items():
                    result.outputs.extend(self._subscription(invoice, tenant, period, event))
        except psycopg.Error:
            self.db.discard()
            raise
        return result

    def _bill(
        self,
        conn: psycopg.Connection[Any],
        event: Event,
        billed: dict[str, tuple[str, str]],
        statuses: dict[tuple[str, str], dict[str, str]],
        now: datetime,
        new_bills: list[tuple[str, str]],
    ) -> tuple[str, str]:
        record, meta = event.record, event.record["metadata"]
        fee_id = str(record["fee_id"])
        if fee_id in billed:
            return billed[fee_id]
        tenant, environment = meta["tenant_id"], meta["environment"]
        own = period_of(meta["occurred_at"])
        known = statuses.get((tenant, environment))
        if known is None:
            known = statuses[(tenant, environment)] = period_statuses(conn, tenant, environment)
        period = target_period(own, lambda p: known.get(p) == "closed", now, self.close_after)
        invoice = invoice_id(tenant, environment, period)
        if period not in known:
            open_invoice(conn, invoice, tenant, environment, period, period_end(period))
            known[period] = "open"
        billed[fee_id] = (invoice, period)
        new_bills.append((fee_id, invoice))
        return invoice, period

    def _line_items(self, event: Event, invoice: str, period: str) -> list[Output]:
        record, meta = event.record, event.record["metadata"]
        fee_id = str(record["fee_id"])
        outputs = []
        for n, line in enumerate(record["lines"], start=1):
            units, currency, exponent = money_parts(line["amount"])
            item = line_item_id(fee_id, n)
            chain = line["amount"].get("chain", "ledger")
            outputs.append(
                Output(
                    LINE_ITEM,
                    {
                        "metadata": self._metadata(meta, item),
                        "account_id": record["account_id"],
                        "invoice_id": invoice,
                        "period": period,
                        "line_item_id": item,
                        "fee_type": fee_type(line["tier"], line["category"]),
                        "amount": money_record(units, currency, exponent, chain),
                        "source_fee_id": fee_id,
                    },
                )
            )
        return outputs

    def _subscription(self, invoice: str, tenant: str, period: str, event: Event) -> list[Output]:
        plan = self.book.plans.get(tenant)
        if plan is None or plan.monthly_fee == 0:
            return []
        item = subscription_line_item_id(invoice, plan.plan)
        meta = event.record["metadata"]
        return [
            Output(
                LINE_ITEM,
                {
                    "metadata": self._metadata(meta, item),
                    "account_id": f"tenant:{tenant}",
                    "invoice_id": invoice,
                    "period": period,
                    "line_item_id": item,
                    "fee_type": f"subscription:{plan.plan}",
                    "amount": money_record(plan.monthly_fee, plan.currency, plan.exponent),
                    "source_fee_id": None,
                },
            )
        ]

    @staticmethod
    def _metadata(meta: dict[str, Any], item: str) -> dict[str, Any]:
        return derived_metadata(
            meta,
            "billing.invoice.line_item_added",
            source="streams.billing",
            event_id=derived_event_id(item, AGENT),
        )

    def close(self) -> None:
        self.db.close()


def close_period(
    conn: psycopg.Connection[Any], period: str, environment: str, tenant: str | None = None
) -> list[str]:
    """Close a period's open invoices ahead of its end (an operator's decision); fees still
    to come for it go to the next period. Returns the tenants whose invoice was closed."""
    next_period(period)  # validates YYYY-MM
    return close_open_invoices(conn, period, environment, tenant, datetime.now(UTC))
