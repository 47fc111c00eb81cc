"""Funds reserved before money leaves: one reservation, used by every agent that spends.

`reserve` locks the account's registry row (so two workers reserving against one account take
turns and each sees the other's hold), computes available = posted - active holds + overdraft
limit, and places an ACTIVE hold when the amount fits. It runs in the caller's transaction, so
the hold commits with the decision it backs. The ledger sink completes a hold in the same
transaction as the posting that names it; a failure releases it; the sweep expires it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from topics.currencies import CurrencyError, CurrencyRegistry
from topics.journals import account

HOLD_SECONDS = 30 * 60
"""A reservation holds funds for 30 minutes unless its money reaches a provider first."""

LOCK_ACCOUNT = (
    "SELECT status, overdraft_limit FROM accounts "
    "WHERE tenant_id = %s AND account_id = %s AND currency = %s FOR UPDATE"
)
AVAILABLE = """
SELECT coalesce((SELECT credits - debits FROM balances WHERE ledger_account = %(code)s), 0),
       coalesce((SELECT sum(amount) FROM holds
                  WHERE ledger_account = %(code)s AND status = 'ACTIVE' AND expires_at > now()), 0)
"""
PLACE = """
INSERT INTO holds (hold_id, tenant_id, account_id, ledger_account, currency, exponent, amount, status, reason,
                   expires_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, 'ACTIVE', %s, now() + make_interval(secs => %s))
ON CONFLICT (hold_id) DO NOTHING
"""
RELEASE = """
UPDATE holds SET status = 'RELEASED', settled_at = now(), reason = reason || '; ' || %s
 WHERE hold_id = %s AND status = 'ACTIVE'
"""
PIN = (
    "UPDATE holds SET expires_at = 'infinity' WHERE hold_id = %s AND status = 'ACTIVE' AND expires_at > now()"
)
EXPIRE = (
    "UPDATE holds SET status = 'EXPIRED', settled_at = now() WHERE status = 'ACTIVE' AND expires_at <= now() "
    "RETURNING hold_id"
)


@dataclass(frozen=True)
class Spend:
    """What a reservation is asked to hold."""

    hold_id: str
    tenant: str
    account_id: str
    currency: str
    exponent: int
    units: int
    """Everything the movement will take: its amount plus its fees."""
    reason: str
    breakdown: str | None = None
    """What `units` is made of, for the refusal's message (e.g. "10000 + fees 37")."""


def reserve(
    conn: psycopg.Connection[Any], registry: CurrencyRegistry, spend: Spend, *, seconds: int = HOLD_SECONDS
) -> str | None:
    """Hold `spend.units` on the account, or return why not (reason codes first, e.g.
    INSUFFICIENT_FUNDS, ACCOUNT_NOT_FOUND, ACCOUNT_FROZEN, CURRENCY_MISMATCH)."""
    try:
        registry.check(spend.currency, spend.exponent)
    except CurrencyError as e:
        return f"CURRENCY_MISMATCH: {e}"
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(LOCK_ACCOUNT, (spend.tenant, spend.account_id, spend.currency)).fetchone()
        if row is None:
            return f"ACCOUNT_NOT_FOUND: no {spend.currency} account {spend.account_id} for this tenant"
        status, overdraft = row
        if status != "active":
            return f"ACCOUNT_{str(status).upper()}: account {spend.account_id} is {status}"
        code = account("customer", spend.tenant, spend.account_id, spend.currency)
        posted, held = cur.execute(AVAILABLE, {"code": code}).fetchone() or (0, 0)
        available = int(posted) - int(held) + int(overdraft)
        if spend.units > available:
            made_of = f" ({spend.breakdown})" if spend.breakdown else ""
            return (
                f"INSUFFICIENT_FUNDS: {spend.units} {spend.currency} needed{made_of}, {available} available"
            )
        cur.execute(
            PLACE,
            (
                spend.hold_id,
                spend.tenant,
                spend.account_id,
                code,
                spend.currency,
                spend.exponent,
                spend.units,
                spend.reason,
                seconds,
            ),
        )
    return None


def pin(conn: psycopg.Connection[Any], hold_id: str) -> bool:
    """Keep a hold that still stands until its posting completes it (its money has left for a
    provider, so it must not expire); False when it lapsed or was never placed."""
    pinned = conn.execute(PIN, (hold_id,))
    return pinned.rowcount == 1


def release(conn: psycopg.Connection[Any], hold_id: str, why: str) -> bool:
    """Give an ACTIVE hold's funds back (its movement failed or was compensated); False when
    there was no active hold."""
    return conn.execute(RELEASE, (f"released: {why}", hold_id)).rowcount == 1


def expire(conn: psycopg.Connection[Any]) -> list[str]:
    """Expire every ACTIVE hold past its time (the funds were never spent); their ids."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return [hold for (hold,) in cur.execute(EXPIRE).fetchall()]
