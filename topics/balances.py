"""The contract of `accounts.balance.updated.v1`: a customer account's committed balance.

Whoever changes a balance announces it in the same PostgreSQL transaction, through the
outbox: the ledger sink when it posts or places a card hold, the status agent when it
reserves funds for a transfer or releases them, the sweep when a hold expires. The event
carries posted (total), held (reserved) and available (posted - held + overdraft limit).
Its id is derived from the state it announces, so a replay that changes nothing announces
nothing new. It carries the correlation id of the work that changed the balance (the journal's,
or the hold's: a hold keeps the correlation id of the work that placed it) and, as its causation
id, the event that changed it; a hold's expiry is caused by no event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.events import derived_event_id, new_metadata
from topics.money import money_record
from topics.names import ACCOUNTS_BALANCE_UPDATED_V1
from topics.outbox import enqueue_many

BALANCE_TOPIC = ACCOUNTS_BALANCE_UPDATED_V1

HOLDS_STATE = """
WITH touched AS (
    SELECT ledger_account AS code, max(hold_id) AS cause, min(tenant_id) AS tenant_id,
           min(account_id) AS account_id, min(currency) AS currency, min(exponent) AS exponent
      FROM holds WHERE hold_id = ANY(%s) GROUP BY ledger_account
)
SELECT t.code, t.tenant_id, t.account_id, t.currency, t.exponent,
       coalesce((SELECT credits - debits FROM balances WHERE ledger_account = t.code), 0),
       coalesce((SELECT sum(h.amount) FROM holds h
                  WHERE h.ledger_account = t.code AND h.status = 'ACTIVE' AND h.expires_at > now()), 0),
       coalesce((SELECT overdraft_limit FROM accounts r WHERE r.tenant_id = t.tenant_id
                    AND r.account_id = t.account_id AND r.currency = t.currency), 0),
       t.cause, (SELECT correlation_id FROM holds WHERE hold_id = t.cause)
  FROM touched t ORDER BY t.code
"""
"""The committed balance of every customer account one of the given holds is on."""


@dataclass(frozen=True)
class BalanceState:
    code: str
    tenant: str
    account_id: str
    currency: str
    exponent: int
    posted: int
    held: int
    overdraft: int
    cause: str
    """What changed it: a journal entry id or a hold id."""
    correlation_id: str | None = None
    """The work that changed it (a new one is made when it is not known, e.g. a hold from before)."""
    causation_id: str | None = None
    """The event that changed it (none for a hold's expiry)."""


def balance_record(state: BalanceState, *, environment: str, source: str, producer: str) -> dict[str, Any]:
    """The event announcing `state`, its id derived from the state itself."""
    key = f"{state.code}:{state.posted}:{state.held}:{state.overdraft}:{state.cause}"
    meta = new_metadata(
        "accounts.balance.updated",
        tenant_id=state.tenant,
        environment=environment,  # type: ignore[arg-type]
        source=source,
        correlation_id=state.correlation_id,
        causation_id=state.causation_id,
        event_id=derived_event_id(key, producer, "balance"),
    )
    available, held, posted = state.posted - state.held + state.overdraft, state.held, state.posted
    return {
        "metadata": meta,
        "account_id": state.account_id,
        "asset": state.currency,
        "available": money_record(available, state.currency, state.exponent)[1],
        "reserved": money_record(held, state.currency, state.exponent)[1],
        "total": money_record(posted, state.currency, state.exponent)[1],
        "journal_entry_id": state.cause,
    }


@dataclass(frozen=True)
class BalanceAnnouncer:
    """Announces the balances a component's hold changes touched, in the caller's transaction."""

    codec: AvroCodec
    catalog: Catalog
    environment: str
    source: str
    producer: str

    def holds_changed(self, conn: psycopg.Connection[Any], causes: Mapping[str, str | None]) -> int:
        """One event per customer account the holds are on; how many were announced.

        `causes` maps each hold placed, released or expired to the id of the event that did it
        (None for an expiry); an account's event names the cause of its latest hold."""
        if not causes:
            return 0
        rows = conn.cursor(row_factory=tuple_row).execute(HOLDS_STATE, (list(causes),)).fetchall()
        records = []
        for code, tenant, account_id, currency, exponent, posted, held, overdraft, cause, correlation in rows:
            state = BalanceState(
                code,
                tenant,
                account_id,
                currency,
                int(exponent),
                int(posted),
                int(held),
                int(overdraft),
                cause,
                correlation,
                causes.get(cause),
            )
            records.append(
                balance_record(
                    state, environment=self.environment, source=self.source, producer=self.producer
                )
            )
        enqueue_many(conn, self.codec, self.catalog, BALANCE_TOPIC, records)
        return len(rows)
