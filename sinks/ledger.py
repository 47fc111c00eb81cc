"""The ledger sink: `ledger.journal.posted.v1` into journal entries, entries and balances,
and card authorizations (`cards.transaction.received.v1`) into holds.

Per batch, in one transaction: COPY the batch into temporary staging tables (its lines, and
each account they name once), create ledger accounts on first use (in the journal's tenant's
books, with the registry's exponent), insert the journal entries that are new (a repeated
`reference_id` is ignored, so a replay changes nothing), insert the entries of the new ones
only, apply one aggregated (debits, credits) delta per account, in account order, so a hot
account such as fee revenue is updated once per batch (customers' accounts first, the
platform's last, just before the commit: a hot row is locked for the least time), and
complete the holds the new postings turn into money moved. A journal whose lines leave its
tenant's books, or whose exponent is not the currency registry's, is refused to the
dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from sinks.base import Sink
from sinks.errors import PoisonEvent
from topics.balances import BALANCE_TOPIC, BalanceState, balance_record
from topics.catalog import Catalog, load_catalog
from topics.codec import AvroCodec
from topics.currencies import CurrencyError, CurrencyRegistry
from topics.events import Event
from topics.journals import (
    CARD_HOLD_DAYS,
    PostedJournal,
    PostingError,
    account,
    card_hold_id,
    holder_of,
    opened_account,
    posted_journal,
)
from topics.money import InexactValue, money_parts
from topics.names import CARDS_TRANSACTION_RECEIVED_V1, LEDGER_JOURNAL_POSTED_V1
from topics.outbox import enqueue_many
from topics.settings import Settings

TOPIC = LEDGER_JOURNAL_POSTED_V1
CARDS = CARDS_TRANSACTION_RECEIVED_V1

STAGING = """
CREATE TEMP TABLE IF NOT EXISTS stage_journals (
    journal_entry_id uuid, reference_id text, description text, tenant_id text, environment text,
    correlation_id text, source_event_id uuid, reverses text, posted_at timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_holds (
    hold_id text, tenant_id text, account_id text, ledger_account text, currency text, exponent smallint,
    amount numeric(78, 0), status text, reason text, expires_at timestamptz, journal_entry_id uuid,
    correlation_id text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_lines (
    journal_entry_id uuid, line_no smallint, ledger_account text, side text, amount numeric(78, 0),
    currency text, exponent smallint
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_accounts (
    code text, account_type text, normal_side text, currency text, exponent smallint
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_new (journal_entry_id uuid PRIMARY KEY) ON COMMIT DELETE ROWS;
"""

ACCOUNTS = """
INSERT INTO ledger_accounts (code, account_type, normal_side, currency, exponent, tenant_id)
SELECT code, account_type, normal_side, currency, exponent, split_part(split_part(code, ':', 2), '/', 1)
  FROM stage_accounts ORDER BY code
ON CONFLICT (code) DO NOTHING
"""

JOURNALS = """
WITH inserted AS (
    INSERT INTO journal_entries (journal_entry_id, reference_id, description, tenant_id, environment,
                                 correlation_id, source_event_id, reverses, posted_at)
    SELECT journal_entry_id, reference_id, description, tenant_id, environment,
           correlation_id, source_event_id, reverses, posted_at
      FROM stage_journals ORDER BY reference_id
    ON CONFLICT (reference_id) DO NOTHING
    RETURNING journal_entry_id
)
INSERT INTO stage_new SELECT journal_entry_id FROM inserted
"""

ENTRIES = """
INSERT INTO entries (journal_entry_id, line_no, ledger_account, side, amount, currency, exponent)
SELECT e.journal_entry_id, e.line_no, e.ledger_account, e.side, e.amount, e.currency, e.exponent
  FROM stage_lines e JOIN stage_new n USING (journal_entry_id)
"""

BALANCES = """
INSERT INTO balances AS b (ledger_account, currency, debits, credits, updated_at)
SELECT e.ledger_account, e.currency,
       sum(CASE WHEN e.side = 'DEBIT' THEN e.amount ELSE 0 END),
       sum(CASE WHEN e.side = 'CREDIT' THEN e.amount ELSE 0 END),
       now()
  FROM stage_lines e JOIN stage_new n USING (journal_entry_id)
 WHERE (e.ledger_account LIKE 'customer:%%') = %(customers)s
 GROUP BY e.ledger_account, e.currency
 ORDER BY e.ledger_account
ON CONFLICT (ledger_account) DO UPDATE
   SET debits = b.debits + EXCLUDED.debits,
       credits = b.credits + EXCLUDED.credits,
       updated_at = EXCLUDED.updated_at
"""

# Holds: a placement (card authorization) inserts ACTIVE; a release or a completion
# settles an ACTIVE hold, or records the settled hold when it overtook its placement.
# Completions come only from journals this batch inserted, so a replayed posting
# settles nothing twice.
HOLDS = """
INSERT INTO holds AS h (hold_id, tenant_id, account_id, ledger_account, currency, exponent, amount, status,
                        reason, expires_at, settled_at, correlation_id)
SELECT DISTINCT ON (s.hold_id) s.hold_id, s.tenant_id, s.account_id, s.ledger_account, s.currency, s.exponent,
       s.amount, s.status, s.reason, s.expires_at, CASE WHEN s.status = 'ACTIVE' THEN NULL ELSE now() END,
       s.correlation_id
  FROM stage_holds s
 WHERE s.journal_entry_id IS NULL OR s.journal_entry_id IN (SELECT journal_entry_id FROM stage_new)
 ORDER BY s.hold_id, s.status = 'ACTIVE'
ON CONFLICT (hold_id) DO UPDATE
   SET status = EXCLUDED.status, settled_at = now(), reason = h.reason || '; ' || EXCLUDED.reason
 WHERE h.status = 'ACTIVE' AND EXCLUDED.status <> 'ACTIVE'
"""
BALANCE_STATE = """
WITH touched AS (
    SELECT e.ledger_account AS code, max(e.journal_entry_id::text) AS cause
      FROM stage_lines e JOIN stage_new n USING (journal_entry_id)
     WHERE e.ledger_account LIKE 'customer:%' GROUP BY e.ledger_account
    UNION ALL
    SELECT ledger_account, max(hold_id) FROM stage_holds
     WHERE journal_entry_id IS NULL GROUP BY ledger_account
), latest AS (SELECT code, max(cause) AS cause FROM touched GROUP BY code)
SELECT a.code, a.tenant_id, a.currency, a.exponent,
       coalesce(b.credits - b.debits, 0),
       coalesce((SELECT sum(h.amount) FROM holds h WHERE h.ledger_account = a.code AND h.status = 'ACTIVE'
                   AND h.expires_at > now()), 0),
       coalesce(r.overdraft_limit, 0), l.cause
  FROM latest l JOIN ledger_accounts a ON a.code = l.code
  LEFT JOIN balances b ON b.ledger_account = a.code
  LEFT JOIN accounts r ON r.tenant_id = a.tenant_id AND r.currency = a.currency
                      AND r.account_id = ledger_account_holder(a.code, a.currency)
 ORDER BY a.code
"""


@dataclass(frozen=True)
class HoldChange:
    """A hold placed or settled outside a posting (card authorizations, reversals, declines)."""

    hold_id: str
    tenant_id: str
    account_id: str
    ledger_account: str
    currency: str
    exponent: int
    amount: int
    status: str
    reason: str
    expires_at: datetime
    environment: str
    correlation_id: str
    event_id: str
    """The card event that placed or settled it."""


def journal_from_event(record: dict[str, Any]) -> PostedJournal:
    """Map a `JournalPosted` record to a checked journal; one that cannot be posted is poison."""
    try:
        return posted_journal(record)
    except (PostingError, InexactValue) as e:
        raise PoisonEvent(str(e)) from e


def card_hold(record: dict[str, Any]) -> HoldChange | None:
    """The hold a card event places (an authorization) or releases (a reversal, a decline)."""
    status = record["status"]
    if record["direction"] != "DEBIT" or status not in ("AUTHORIZED", "REVERSED", "DECLINED"):
        return None
    meta = record["metadata"]
    units, currency, exponent = money_parts(record["amount"])
    tenant = meta["tenant_id"]
    if units <= 0:
        return None
    occurred: datetime = meta["occurred_at"]
    return HoldChange(
        hold_id=card_hold_id(tenant, record["transaction_id"]),
        tenant_id=tenant,
        account_id=record["account_id"],
        ledger_account=account("customer", tenant, record["account_id"], currency),
        currency=currency,
        exponent=exponent,
        amount=units,
        status="ACTIVE" if status == "AUTHORIZED" else "RELEASED",
        reason=f"card {status.lower()} {record['provider_reference']}",
        expires_at=occurred + timedelta(days=CARD_HOLD_DAYS),
        environment=meta["environment"],
        correlation_id=meta["correlation_id"],
        event_id=str(meta["event_id"]),
    )


Item = PostedJournal | HoldChange | None
"""None: a card event that neither places nor releases a hold (its money posts as a journal)."""


class LedgerSink(Sink[Item]):
    name = "ledger_sink"
    topics = (TOPIC, CARDS)
    outbox_outputs = (BALANCE_TOPIC,)

    def __init__(self) -> None:
        self._outbox: tuple[AvroCodec, Catalog] | None = None

    def bind(self, codec: AvroCodec, settings: Settings) -> None:
        self._outbox = (codec, load_catalog())

    def prepare(self, event: Event) -> Item:
        try:
            if event.topic == CARDS:
                return card_hold(event.record)
            return journal_from_event(event.record)
        except (KeyError, TypeError, ValueError) as e:
            raise PoisonEvent(f"malformed {event.topic} event: {type(e).__name__}: {e}") from e

    def write(self, conn: psycopg.Connection, items: Sequence[Item]) -> None:
        unique: dict[str, PostedJournal] = {}
        holds: list[HoldChange] = []
        for item in items:
            if isinstance(item, PostedJournal):
                unique.setdefault(item.journal.reference_id, item)
            elif item is not None:
                holds.append(item)
        registry = CurrencyRegistry.load(conn)
        checked: set[tuple[str, int]] = set()
        accounts: dict[str, tuple[str, str, str, str, int]] = {}
        for p in unique.values():
            for line in p.journal.lines:
                if (line.currency, line.exponent) not in checked:
                    try:
                        registry.check(line.currency, line.exponent)
                    except CurrencyError as e:  # the registry is the database's: it refuses the row
                        raise psycopg.errors.CheckViolation(f"{p.journal.reference_id}: {e}") from e
                    checked.add((line.currency, line.exponent))
                if line.account not in accounts:
                    accounts[line.account] = opened_account(line)
        with conn.cursor() as cur:
            cur.execute(STAGING)
            with cur.copy(
                "COPY stage_journals (journal_entry_id, reference_id, description, tenant_id, environment, "
                "correlation_id, source_event_id, reverses, posted_at) FROM STDIN"
            ) as copy:
                for p in unique.values():
                    copy.write_row(
                        (
                            p.journal_entry_id,
                            p.journal.reference_id,
                            p.journal.description,
                            p.tenant_id,
                            p.environment,
                            p.correlation_id,
                            p.source_event_id,
                            p.journal.reverses,
                            p.posted_at,
                        )
                    )
            with cur.copy(
                "COPY stage_lines (journal_entry_id, line_no, ledger_account, side, amount, currency, "
                "exponent) FROM STDIN"
            ) as copy:
                for p in unique.values():
                    for n, line in enumerate(p.journal.lines, start=1):
                        copy.write_row(
                            (
                                p.journal_entry_id,
                                n,
                                line.account,
                                line.side,
                                line.units,
                                line.currency,
                                line.exponent,
                            )
                        )
            with cur.copy(
                "COPY stage_accounts (code, account_type, normal_side, currency, exponent) FROM STDIN"
            ) as copy:
                for row in accounts.values():
                    copy.write_row(row)
            with cur.copy(
                "COPY stage_holds (hold_id, tenant_id, account_id, ledger_account, currency, exponent, "
                "amount, status, reason, expires_at, journal_entry_id, correlation_id) FROM STDIN"
            ) as copy:
                for h in holds:
                    copy.write_row(
                        (
                            h.hold_id,
                            h.tenant_id,
                            h.account_id,
                            h.ledger_account,
                            h.currency,
                            h.exponent,
                            h.amount,
                            h.status,
                            h.reason,
                            h.expires_at,
                            None,
                            h.correlation_id,
                        )
                    )
                for p in unique.values():
                    completed = _completed_hold(p)
                    if completed is not None:
                        copy.write_row(completed)
            cur.execute(ACCOUNTS)
            cur.execute(JOURNALS)
            cur.execute(ENTRIES)
            cur.execute(BALANCES, {"customers": True})
            cur.execute(HOLDS)
            environment = next((i.environment for i in items if i is not None), None)
            if self._outbox is not None and environment is not None:
                self._balance_events(conn, *self._outbox, environment, unique.values(), holds)
            # the platform's accounts (fee revenue, clearing: every journal's) last, so their row
            # locks are held for the least time; every batch locks customers first, each set in
            # account order, so two sinks cannot deadlock
            cur.execute(BALANCES, {"customers": False})

    def _balance_events(
        self,
        conn: psycopg.Connection,
        codec: AvroCodec,
        catalog: Catalog,
        environment: str,
        journals: Iterable[PostedJournal],
        holds: Iterable[HoldChange],
    ) -> None:
        """`accounts.balance.updated.v1` for each customer account this batch posted to or held on,
        with the committed balance, through the outbox in the batch's own transaction, under the
        correlation id of its latest change and caused by that change's event. A replayed batch
        posts nothing new and so announces nothing."""
        causes = {p.journal_entry_id.lower(): (p.correlation_id, p.event_id) for p in journals}
        causes.update((h.hold_id, (h.correlation_id, h.event_id)) for h in holds)
        rows = conn.execute(BALANCE_STATE).fetchall()
        records = (
            balance_record(
                BalanceState(
                    code,
                    tenant,
                    holder_of(code),
                    currency,
                    int(exponent),
                    int(posted),
                    int(held),
                    int(overdraft),
                    cause,
                    *causes.get(cause, (None, None)),
                ),
                environment=environment,
                source="sinks.ledger",
                producer=self.name,
            )
            for code, tenant, currency, exponent, posted, held, overdraft, cause in rows
        )
        enqueue_many(conn, codec, catalog, BALANCE_TOPIC, records)


def _completed_hold(p: PostedJournal) -> tuple[Any, ...] | None:
    """The stage_holds row of the hold a posting completes: the customer's debit line."""
    hold = p.journal.completes_hold
    if hold is None:
        return None
    debits = (ln for ln in p.journal.lines if ln.side == "DEBIT" and ln.account.startswith("customer:"))
    line = next(debits, None)
    if line is None:
        return None
    account_id = holder_of(line.account)
    return (
        hold,
        p.tenant_id,
        account_id,
        line.account,
        line.currency,
        line.exponent,
        line.units,
        "COMPLETED",
        f"posted as {p.journal.reference_id}",
        p.posted_at,
        p.journal_entry_id,
        p.correlation_id,
    )
