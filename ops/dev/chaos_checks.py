"""The invariants a chaos run checks once its faults are over and the pipeline drained.

- I1, no loss: every acknowledged input has its effect: each deposit its journal, each
  transfer a final state, each completed one its posting and its fee, each fee its posting and
  its invoice lines, each transfer request and each posting its audit row;
- I2, no duplicates: one effect per event, in every table the run wrote;
- I3, money: `ledger check` passes, every journal of the run balances, the run's trial balance
  is 0 per currency, no account is below its limit or holds anything once all is final, and
  each account's posted balance is exactly its deposits less its completed transfers and fees;
- I4, recovery: the pipeline drained (no lag, no pending outbox row) within `RECOVERY_SECONDS`
  of the faults' end, and no worker exited but those the schedule killed;
- I5, dead letters: the dead-letter topics gained exactly the deliberately bad inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ops.ledger_check import violations
from sinks.balances import customer_balances
from topics.codec import AvroCodec
from topics.names import LEDGER_JOURNAL_POSTED_V1, PAYMENTS_TRANSFER_REQUESTED_V1

RECOVERY_SECONDS = 60.0
FINAL = ["COMPLETED", "FAILED"]


@dataclass
class Inputs:
    """What the ingress acknowledged during a run (2xx), per kind."""

    tenant: str
    deposits: dict[str, str] = field(default_factory=dict)
    """Provider transaction id -> account id, one per acknowledged bank credit."""
    deposit_units: dict[str, int] = field(default_factory=dict)
    """Account id -> the sum of its acknowledged deposits (minor units)."""
    chain_deposits: dict[str, str] = field(default_factory=dict)
    """Chain transaction id (`<chain>:<tx hash>:<log index>`) -> account id, one per deposit mined."""
    transfers: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Transfer id -> (account id, minor units), one per acknowledged command."""
    forged: list[str] = field(default_factory=list)
    """The forged deliveries' provider event ids."""
    not_acknowledged: int = 0
    """Inputs the ingress never acknowledged (given up on after retrying): not counted as inputs."""

    def credit(self, kind: dict[str, str], input_id: str, account: str, units: int) -> None:
        """One acknowledged deposit (`kind`: `deposits` or `chain_deposits`) of `units` to `account`."""
        kind[input_id] = account
        self.deposit_units[account] = self.deposit_units.get(account, 0) + units

    @property
    def count(self) -> int:
        return len(self.deposits) + len(self.chain_deposits) + len(self.transfers)


@dataclass
class Verdict:
    inputs: int = 0
    effects: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    money: list[str] = field(default_factory=list)
    trial_balance: dict[str, int] = field(default_factory=dict)
    recovery_seconds: float = 0.0
    recovery: list[str] = field(default_factory=list)
    dead_letters: int = 0
    expected_dead_letters: int = 0
    dead_letter_problems: list[str] = field(default_factory=list)

    @property
    def broken(self) -> list[str]:
        return [
            *(f"I1 lost: {x}" for x in self.lost),
            *(f"I2 duplicated: {x}" for x in self.duplicated),
            *(f"I3 money: {x}" for x in self.money),
            *(f"I4 recovery: {x}" for x in self.recovery),
            *(f"I5 dead letters: {x}" for x in self.dead_letter_problems),
        ]


def _rows(conn: psycopg.Connection[Any], sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return list(conn.execute(sql.encode(), args).fetchall())


def _count(conn: psycopg.Connection[Any], sql: str, *args: Any) -> int:
    row = conn.execute(sql.encode(), args).fetchone()
    return int(row[0]) if row else 0


def _refs(inputs: Inputs) -> list[str]:
    return [f"bank:{inputs.tenant}/truelayer:{t}" for t in inputs.deposits]


def unposted_deposits(conn: psycopg.Connection[Any], inputs: Inputs) -> int:
    """Acknowledged bank credits without their journal."""
    posted = _count(conn, "SELECT count(*) FROM journal_entries WHERE reference_id = ANY(%s)", _refs(inputs))
    return len(inputs.deposits) - posted


def outstanding(conn: psycopg.Connection[Any], inputs: Inputs) -> list[str]:
    """What the acknowledged inputs still lack (empty once every effect is there)."""
    tids = list(inputs.transfers)
    missing = []
    if (unposted := unposted_deposits(conn, inputs)) > 0:
        missing.append(f"{unposted} of {len(inputs.deposits)} deposits not posted")
    chain = _count(
        conn,
        "SELECT count(*) FROM journal_entries WHERE tenant_id = %s AND reference_id LIKE 'chain:%%'",
        inputs.tenant,
    )
    if chain < len(inputs.chain_deposits):
        missing.append(
            f"{len(inputs.chain_deposits) - chain} of {len(inputs.chain_deposits)} chain deposits not posted"
        )
    charged = _count(
        conn,
        "SELECT count(DISTINCT transaction_id) FROM fees WHERE transaction_id = ANY(%s)",
        list(inputs.chain_deposits),
    )
    if charged < len(inputs.chain_deposits):
        missing.append(f"{len(inputs.chain_deposits) - charged} chain deposits without their fee")
    final = _count(
        conn,
        "SELECT count(*) FROM transactions WHERE transaction_id = ANY(%s) AND status = ANY(%s)",
        tids,
        FINAL,
    )
    if final < len(tids):
        missing.append(f"{len(tids) - final} of {len(tids)} transfers not final")
    completed = [
        r[0]
        for r in _rows(
            conn,
            "SELECT transaction_id FROM transactions WHERE transaction_id = ANY(%s) AND status = 'COMPLETED'",
            tids,
        )
    ]
    journals = _count(
        conn,
        "SELECT count(*) FROM journal_entries WHERE reference_id = ANY(%s)",
        [f"txn:{t}" for t in completed],
    )
    if journals < len(completed):
        missing.append(f"{len(completed) - journals} completed transfers without their posting")
    fees = _count(
        conn, "SELECT count(DISTINCT transaction_id) FROM fees WHERE transaction_id = ANY(%s)", completed
    )
    if fees < len(completed):
        missing.append(f"{len(completed) - fees} completed transfers without their fee")
    unposted = _count(
        conn,
        "SELECT count(*) FROM fees f WHERE f.tenant_id = %s AND f.total > 0 AND NOT EXISTS "
        "(SELECT 1 FROM journal_entries j WHERE j.reference_id = 'fee:' || f.fee_id)",
        inputs.tenant,
    )
    if unposted:
        missing.append(f"{unposted} fees without their posting")
    unbilled = _count(
        conn,
        "SELECT count(*) FROM fees f WHERE f.tenant_id = %s AND f.total > 0 AND NOT EXISTS "
        "(SELECT 1 FROM invoice_line_items l WHERE l.source_fee_id = f.fee_id)",
        inputs.tenant,
    )
    if unbilled:
        missing.append(f"{unbilled} fees without their invoice lines")
    audited = _count(
        conn,
        "SELECT count(DISTINCT entity_id) FROM audit_log WHERE tenant_id = %s AND topic = %s",
        inputs.tenant,
        PAYMENTS_TRANSFER_REQUESTED_V1,
    )
    if audited < len(tids):
        missing.append(f"{len(tids) - audited} transfer requests not audited")
    journal_count = _count(conn, "SELECT count(*) FROM journal_entries WHERE tenant_id = %s", inputs.tenant)
    audited_posts = _count(
        conn,
        "SELECT count(DISTINCT event_id) FROM audit_log WHERE tenant_id = %s AND topic = %s",
        inputs.tenant,
        LEDGER_JOURNAL_POSTED_V1,
    )
    if audited_posts < journal_count:
        missing.append(f"{journal_count - audited_posts} of {journal_count} postings not audited")
    return missing


DUPLICATES: tuple[tuple[str, str], ...] = (
    (
        "journal per reference",
        "SELECT reference_id, count(*) FROM journal_entries WHERE tenant_id = %(t)s "
        "GROUP BY 1 HAVING count(*) > 1",
    ),
    (
        "fee per transaction",
        "SELECT transaction_id, count(*) FROM fees WHERE tenant_id = %(t)s GROUP BY 1 HAVING count(*) > 1",
    ),
    (
        "fee per event",
        "SELECT source_event_id, count(*) FROM fees WHERE tenant_id = %(t)s GROUP BY 1 HAVING count(*) > 1",
    ),
    (
        "status change",
        "SELECT h.transaction_id || ' ' || h.to_status, count(*) FROM transaction_status_history h "
        "JOIN transactions t USING (transaction_id) WHERE t.tenant_id = %(t)s GROUP BY 1 HAVING count(*) > 1",
    ),
    (
        "invoice line per fee line",
        "SELECT source_fee_id || ' ' || fee_type, count(*) FROM invoice_line_items WHERE tenant_id = %(t)s "
        "GROUP BY 1 HAVING count(*) > 1",
    ),
    (
        "audit row per event",
        "SELECT event_id::text, count(*) FROM audit_log WHERE tenant_id = %(t)s "
        "GROUP BY 1 HAVING count(*) > 1",
    ),
    (
        "webhook per provider event",
        "SELECT provider || ' ' || event_id, count(*) FROM webhook_inbox WHERE tenant_id = %(t)s "
        "GROUP BY 1 HAVING count(*) > 1",
    ),
    (
        "transfer per request",
        "SELECT correlation_id, count(*) FROM transactions WHERE tenant_id = %(t)s "
        "GROUP BY 1 HAVING count(*) > 1",
    ),
)


def duplicates(conn: psycopg.Connection[Any], tenant: str) -> list[str]:
    found = []
    for what, sql in DUPLICATES:
        for key, n in conn.execute(sql.encode(), {"t": tenant}).fetchall():
            found.append(f"{what}: {key} x{n}")
    return found


def ledger_violations(conn: psycopg.Connection[Any], codec: AvroCodec) -> set[str]:
    """`ledger check`'s findings over the whole database."""
    return {f"{v.rule}: {v.detail}" for v in violations(conn, codec)}


def money(
    conn: psycopg.Connection[Any], codec: AvroCodec, inputs: Inputs, before: set[str]
) -> tuple[list[str], dict[str, int]]:
    """(what is wrong, the run's trial balance per currency); `before`: what `ledger check` found
    before the run (on a fresh stack, nothing), so only what the run added counts."""
    problems = [f"ledger check: {v}" for v in sorted(ledger_violations(conn, codec) - before)]
    trial = {
        str(c): int(s)
        for c, s in _rows(
            conn,
            "SELECT e.currency, sum(CASE WHEN e.side = 'DEBIT' THEN e.amount ELSE -e.amount END) "
            "FROM entries e JOIN journal_entries j USING (journal_entry_id) "
            "WHERE j.tenant_id = %s GROUP BY 1",
            inputs.tenant,
        )
    }
    problems += [f"the run's {c} postings are off by {s}" for c, s in trial.items() if s]
    held = _count(
        conn, "SELECT count(*) FROM holds WHERE tenant_id = %s AND status = 'ACTIVE'", inputs.tenant
    )
    if held:
        problems.append(f"{held} holds still active though every transfer is final")
    completed: dict[str, int] = {}
    for tid, (account, units) in inputs.transfers.items():
        row = conn.execute(b"SELECT status FROM transactions WHERE transaction_id = %s", (tid,)).fetchone()
        if row and row[0] == "COMPLETED":
            completed[account] = completed.get(account, 0) + units
        elif (
            row
            and row[0] == "FAILED"
            and _count(conn, "SELECT count(*) FROM journal_entries WHERE reference_id = %s", f"txn:{tid}")
        ):
            problems.append(f"transfer {tid} FAILED but was posted")
    fees = dict(
        _rows(conn, "SELECT account_id, sum(total) FROM fees WHERE tenant_id = %s GROUP BY 1", inputs.tenant)
    )
    for balance in customer_balances(conn, inputs.tenant):
        if balance.available < 0:
            problems.append(f"{balance.account_id} is {balance.available} below its limit")
        account = balance.account_id
        expected = (
            inputs.deposit_units.get(account, 0) - completed.get(account, 0) - int(fees.get(account, 0))
        )
        if balance.posted != expected:
            deposited, sent, charged = (
                inputs.deposit_units.get(account, 0),
                completed.get(account, 0),
                fees.get(account, 0),
            )
            problems.append(
                f"{account} holds {balance.posted}; deposits {deposited} less transfers {sent} "
                f"less fees {int(charged)} make {expected}"
            )
    return problems, trial


def judge(
    conn: psycopg.Connection[Any],
    codec: AvroCodec,
    inputs: Inputs,
    *,
    dead_letters: int,
    expected_dead_letters: int,
    recovery_seconds: float,
    drained: bool,
    unexpected_exits: Sequence[str],
    ledger_before: set[str],
) -> Verdict:
    """Every invariant, on the database as the drained pipeline left it."""
    verdict = Verdict(inputs=inputs.count, recovery_seconds=recovery_seconds)
    verdict.lost = outstanding(conn, inputs)
    if inputs.forged:
        forged = _count(conn, "SELECT count(*) FROM webhook_inbox WHERE event_id = ANY(%s)", inputs.forged)
        if forged:
            verdict.lost.append(f"{forged} forged deliveries were taken in")
    verdict.duplicated = duplicates(conn, inputs.tenant)
    verdict.money, verdict.trial_balance = money(conn, codec, inputs, ledger_before)
    verdict.effects = (
        _count(conn, "SELECT count(*) FROM journal_entries WHERE tenant_id = %s", inputs.tenant)
        + _count(conn, "SELECT count(*) FROM fees WHERE tenant_id = %s", inputs.tenant)
        + _count(conn, "SELECT count(*) FROM audit_log WHERE tenant_id = %s", inputs.tenant)
        + _count(
            conn,
            "SELECT count(*) FROM transactions WHERE transaction_id = ANY(%s) AND status = ANY(%s)",
            list(inputs.transfers),
            FINAL,
        )
    )
    if not drained:
        verdict.recovery.append(f"not drained {recovery_seconds:.0f}s after the faults ended")
    elif recovery_seconds > RECOVERY_SECONDS:
        verdict.recovery.append(
            f"drained {recovery_seconds:.0f}s after the faults ended (over {RECOVERY_SECONDS:.0f}s)"
        )
    verdict.recovery += [f"{name} exited unbidden" for name in unexpected_exits]
    verdict.dead_letters, verdict.expected_dead_letters = dead_letters, expected_dead_letters
    if dead_letters != expected_dead_letters:
        verdict.dead_letter_problems.append(
            f"{dead_letters} new dead letters, {expected_dead_letters} deliberately bad inputs"
        )
    return verdict
