"""Funds reserved before money leaves: one reservation, used by every agent that spends.

A reservation locks the account's registry row (so two workers reserving against one account
take turns and each sees the other's hold), computes available = posted - active holds +
overdraft limit, and places an ACTIVE hold when the amount fits. It runs in the caller's
transaction, so the hold commits with the decision it backs. The ledger sink completes a hold
in the same transaction as the posting that names it; a failure releases it; the sweep expires
it.

An agent deciding a batch uses `Reservations`: the accounts the batch may spend from are locked
in one statement, in key order (so two workers never wait on each other in a cycle), and their
posted balances and active holds read in one more. Each reservation then decides from those
figures, kept current by the holds the batch places and releases, and the holds it places are
written together (`place`, before the batch reads or changes them). The figures are one
statement's snapshot: a posting committed meanwhile moves posted funds and completes its hold
together, which leaves available unchanged; money credited meanwhile is seen by the next batch.
A hold asked for again under an id already placed is counted again within the batch (the row is
not written twice): the batch refuses rather than spends what may not be there. `reserve` is
one reservation on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from topics.currencies import CurrencyError, CurrencyRegistry
from topics.journals import account

HOLD_SECONDS = 30 * 60
"""A reservation holds funds for 30 minutes unless its money reaches a provider first."""

LOCK_ACCOUNTS = """
SELECT a.tenant_id, a.account_id, a.currency, a.status, a.overdraft_limit
  FROM accounts a
  JOIN unnest(%s::text[], %s::text[], %s::text[]) AS wanted(tenant_id, account_id, currency)
 USING (tenant_id, account_id, currency)
 ORDER BY a.tenant_id, a.account_id, a.currency
   FOR UPDATE OF a
"""
AVAILABLE = """
SELECT c.code,
       coalesce((SELECT credits - debits FROM balances WHERE ledger_account = c.code), 0),
       coalesce((SELECT sum(amount) FROM holds
                  WHERE ledger_account = c.code AND status = 'ACTIVE' AND expires_at > now()), 0)
  FROM unnest(%s::text[]) AS c(code)
"""
PLACE = """
INSERT INTO holds (hold_id, tenant_id, account_id, ledger_account, currency, exponent, amount, status, reason,
                   expires_at, correlation_id)
VALUES (%s, %s, %s, %s, %s, %s, %s, 'ACTIVE', %s, now() + make_interval(secs => %s), %s)
ON CONFLICT (hold_id) DO NOTHING
"""
RELEASE = """
UPDATE holds SET status = 'RELEASED', settled_at = now(), reason = reason || '; ' || %s
 WHERE hold_id = %s AND status = 'ACTIVE'
RETURNING ledger_account, amount, expires_at > now()
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
    correlation_id: str | None = None
    """The work the hold is for: the balance changes the hold causes are announced under it."""


AccountKey = tuple[str, str, str]
"""tenant, account id, currency."""


@dataclass
class _Funds:
    code: str
    status: str
    overdraft: int
    posted: int
    held: int


class Reservations:
    """A batch's reservations in the caller's transaction (see the module's doc). Used as a
    context manager, it places what it reserved when the block ends without an error.

    Args:
        conn: the caller's connection, in its transaction.
        registry: the system's currencies; a spend in another exponent is refused.
        seconds: how long a placed hold stands before the sweep expires it.
    """

    def __init__(
        self, conn: psycopg.Connection[Any], registry: CurrencyRegistry, *, seconds: int = HOLD_SECONDS
    ) -> None:
        self.conn = conn
        self.registry = registry
        self.seconds = seconds
        self._funds: dict[AccountKey, _Funds | None] = {}
        self._by_code: dict[str, _Funds] = {}
        self._placing: list[tuple[Any, ...]] = []

    def __enter__(self) -> Reservations:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.place()

    def lock(self, keys: Iterable[AccountKey]) -> None:
        """Lock these accounts (those not locked yet) and read their funds: two statements however many."""
        wanted = sorted(set(keys) - self._funds.keys())
        if not wanted:
            return
        with self.conn.cursor(row_factory=tuple_row) as cur:
            found = {
                (tenant, acc, currency): (status, int(overdraft))
                for tenant, acc, currency, status, overdraft in cur.execute(
                    LOCK_ACCOUNTS, [list(column) for column in zip(*wanted, strict=True)]
                ).fetchall()
            }
            codes = {key: account("customer", *key) for key in found}
            figures = {
                code: (int(posted), int(held))
                for code, posted, held in cur.execute(AVAILABLE, (list(codes.values()),)).fetchall()
            }
        for key in wanted:
            if key not in found:
                self._funds[key] = None
                continue
            status, overdraft = found[key]
            posted, held = figures[codes[key]]
            funds = _Funds(codes[key], str(status), overdraft, posted, held)
            self._funds[key] = self._by_code[funds.code] = funds

    def reserve(self, spend: Spend) -> str | None:
        """Hold `spend.units` on the account, or return why not (reason codes first, e.g.
        INSUFFICIENT_FUNDS, ACCOUNT_NOT_FOUND, ACCOUNT_FROZEN, CURRENCY_MISMATCH)."""
        try:
            self.registry.check(spend.currency, spend.exponent)
        except CurrencyError as e:
            return f"CURRENCY_MISMATCH: {e}"
        key = (spend.tenant, spend.account_id, spend.currency)
        if key not in self._funds:
            self.lock([key])
        funds = self._funds[key]
        if funds is None:
            return f"ACCOUNT_NOT_FOUND: no {spend.currency} account {spend.account_id} for this tenant"
        if funds.status != "active":
            return f"ACCOUNT_{funds.status.upper()}: account {spend.account_id} is {funds.status}"
        available = funds.posted - funds.held + funds.overdraft
        if spend.units > available:
            made_of = f" ({spend.breakdown})" if spend.breakdown else ""
            return (
                f"INSUFFICIENT_FUNDS: {spend.units} {spend.currency} needed{made_of}, {available} available"
            )
        self._placing.append(
            (
                spend.hold_id,
                spend.tenant,
                spend.account_id,
                funds.code,
                spend.currency,
                spend.exponent,
                spend.units,
                spend.reason,
                self.seconds,
                spend.correlation_id,
            )
        )
        funds.held += spend.units
        return None

    def place(self) -> None:
        """Write the holds reserved since the last call (the caller's transaction commits them)."""
        if self._placing:
            with self.conn.cursor() as cur:
                cur.executemany(PLACE, self._placing)
            self._placing = []

    def release(self, hold_id: str, why: str) -> bool:
        """Give an ACTIVE hold's funds back (its movement failed or was compensated), keeping the
        figures of a locked account current; False when there was no active hold."""
        self.place()
        with self.conn.cursor(row_factory=tuple_row) as cur:
            row = cur.execute(RELEASE, (f"released: {why}", hold_id)).fetchone()
        if row is None:
            return False
        code, amount, counted = row
        funds = self._by_code.get(code)
        if counted and funds is not None:
            funds.held -= int(amount)
        return True

    def pin(self, hold_id: str) -> bool:
        """Keep a hold that still stands until its posting completes it (its money has left for a
        provider, so it must not expire); False when it lapsed or was never placed. The batch's
        holds are placed first."""
        self.place()
        return self.conn.execute(PIN, (hold_id,)).rowcount == 1


def reserve(
    conn: psycopg.Connection[Any], registry: CurrencyRegistry, spend: Spend, *, seconds: int = HOLD_SECONDS
) -> str | None:
    """One reservation on its own (`Reservations.reserve`), its hold placed."""
    with Reservations(conn, registry, seconds=seconds) as reservations:
        return reservations.reserve(spend)


def expire(conn: psycopg.Connection[Any]) -> list[str]:
    """Expire every ACTIVE hold past its time (the funds were never spent); their ids."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return [hold for (hold,) in cur.execute(EXPIRE).fetchall()]
