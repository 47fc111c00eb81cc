"""The FX agent's table: orders, their decisions and their execution (`fx_orders`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

SELECT_ORDERS = "SELECT * FROM fx_orders WHERE order_id = ANY(%s) ORDER BY order_id FOR UPDATE"
ORDER_COLUMNS = (
    "order_id",
    "account_id",
    "tenant_id",
    "environment",
    "order_type",
    "sell_units",
    "sell_currency",
    "sell_exponent",
    "buy_currency",
    "buy_exponent",
    "status",
    "decision",
    "decided_by",
    "correlation_id",
    "ordered_at",
    "order_event_id",
    "approval_event_id",
    "executed_at",
    "rate_pair",
    "rate_bid",
    "rate_ask",
    "rate_source",
    "rate_quoted_at",
    "markup_bps",
    "bonus_bps",
)
UPSERT_ORDER = (
    sql.SQL(
        "INSERT INTO fx_orders ({cols}, updated_at) VALUES ({values}, now()) "
        "ON CONFLICT (order_id) DO UPDATE SET ({cols}, updated_at) = ({excluded}, now())"
    )
    .format(
        cols=sql.SQL(", ").join(map(sql.Identifier, ORDER_COLUMNS)),
        values=sql.SQL(", ").join(map(sql.Placeholder, ORDER_COLUMNS)),
        excluded=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in ORDER_COLUMNS),
    )
    .as_string()
)
"""Rendered once: a composed query is rendered again on every execution."""


def lock_orders(conn: psycopg.Connection[Any], ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The orders with these ids (column -> value rows), locked for the batch's transaction."""
    return {r["order_id"]: r for r in conn.execute(SELECT_ORDERS, (list(ids),)).fetchall()}


def save_orders(conn: psycopg.Connection[Any], rows: Sequence[dict[str, Any]]) -> None:
    """Insert each order, or replace what is known of it."""
    if rows:
        with conn.cursor() as cur:
            cur.executemany(UPSERT_ORDER, rows)
