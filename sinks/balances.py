"""The ledger's read side for customers: posted, held and available per account and currency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from topics.journals import holder_of

BALANCES = """
SELECT a.code, a.tenant_id, a.currency, a.exponent, b.credits - b.debits AS posted,
       coalesce((SELECT sum(h.amount) FROM holds h WHERE h.ledger_account = a.code AND h.status = 'ACTIVE'
                   AND h.expires_at > now()), 0) AS held,
       coalesce(r.overdraft_limit, 0) AS overdraft, coalesce(r.status, 'unregistered') AS status
  FROM ledger_accounts a
  JOIN balances b ON b.ledger_account = a.code
  LEFT JOIN accounts r ON r.tenant_id = a.tenant_id AND r.currency = a.currency
                      AND r.account_id = ledger_account_holder(a.code, a.currency)
 WHERE a.code LIKE 'customer:%%' AND (%(tenant)s::text IS NULL OR a.tenant_id = %(tenant)s)
   AND (%(account)s::text IS NULL OR a.code LIKE 'customer:%%/' || %(account)s || ':%%')
 ORDER BY a.tenant_id, a.code
"""


@dataclass(frozen=True)
class Balance:
    tenant: str
    account_id: str
    currency: str
    exponent: int
    posted: int
    held: int
    overdraft: int
    status: str
    """The registry's status, or `unregistered` (e.g. a currency an FX conversion bought)."""

    @property
    def available(self) -> int:
        return self.posted - self.held + self.overdraft


def customer_balances(
    conn: psycopg.Connection[Any], tenant: str | None = None, account: str | None = None
) -> list[Balance]:
    """Every customer ledger account with postings, of one tenant or all; `account` is an id or a
    LIKE pattern of ids."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(BALANCES, {"tenant": tenant, "account": account}).fetchall()
    return [
        Balance(
            r["tenant_id"],
            holder_of(r["code"]),
            r["currency"],
            int(r["exponent"]),
            int(r["posted"]),
            int(r["held"]),
            int(r["overdraft"]),
            r["status"],
        )
        for r in rows
    ]
