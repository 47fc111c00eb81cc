"""The accounts registry's commands: open an account in a currency, freeze, unfreeze or
close it. Each change and its event (`accounts.account.opened.v1`,
`accounts.account.status_changed.v1`) commit together through the outbox.

The exponent comes from the currency registry, never from the caller. The status
agent reserves funds only on an active account of the transfer's currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.currencies import CurrencyRegistry
from topics.errors import LedgerstreamError
from topics.events import new_metadata
from topics.money import money_record
from topics.names import ACCOUNTS_ACCOUNT_OPENED_V1, ACCOUNTS_ACCOUNT_STATUS_CHANGED_V1
from topics.outbox import enqueue

Kind = Literal["customer", "clearing", "custody", "fee_revenue", "network_fees", "fx_position", "suspense"]
Status = Literal["active", "frozen", "closed"]
KINDS: tuple[str, ...] = (
    "customer",
    "clearing",
    "custody",
    "fee_revenue",
    "network_fees",
    "fx_position",
    "suspense",
)

OPENED = ACCOUNTS_ACCOUNT_OPENED_V1
CHANGED = ACCOUNTS_ACCOUNT_STATUS_CHANGED_V1
OPEN = """
INSERT INTO accounts (tenant_id, account_id, currency, exponent, environment, holder, kind, overdraft_limit)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING opened_at
"""
LOCK = (
    "SELECT account_id, currency, status FROM accounts WHERE tenant_id = %s AND account_id = %s "
    "AND (%s::text IS NULL OR currency = %s) ORDER BY currency FOR UPDATE"
)
SET_STATUS = (
    "UPDATE accounts SET status = %s, updated_at = now() "
    "WHERE tenant_id = %s AND account_id = %s AND currency = %s"
)


class AccountError(LedgerstreamError, ValueError):
    """A command the registry refuses: unknown currency, unknown account, a closed account."""


@dataclass(frozen=True)
class Opened:
    account_id: str
    currency: str
    exponent: int
    created: bool
    """False when the account was already open (the command is idempotent)."""


def open_account(
    conn: psycopg.Connection[Any],
    codec: AvroCodec,
    catalog: Catalog,
    *,
    tenant: str,
    environment: str,
    account_id: str,
    currency: str,
    holder: str,
    kind: str = "customer",
    overdraft_limit: int = 0,
    correlation_id: str | None = None,
    user_id: str | None = None,
) -> Opened:
    """Open `account_id` in `currency` for `tenant`; opening it again changes nothing."""
    if kind not in KINDS:
        raise AccountError(f"unknown account kind {kind!r} (one of {', '.join(KINDS)})")
    if type(overdraft_limit) is not int or overdraft_limit < 0:
        raise AccountError(
            f"overdraft limit {overdraft_limit!r} must be a non-negative integer of minor units"
        )
    exponent = CurrencyRegistry.load(conn).exponent(currency)
    with conn.transaction():
        row = conn.execute(
            OPEN, (tenant, account_id, currency, exponent, environment, holder, kind, overdraft_limit)
        ).fetchone()
        if row is not None:
            enqueue(
                conn,
                codec,
                catalog,
                OPENED,
                {
                    "metadata": new_metadata(
                        "accounts.account.opened",
                        tenant_id=tenant,
                        environment=environment,  # type: ignore[arg-type]
                        source="connectors.accounts",
                        correlation_id=correlation_id,
                        user_id=user_id,
                    ),
                    "account_id": account_id,
                    "currency": currency,
                    "exponent": exponent,
                    "holder": holder,
                    "kind": kind,
                    "overdraft_limit": money_record(overdraft_limit, currency, exponent)[1],
                },
            )
    return Opened(account_id, currency, exponent, row is not None)


def set_status(
    conn: psycopg.Connection[Any],
    codec: AvroCodec,
    catalog: Catalog,
    *,
    tenant: str,
    environment: str,
    account_id: str,
    status: Status,
    currency: str | None = None,
    reason: str | None = None,
    correlation_id: str | None = None,
    user_id: str | None = None,
) -> list[tuple[str, str, str]]:
    """Move an account (every currency of it, or one) to `status`; returns (currency, from, to) per change.
    A closed account stays closed."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(LOCK, (tenant, account_id, currency, currency)).fetchall()
        if not rows:
            which = f" in {currency}" if currency else ""
            raise AccountError(f"tenant {tenant!r} has no account {account_id!r}{which}")
        changes: list[tuple[str, str, str]] = []
        for row in rows:
            if row["status"] == status:
                continue
            if row["status"] == "closed":
                raise AccountError(f"account {account_id} ({row['currency']}) is closed")
            cur.execute(SET_STATUS, (status, tenant, account_id, row["currency"]))
            enqueue(
                conn,
                codec,
                catalog,
                CHANGED,
                {
                    "metadata": new_metadata(
                        "accounts.account.status_changed",
                        tenant_id=tenant,
                        environment=environment,  # type: ignore[arg-type]
                        source="connectors.accounts",
                        correlation_id=correlation_id,
                        user_id=user_id,
                    ),
                    "account_id": account_id,
                    "currency": row["currency"],
                    "from_status": row["status"],
                    "to_status": status,
                    "reason": reason,
                },
            )
            changes.append((row["currency"], row["status"], status))
        return changes


def link_provider(conn: psycopg.Connection[Any], provider: str, ref: str, tenant: str, account: str) -> None:
    """Say which tenant's account a provider's id (a card, a customer, a wallet) belongs to."""
    conn.execute(
        "INSERT INTO provider_links (provider, external_ref, tenant_id, account_id)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (provider, external_ref) DO UPDATE"
        " SET tenant_id = excluded.tenant_id, account_id = excluded.account_id, linked_at = now()",
        (provider, ref, tenant, account),
    )
