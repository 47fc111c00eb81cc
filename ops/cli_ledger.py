"""`ledgerstream accounts ...` (the accounts registry) and `ledgerstream ledger ...` (balances
and the ledger's invariants)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.table import Table

from ops.console import Parser, err, out, settings_or_error

if TYPE_CHECKING:
    from sinks.balances import Balance


def _tools() -> tuple[Any, Any, Any]:
    from topics.catalog import load_catalog
    from topics.codec import AvroCodec
    from topics.schemas import load_store

    settings = settings_or_error()
    return settings, AvroCodec(load_store(settings.avro_dir)), load_catalog()


def accounts_open(args: argparse.Namespace) -> int:
    from connectors.accounts import open_account
    from sinks.migrate import connect

    settings, codec, catalog = _tools()
    with connect(settings.database_url.get_secret_value()) as conn:
        opened = open_account(
            conn,
            codec,
            catalog,
            tenant=args.tenant,
            environment=settings.environment,
            account_id=args.account,
            currency=args.currency,
            holder=args.holder or args.account,
            kind=args.kind,
            overdraft_limit=args.overdraft,
        )
    verb = "opened" if opened.created else "already open:"
    out.print(
        f"{verb} {args.tenant}/{opened.account_id} in {opened.currency} (exponent {opened.exponent})",
        markup=False,
    )
    return 0


def _status_command(status: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from connectors.accounts import set_status
        from sinks.migrate import connect

        settings, codec, catalog = _tools()
        with connect(settings.database_url.get_secret_value()) as conn:
            changes = set_status(
                conn,
                codec,
                catalog,
                tenant=args.tenant,
                environment=settings.environment,
                account_id=args.account,
                status=status,  # type: ignore[arg-type]
                currency=args.currency,
                reason=args.reason,
            )
        if not changes:
            out.print(f"{args.tenant}/{args.account} is already {status}", markup=False)
        for currency, before, after in changes:
            out.print(f"{args.tenant}/{args.account} {currency}: {before} -> {after}", markup=False)
        return 0

    return run


def ledger_balances(args: argparse.Namespace) -> int:
    from sinks.balances import customer_balances
    from sinks.migrate import connect

    settings = settings_or_error()
    table = Table("tenant", "account", "currency", "posted", "held", "available", "status", title="balances")
    with connect(settings.database_url.get_secret_value()) as conn:
        for b in customer_balances(conn, args.tenant, args.account):
            table.add_row(b.tenant, b.account_id, b.currency, *balance_cells(b), b.status)
    out.print(table)
    return 0


def balance_cells(b: Balance) -> list[str]:
    """Posted, held and available, in major units."""
    return [major_units(v, b.exponent) for v in (b.posted, b.held, b.available)]


def major_units(value: Any, exponent: int) -> str:
    """Minor units shown in major units, exactly (no float)."""
    units = int(value)
    if exponent == 0:
        return f"{units:,}"
    sign, digits = ("-" if units < 0 else ""), str(abs(units)).rjust(exponent + 1, "0")
    return f"{sign}{int(digits[:-exponent]):,}.{digits[-exponent:]}"


def ledger_check(args: argparse.Namespace) -> int:
    from ops.ledger_check import ledger_counts, violations
    from sinks.migrate import connect
    from topics.codec import codec_from_settings

    settings = settings_or_error()
    codec = codec_from_settings(settings)  # outbox rows carry the deployment's framing
    with connect(settings.database_url.get_secret_value()) as conn:
        found = list(violations(conn, codec))
        counts = ledger_counts(conn)
    for v in found:
        err.print(f"ledger check: {v.rule}: {v.detail}", markup=False)
    journals, entries, holds = counts
    if found:
        err.print(f"ledger check: FAILED, {len(found)} violation(s) over {journals} journals", markup=False)
        return 1
    out.print(
        f"ledger check: ok: {journals} journals, {entries} entries, {holds} active holds; "
        "every journal balances, trial balance zero per tenant and currency, no account below its "
        "overdraft limit, holds add up, every money movement posted",
        markup=False,
    )
    return 0


def add_ledger_commands(sub: Any, command: Callable[..., Any]) -> None:
    """Register `accounts` and `ledger` on the top-level subparsers."""
    from connectors.accounts import KINDS

    acc = sub.add_parser("accounts", help="the accounts registry: open, freeze, unfreeze, close")
    acc_sub = acc.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    op = command(
        acc_sub,
        "open",
        accounts_open,
        "open an account in a currency (the exponent comes from the currency registry)",
    )
    op.add_argument("--tenant", required=True, help="the tenant the account belongs to")
    op.add_argument("--account", required=True, help="the account id")
    op.add_argument(
        "--currency", required=True, help="ISO 4217 code or registered crypto asset (e.g. EUR, ETH)"
    )
    op.add_argument("--holder", help="who holds it (default: the account id)")
    op.add_argument("--kind", choices=KINDS, default="customer", help="account kind (default customer)")
    op.add_argument(
        "--overdraft", type=_non_negative, default=0, help="overdraft limit in minor units (default 0)"
    )
    for status, verb in (("frozen", "freeze"), ("active", "unfreeze"), ("closed", "close")):
        p = command(acc_sub, verb, _status_command(status), f"{verb} an account (every currency, or one)")
        p.add_argument("--tenant", required=True, help="the tenant the account belongs to")
        p.add_argument("--account", required=True, help="the account id")
        p.add_argument("--currency", help="only this currency of the account")
        p.add_argument("--reason", help="why, kept on the event")

    led = sub.add_parser("ledger", help="the ledger: balances and its invariants")
    led_sub = led.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    command(
        led_sub,
        "check",
        ledger_check,
        "check every invariant of the ledger; exit 1 and print each violation if one fails",
    )
    bal = command(led_sub, "balances", ledger_balances, "posted, held and available per customer account")
    bal.add_argument("--tenant", help="only this tenant")
    bal.add_argument("--account", help="only this account")


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of minor units") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value
