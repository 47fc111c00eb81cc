"""The ledger sink: `ledger.journal.posted.v1` into journal entries, entries and balances.

Per batch, in one transaction: COPY the batch into temporary staging tables, create
ledger accounts on first use, insert the journal entries that are new (a repeated
`reference_id` is ignored, so a replay changes nothing), insert the entries of the
new ones only, and apply one aggregated (debits, credits) delta per account, in
account order, so a hot account such as fee revenue is updated once per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from sinks.base import Sink
from sinks.errors import PoisonEvent
from streams.ledger.postings import Journal, Line, PostingError, account_kind, check_balanced
from topics.events import Event
from topics.money import InexactValue, money_parts

TOPIC = "ledger.journal.posted.v1"

STAGING = """
CREATE TEMP TABLE IF NOT EXISTS stage_journals (
    journal_entry_id uuid, reference_id text, description text, tenant_id text, environment text,
    correlation_id text, source_event_id uuid, reverses text, posted_at timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_entries (
    journal_entry_id uuid, line_no smallint, ledger_account text, account_type text, normal_side text,
    side text, amount numeric(78, 0), currency text, exponent smallint
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_new (journal_entry_id uuid PRIMARY KEY) ON COMMIT DELETE ROWS;
"""

ACCOUNTS = """
INSERT INTO ledger_accounts (code, account_type, normal_side, currency, exponent)
SELECT DISTINCT ON (ledger_account) ledger_account, account_type, normal_side, currency, exponent
  FROM stage_entries ORDER BY ledger_account
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
INSERT INTO entries (journal_entry_id, line_no, ledger_account, side, amount, currency)
SELECT e.journal_entry_id, e.line_no, e.ledger_account, e.side, e.amount, e.currency
  FROM stage_entries e JOIN stage_new n USING (journal_entry_id)
"""

BALANCES = """
INSERT INTO balances AS b (ledger_account, currency, debits, credits, updated_at)
SELECT e.ledger_account, e.currency,
       sum(CASE WHEN e.side = 'DEBIT' THEN e.amount ELSE 0 END),
       sum(CASE WHEN e.side = 'CREDIT' THEN e.amount ELSE 0 END),
       now()
  FROM stage_entries e JOIN stage_new n USING (journal_entry_id)
 GROUP BY e.ledger_account, e.currency
 ORDER BY e.ledger_account
ON CONFLICT (ledger_account) DO UPDATE
   SET debits = b.debits + EXCLUDED.debits,
       credits = b.credits + EXCLUDED.credits,
       updated_at = EXCLUDED.updated_at
"""


@dataclass(frozen=True)
class PostedJournal:
    journal_entry_id: str
    journal: Journal
    tenant_id: str
    environment: str
    correlation_id: str
    source_event_id: str
    posted_at: datetime


def journal_from_event(record: dict[str, Any]) -> PostedJournal:
    """Map a `JournalPosted` record to a checked journal."""
    meta = record["metadata"]
    lines = []
    for raw in record["lines"]:
        try:
            units, currency, exponent = money_parts(raw["amount"])
        except InexactValue as e:
            raise PoisonEvent(str(e)) from e
        lines.append(Line(raw["ledger_account"], raw["side"], units, currency, exponent))
    journal = Journal(record["reference_id"], record["description"], tuple(lines), record.get("reverses"))
    try:
        check_balanced(journal)
    except PostingError as e:
        raise PoisonEvent(str(e)) from e
    return PostedJournal(
        journal_entry_id=str(record["journal_entry_id"]),
        journal=journal,
        tenant_id=meta["tenant_id"],
        environment=meta["environment"],
        correlation_id=meta["correlation_id"],
        source_event_id=str(meta.get("causation_id") or meta["event_id"]),
        posted_at=meta["occurred_at"],
    )


class LedgerSink(Sink[PostedJournal]):
    name = "ledger_sink"
    topics = (TOPIC,)

    def prepare(self, event: Event) -> PostedJournal:
        try:
            return journal_from_event(event.record)
        except (KeyError, TypeError, ValueError) as e:
            raise PoisonEvent(f"malformed journal: {type(e).__name__}: {e}") from e

    def write(self, conn: psycopg.Connection, items: Sequence[PostedJournal]) -> None:
        unique: dict[str, PostedJournal] = {}
        for item in items:
            unique.setdefault(item.journal.reference_id, item)
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
                "COPY stage_entries (journal_entry_id, line_no, ledger_account, account_type, normal_side, "
                "side, amount, currency, exponent) FROM STDIN"
            ) as copy:
                for p in unique.values():
                    for n, line in enumerate(p.journal.lines, start=1):
                        account_type, normal, _ = account_kind(line.account)
                        copy.write_row(
                            (
                                p.journal_entry_id,
                                n,
                                line.account,
                                account_type,
                                normal,
                                line.side,
                                line.units,
                                line.currency,
                                line.exponent,
                            )
                        )
            cur.execute(ACCOUNTS)
            cur.execute(JOURNALS)
            cur.execute(ENTRIES)
            cur.execute(BALANCES)
