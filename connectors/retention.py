"""Retention for the connectors' own tables: what has served its purpose is deleted.

- `api_idempotency`: keys past `expires_at` (kept 24 hours: a client's retry after
  that is a new command).
- `outbox`: rows published more than `outbox_days` ago (pending and failed rows stay).
- `webhook_inbox`: processed and ignored deliveries older than `inbox_days`; providers
  stop redelivering long before (Stripe after 3 days). Pending and failed rows stay
  until someone deals with them. A purged row's (provider, event id) moves to
  `webhook_seen`, which is never purged: a captured delivery replayed later is still a
  duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True)
class Purged:
    idempotency_keys: int
    outbox_rows: int
    inbox_rows: int


def purge(
    conn: psycopg.Connection[Any], *, outbox_days: int = 7, inbox_days: int = 30, dry_run: bool = False
) -> Purged:
    """Delete (or with `dry_run`, count) what retention allows, in one transaction."""
    verb = "SELECT count(*) FROM" if dry_run else "WITH gone AS (DELETE FROM"
    tail = "" if dry_run else " RETURNING 1) SELECT count(*) FROM gone"
    statements = [
        ("api_idempotency WHERE expires_at < now()", ()),
        (
            "outbox WHERE status = 'published' AND published_at < now() - make_interval(days => %s)",
            (outbox_days,),
        ),
    ]
    inbox = (
        "webhook_inbox WHERE status IN ('processed', 'ignored')"
        " AND received_at < now() - make_interval(days => %s)"
    )
    counts = []
    with conn.transaction():
        for where, params in statements:
            counts.append(int(conn.execute(f"{verb} {where}{tail}", params).fetchone()[0]))  # type: ignore[index]
        if dry_run:
            counts.append(int(conn.execute(f"SELECT count(*) FROM {inbox}", (inbox_days,)).fetchone()[0]))  # type: ignore[index]
        else:
            moved = conn.execute(
                f"WITH gone AS (DELETE FROM {inbox} RETURNING provider, event_id, received_at), "
                "seen AS (INSERT INTO webhook_seen SELECT * FROM gone ON CONFLICT DO NOTHING) "
                "SELECT count(*) FROM gone",
                (inbox_days,),
            ).fetchone()
            counts.append(int(moved[0]))  # type: ignore[index]
    return Purged(*counts)
