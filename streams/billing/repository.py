"""The billing agent's tables: invoices per tenant and period, and which invoice billed each fee."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import psycopg

CLOSE_DUE = (
    "UPDATE invoices SET status = 'closed', closed_at = %s "
    "WHERE status = 'open' AND period_end + %s <= %s RETURNING tenant_id, environment, period"
)
BILLED = (
    "SELECT b.fee_id::text, i.invoice_id::text, i.period "
    "FROM billed_fees b JOIN invoices i USING (invoice_id) WHERE b.fee_id = ANY(%s::uuid[])"
)
STATUSES = "SELECT period, status FROM invoices WHERE tenant_id = %s AND environment = %s"
OPEN_INVOICE = (
    "INSERT INTO invoices (invoice_id, tenant_id, environment, period, period_end) "
    "VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (invoice_id) DO NOTHING"
)
CLOSE_PERIOD = (
    "UPDATE invoices SET status = 'closed', closed_at = %s "
    "WHERE period = %s AND environment = %s AND status = 'open' AND (%s::text IS NULL OR tenant_id = %s) "
    "RETURNING tenant_id"
)
BILL = "INSERT INTO billed_fees (fee_id, invoice_id) VALUES (%s, %s) ON CONFLICT (fee_id) DO NOTHING"


def close_due(conn: psycopg.Connection[Any], now: datetime, close_after: timedelta) -> None:
    """Close every open invoice whose period ended `close_after` ago."""
    conn.execute(CLOSE_DUE, (now, close_after, now))


def billed_fees(conn: psycopg.Connection[Any], fee_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """fee id -> (invoice id, period) of the fees already billed."""
    return {f: (i, p) for f, i, p in conn.execute(BILLED, (list(fee_ids),)).fetchall()}


def period_statuses(conn: psycopg.Connection[Any], tenant: str, environment: str) -> dict[str, str]:
    """period -> open or closed, of a tenant's invoices."""
    return {p: s for p, s in conn.execute(STATUSES, (tenant, environment)).fetchall()}


def open_invoice(
    conn: psycopg.Connection[Any],
    invoice: str,
    tenant: str,
    environment: str,
    period: str,
    end: date | datetime,
) -> None:
    conn.execute(OPEN_INVOICE, (invoice, tenant, environment, period, end))


def bill(cur: psycopg.Cursor[Any], bills: Sequence[tuple[str, str]]) -> None:
    """Record which invoice bills each fee (a fee is billed once)."""
    cur.executemany(BILL, bills)


def close_open_invoices(
    conn: psycopg.Connection[Any], period: str, environment: str, tenant: str | None, now: datetime
) -> list[str]:
    """Close a period's open invoices (one tenant's, or all); the tenants closed."""
    with conn.transaction():
        rows = conn.execute(CLOSE_PERIOD, (now, period, environment, tenant, tenant)).fetchall()
    return sorted(r[0] for r in rows)
