"""`ledgerstream ledger check`: the ledger's invariants, each a query that finds violations.

1. Every journal entry balances per currency and exponent, with two or more entries.
2. The trial balance is zero per tenant and currency, and the running balances equal
   the sum of the entries.
3. No customer account's posted balance is below minus its overdraft limit.
4. Holds add up: active holds fit each account's posted balance plus its overdraft
   limit; every reserved transaction has its active hold; every completed outgoing
   transaction's hold is completed.
5. Every money movement the database knows of has its posting: completed
   transactions, executed conversions, assessed fees, confirmed chain deposits, and
   the bank and card events still in the outbox.
6. Every confirmed transfer out of a watched wallet is one the chain sender sent (money
   that left custody any other way is reported for reconciliation, never posted).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from streams.ledger.agent import BANK, CARDS, journal_for
from topics.codec import AvroCodec
from topics.errors import CodecError
from topics.journals import PostingError


@dataclass(frozen=True)
class Violation:
    rule: str
    detail: str


CHECKS: tuple[tuple[str, str, str], ...] = (
    (
        "journal balances",
        """SELECT journal_entry_id::text, currency, exponent,
                  sum(CASE WHEN side = 'DEBIT' THEN amount ELSE -amount END), count(*)
             FROM entries GROUP BY journal_entry_id, currency, exponent
           HAVING sum(CASE WHEN side = 'DEBIT' THEN amount ELSE -amount END) <> 0 OR count(*) < 2""",
        "journal {0} in {1} (exponent {2}) is off by {3} over {4} entries",
    ),
    (
        "trial balance",
        """SELECT a.tenant_id, b.currency, sum(b.debits - b.credits)
             FROM balances b JOIN ledger_accounts a ON a.code = b.ledger_account
            GROUP BY a.tenant_id, b.currency HAVING sum(b.debits - b.credits) <> 0""",
        "tenant {0}: {1} debits and credits differ by {2}",
    ),
    (
        "balances match entries",
        """SELECT coalesce(b.ledger_account, e.ledger_account), coalesce(b.debits, 0), coalesce(b.credits, 0),
                  coalesce(e.debits, 0), coalesce(e.credits, 0)
             FROM balances b
             FULL JOIN (SELECT ledger_account, sum(CASE WHEN side = 'DEBIT' THEN amount ELSE 0 END) AS debits,
                               sum(CASE WHEN side = 'CREDIT' THEN amount ELSE 0 END) AS credits
                          FROM entries GROUP BY ledger_account) e USING (ledger_account)
            WHERE coalesce(b.debits, 0) <> coalesce(e.debits, 0)
               OR coalesce(b.credits, 0) <> coalesce(e.credits, 0)""",
        "{0}: balance says {1}/{2}, entries say {3}/{4} (debits/credits)",
    ),
    (
        "overdraft",
        """SELECT b.ledger_account, b.credits - b.debits, coalesce(r.overdraft_limit, 0)
             FROM balances b JOIN ledger_accounts a ON a.code = b.ledger_account
             LEFT JOIN accounts r ON r.tenant_id = a.tenant_id AND r.currency = a.currency
                  AND r.account_id = ledger_account_holder(a.code, a.currency)
            WHERE a.code LIKE 'customer:%%' AND b.credits - b.debits < -coalesce(r.overdraft_limit, 0)""",
        "{0} is at {1}, below minus its overdraft limit {2}",
    ),
    (
        "holds within funds",
        """SELECT h.ledger_account, sum(h.amount), coalesce(max(b.credits - b.debits), 0),
                  coalesce(max(r.overdraft_limit), 0)
             FROM holds h
             LEFT JOIN balances b ON b.ledger_account = h.ledger_account
             LEFT JOIN accounts r ON r.tenant_id = h.tenant_id AND r.account_id = h.account_id
                  AND r.currency = h.currency
            WHERE h.status = 'ACTIVE'
            GROUP BY h.ledger_account
           HAVING sum(h.amount) > coalesce(max(b.credits - b.debits), 0)
                                  + coalesce(max(r.overdraft_limit), 0)""",
        "{0} holds {1} against a posted balance of {2} and an overdraft limit of {3}",
    ),
    (
        "reserved transactions hold funds",
        """SELECT t.transaction_id, t.status, coalesce(h.status, 'no hold')
             FROM transactions t LEFT JOIN holds h ON h.hold_id = 'txn:' || t.transaction_id
            WHERE t.direction = 'DEBIT' AND t.status IN ('BALANCE_RESERVED', 'SENT_TO_PROVIDER',
                  'PROVIDER_PROCESSING', 'PROVIDER_CONFIRMING')
              AND coalesce(h.status, '') NOT IN ('ACTIVE', 'COMPLETED')""",
        "transaction {0} is {1} but its hold is {2}",
    ),
    (
        "completed transactions posted",
        """SELECT t.transaction_id, t.transaction_type
             FROM transactions t
            WHERE t.status = 'COMPLETED' AND t.transaction_type <> 'FX'
              AND NOT EXISTS (SELECT 1 FROM journal_entries j
                               WHERE j.reference_id = 'txn:' || t.transaction_id)""",
        "completed transaction {0} ({1}) has no journal entry",
    ),
    (
        "completed transactions settle their hold",
        """SELECT t.transaction_id, h.status
             FROM transactions t JOIN journal_entries j ON j.reference_id = 'txn:' || t.transaction_id
             JOIN holds h ON h.hold_id = 'txn:' || t.transaction_id
            WHERE t.direction = 'DEBIT' AND h.status <> 'COMPLETED'""",
        "transaction {0} is posted but its hold is {1}",
    ),
    (
        "conversions posted",
        """SELECT c.conversion_id::text FROM fx_conversions c
            WHERE NOT EXISTS (SELECT 1 FROM journal_entries j
                               WHERE j.reference_id = 'fx:' || c.conversion_id)""",
        "conversion {0} has no journal entry",
    ),
    (
        "fees posted",
        """SELECT f.fee_id::text, f.total, f.currency FROM fees f
            WHERE f.total > 0
              AND NOT EXISTS (SELECT 1 FROM journal_entries j WHERE j.reference_id = 'fee:' || f.fee_id)""",
        "fee {0} ({1} {2}) has no journal entry",
    ),
    (
        "chain deposits posted",
        """SELECT c.chain, c.tx_hash, c.log_index, c.account_id FROM chain_transfers c
            WHERE c.status = 'confirmed' AND c.direction = 'INBOUND'
              AND NOT EXISTS (SELECT 1 FROM journal_entries j WHERE j.reference_id =
                  'chain:' || c.tenant_id || '/' || c.chain || ':' || c.tx_hash || ':' || c.log_index || ':'
                  || c.account_id || '@' || c.block_hash)""",
        "confirmed deposit {0} {1}:{2} to {3} has no journal entry",
    ),
    (
        "reorged deposits reversed",
        """SELECT j.reference_id FROM journal_entries j
            WHERE j.reference_id LIKE 'chain:%%' AND j.reverses IS NULL
              AND EXISTS (SELECT 1 FROM chain_transfers c WHERE c.status = 'reorged'
                          AND j.reference_id = 'chain:' || c.tenant_id || '/' || c.chain || ':'
                              || c.tx_hash || ':' || c.log_index || ':' || c.account_id || '@'
                              || c.block_hash)
              AND NOT EXISTS (SELECT 1 FROM journal_entries r WHERE r.reverses = j.reference_id)""",
        "deposit {0} was reorged off the chain and is not reversed",
    ),
    (
        "chain sends matched",
        """SELECT c.chain, c.tx_hash, c.log_index, c.from_address, c.account_id FROM chain_transfers c
            WHERE c.status = 'confirmed' AND c.direction = 'OUTBOUND'
              AND NOT EXISTS (SELECT 1 FROM chain_sends s
                              WHERE s.chain = c.chain AND s.tx_hash = c.tx_hash)""",
        "{0} {1}:{2} left wallet {3} of {4}, matching no transfer we sent: reconcile it (not posted)",
    ),
)

OUTBOX_MONEY = "SELECT topic, value FROM outbox WHERE topic = ANY(%s) ORDER BY id"


def violations(conn: psycopg.Connection[Any], codec: AvroCodec) -> Iterator[Violation]:
    """Every violation of the ledger's invariants, rule by rule."""
    for rule, query, message in CHECKS:
        for row in conn.execute(query.encode()).fetchall():
            yield Violation(rule, message.format(*row))
    yield from _ingress_postings(conn, codec)


def _ingress_postings(conn: psycopg.Connection[Any], codec: AvroCodec) -> Iterator[Violation]:
    """Bank and card events still in the outbox (published or not) against their journals."""
    expected: dict[str, str] = {}
    for topic, value in conn.execute(OUTBOX_MONEY, ([BANK, CARDS],)).fetchall():
        try:
            record = codec.decode(bytes(value), topic=topic)
            journal = journal_for(topic, record)
        except (CodecError, PostingError, KeyError, TypeError, ValueError) as e:
            yield Violation("ingress posted", f"a {topic} event cannot be posted: {e}")
            continue
        if journal is not None:
            expected[journal.reference_id] = f"{topic} {record['transaction_id']}"
    if not expected:
        return
    found = {
        row[0]
        for row in conn.execute(
            "SELECT reference_id FROM journal_entries WHERE reference_id = ANY(%s)", (list(expected),)
        ).fetchall()
    }
    for reference, what in sorted(expected.items()):
        if reference not in found:
            yield Violation("ingress posted", f"{what} has no journal entry {reference}")


def ledger_counts(conn: Any) -> tuple[int, int, int]:
    """(journals, entries, active holds)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM journal_entries), (SELECT count(*) FROM entries), "
        "(SELECT count(*) FROM holds WHERE status = 'ACTIVE')"
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])
