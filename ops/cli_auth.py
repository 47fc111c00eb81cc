"""`ledgerstream tenants ...` and `ledgerstream keys ...`: who may call the command API."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from rich.table import Table

from ops.console import Parser, err, out, settings_or_error


def _connection() -> Any:
    from sinks.migrate import connect

    return connect(settings_or_error().database_url.get_secret_value())


def tenants_create(args: argparse.Namespace) -> int:
    from connectors.auth import create_tenant

    with _connection() as conn:
        created = create_tenant(conn, args.tenant, args.name or args.tenant)
    out.print(f"tenant {args.tenant}: {'created' if created else 'already exists'}", markup=False)
    return 0


def keys_issue(args: argparse.Namespace) -> int:
    from connectors.auth import issue_key

    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    with _connection() as conn:
        key_id, token = issue_key(conn, args.tenant, args.principal, scopes)
    err.print(
        f"key {key_id} for {args.principal} of {args.tenant} ({', '.join(sorted(scopes))}); "
        "the token below is shown once",
        markup=False,
    )
    out.print(token, markup=False)
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    from connectors.auth import revoke_key

    with _connection() as conn:
        revoked = revoke_key(conn, args.key_id)
    if not revoked:
        err.print(f"keys revoke: no active key {args.key_id!r}", markup=False)
        return 1
    out.print(f"key {args.key_id} revoked", markup=False)
    return 0


def keys_list(args: argparse.Namespace) -> int:
    from connectors.auth import list_keys

    table = Table("key", "tenant", "principal", "scopes", "created (UTC)", "revoked (UTC)")
    with _connection() as conn:
        for key_id, tenant, principal, scopes, created, revoked in list_keys(conn, args.tenant):
            table.add_row(
                key_id,
                tenant,
                principal,
                ", ".join(scopes),
                f"{created:%Y-%m-%d %H:%M}",
                f"{revoked:%Y-%m-%d %H:%M}" if revoked else "",
            )
    out.print(table)
    return 0


def add_auth_commands(sub: Any, command: Callable[..., Any]) -> None:
    """Register `tenants` and `keys` on the top-level subparsers."""
    from connectors.auth import SCOPES

    ten = sub.add_parser("tenants", help="tenants of the platform")
    ten_sub = ten.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    cr = command(ten_sub, "create", tenants_create, "create a tenant (idempotent)")
    cr.add_argument("--tenant", required=True, help="the tenant id (1-64 of A-Z a-z 0-9 _ . @ -)")
    cr.add_argument("--name", help="a display name (default: the id)")

    keys = sub.add_parser("keys", help="API keys of the command API (only their hashes are stored)")
    keys_sub = keys.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    iss = command(keys_sub, "issue", keys_issue, "issue a key; prints the token once, on stdout")
    iss.add_argument("--tenant", required=True, help="the tenant the key acts for")
    iss.add_argument("--principal", required=True, help="who uses it (a service or a person)")
    iss.add_argument("--scopes", required=True, help=f"comma-separated, of: {', '.join(SCOPES)}")
    rv = command(keys_sub, "revoke", keys_revoke, "revoke a key at once")
    rv.add_argument("key_id", help="the key's id (the 16 hex digits after lsk_)")
    ls = command(keys_sub, "list", keys_list, "every key, never a secret")
    ls.add_argument("--tenant", help="only this tenant's keys")
