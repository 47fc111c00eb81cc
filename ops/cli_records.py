"""`ledgerstream billing | aml | audit`: what the sinks recorded, for finance, compliance and support."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from rich.table import Table

from ops.console import Parser, err, out, positive_int, settings_or_error

CASE_STATUSES = ["open", "reviewed", "dismissed", "escalated"]


def billing_close(args: argparse.Namespace) -> int:
    from sinks.migrate import connect
    from streams.billing.agent import close_period

    settings = settings_or_error()
    with connect(settings.database_url.get_secret_value()) as conn:
        closed = close_period(conn, args.period, settings.environment, args.tenant)
    if not closed:
        out.print(f"billing close: no open {settings.environment} invoice for {args.period}", markup=False)
        return 0
    out.print(
        f"billing close: closed {args.period} for {', '.join(closed)}; later fees go to the next period",
        markup=False,
    )
    return 0


def billing_invoices(args: argparse.Namespace) -> int:
    from sinks.billing import invoice_totals
    from sinks.migrate import connect

    settings = settings_or_error()
    table = Table("tenant", "period", "status", "currency", "line items", "total (minor units)")
    with connect(settings.database_url.get_secret_value()) as conn:
        rows = invoice_totals(conn, settings.environment, tenant=args.tenant, period=args.period)
    for tenant, period, status, currency, items, total in rows:
        table.add_row(tenant, period, status, currency, str(items), f"{total:,}")
    out.print(table)
    return 0


def aml_flags(args: argparse.Namespace) -> int:
    from sinks.aml import recent_flags
    from sinks.migrate import connect

    settings = settings_or_error()
    table = Table("flag", "account", "rule", "version", "risk", "status", "raised at (UTC)")
    with connect(settings.database_url.get_secret_value()) as conn:
        rows = recent_flags(
            conn, settings.environment, account=args.account, status=args.status, limit=args.limit
        )
    for flag, account, rule, version, score, status, at in rows:
        table.add_row(str(flag), account, rule, version, str(score), status, at.isoformat(timespec="seconds"))
    out.print(table)
    return 0


def aml_case(args: argparse.Namespace) -> int:
    from sinks.aml import set_case_status
    from sinks.migrate import connect

    settings = settings_or_error()
    with connect(settings.database_url.get_secret_value()) as conn:
        row = set_case_status(conn, settings.environment, args.flag_id, args.status)
    if row is None:
        err.print(f"aml case: no {settings.environment} flag {args.flag_id}", markup=False)
        return 1
    out.print(f"aml case: flag {args.flag_id} ({row[1]} on {row[0]}) is now {args.status}", markup=False)
    return 0


def audit_trace(args: argparse.Namespace) -> int:
    from ops.audit_trace import trace
    from sinks.migrate import connect

    settings = settings_or_error()
    with connect(settings.database_url.get_secret_value()) as conn:
        steps = trace(conn, args.correlation_id, settings.environment)
    if not steps:
        err.print(f"audit trace: nothing recorded for correlation id {args.correlation_id!r}", markup=False)
        return 1
    table = Table("time (UTC)", "topic", "entity", "actor", "change", "notes")
    for step in steps:
        table.add_row(step.time, step.topic, step.entity, step.actor, step.change, step.notes)
    out.print(table)
    out.print(f"{len(steps)} events across {len({s.topic for s in steps})} topics", markup=False)
    return 0


def _period(text: str) -> str:
    from streams.billing.invoicing import BillingError, next_period

    try:
        next_period(text)
    except BillingError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a period like 2026-11") from None
    return text


def add_record_commands(sub: Any, command: Callable[..., Any]) -> None:
    """Register these commands on the top-level subparsers."""
    billing = sub.add_parser("billing", help="invoices: totals per tenant and period, closing a period")
    billing_sub = billing.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    close = command(
        billing_sub,
        "close",
        billing_close,
        "close a period's open invoices now (later fees go to the next one)",
    )
    close.add_argument("--period", type=_period, required=True, help="billing period, YYYY-MM (UTC months)")
    close.add_argument("--tenant", help="only this tenant's invoice (default: every tenant)")
    inv = command(billing_sub, "invoices", billing_invoices, "invoice totals per currency")
    inv.add_argument("--tenant", help="only this tenant")
    inv.add_argument("--period", type=_period, help="only this period, YYYY-MM")

    aml = sub.add_parser("aml", help="AML flags and their cases")
    aml_sub = aml.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    fl = command(aml_sub, "flags", aml_flags, "flags raised, newest first, by account and case status")
    fl.add_argument("--account", help="only this account")
    fl.add_argument("--status", choices=CASE_STATUSES, help="only this case status")
    fl.add_argument("--limit", type=positive_int, default=50, help="most rows (default 50)")
    cs = command(aml_sub, "case", aml_case, "move a flag's case to reviewed, dismissed or escalated")
    cs.add_argument("flag_id", help="the flag's id")
    cs.add_argument("--status", choices=CASE_STATUSES, required=True, help="the case's new status")

    audit = sub.add_parser("audit", help="the append-only audit trail")
    audit_sub = audit.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    tr = command(
        audit_sub, "trace", audit_trace, "the whole story of one request across topics, in time order"
    )
    tr.add_argument("correlation_id", help="the correlation id the request got at the edge")
