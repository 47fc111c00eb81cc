"""The transactional outbox: rows written with the state change, published by a relay.

`topics.outbox.enqueue` adds an event's row inside the caller's transaction.
`OutboxRelay` publishes pending rows in id order and marks them published only
after Kafka acknowledged them (acks=all, idempotent producer). Several relays may
run: a batch first takes a transaction-scoped advisory lock on each account among
the oldest pending rows (skipping accounts another relay holds), then claims
those accounts' rows in id order with FOR UPDATE SKIP LOCKED. One account's rows
are published by one relay at a time and stay in order; skipping locked rows
alone would let a second relay publish an account's later row first. A relay killed after producing but
before marking publishes those rows again: consumers drop the repeats by event id. An idle relay
looks again every `POLL_SECONDS`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from prometheus_client import Counter, Gauge

from connectors.polling import step_until_idle
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.health import LoopProbe
from topics.producer import DeliveryError, EventProducer
from topics.settings import Settings

log = logging.getLogger(__name__)
RELAYED = Counter("ledgerstream_outbox_rows_total", "Outbox rows relayed to Kafka", ["outcome"])
PENDING = Gauge("ledgerstream_outbox_pending_rows", "Outbox rows waiting to be published (the relay's lag)")
OLDEST = Gauge("ledgerstream_outbox_oldest_pending_seconds", "Age of the oldest outbox row not yet published")
BACKLOG = """
SELECT count(*), COALESCE(extract(epoch FROM now() - min(created_at)), 0)::float8
  FROM outbox WHERE status = 'pending'
"""
BACKLOG_EVERY = 1.0
"""Seconds between two looks at the backlog for the gauges (an index-only count of pending rows)."""
STALL_SECONDS = 60.0
"""A relay whose loop has not turned for this long answers /healthz with 503."""

ACCOUNTS = """
WITH pending AS MATERIALIZED (
    SELECT DISTINCT aggregate_id FROM (
        SELECT aggregate_id FROM outbox WHERE status = 'pending' ORDER BY id LIMIT %s
    ) oldest
)
SELECT aggregate_id FROM pending WHERE pg_try_advisory_xact_lock(hashtext(aggregate_id))
"""
CLAIM = """
SELECT id, topic, key, value, headers FROM outbox
 WHERE status = 'pending' AND aggregate_id = ANY(%s)
 ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
"""
MARK = (
    "UPDATE outbox SET status = 'published', published_at = now(), attempts = attempts + 1 WHERE id = ANY(%s)"
)
FAILED = "UPDATE outbox SET attempts = attempts + 1, last_error = %s WHERE id = ANY(%s)"
POLL_SECONDS = 0.02
"""How long an idle relay waits before it looks again: the pending index answers an empty look in
well under a millisecond, and a quiet event waits no longer than this for Kafka. (A NOTIFY from
each writer would wake it at once, but PostgreSQL serializes the commits of notifying
transactions on one lock, a cost every webhook and sink transaction would pay.)"""


@dataclass
class RelayStats:
    published: int = 0
    batches: int = 0
    failures: int = 0


class OutboxRelay:
    """Args:
    settings: PostgreSQL and Kafka.
    codec: only for the producer's framing (rows are already encoded).
    catalog: topic metadata for the producer.
    batch_size: most rows per transaction.
    redirect: publishes a topic's rows to another topic (a benchmark's scratch copy).
    """

    def __init__(
        self,
        settings: Settings,
        codec: AvroCodec,
        catalog: Catalog,
        *,
        batch_size: int = 500,
        redirect: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.producer = EventProducer(settings, codec, catalog, redirect)
        self.batch_size = batch_size
        self.stats = RelayStats()
        self._loop = LoopProbe("outbox_relay", STALL_SECONDS)
        self._backlog_at = 0.0
        self._kafka_ok = True

    def live(self) -> tuple[bool, dict[str, Any]]:
        """Alive while the loop turns: a wedged relay answers False."""
        return self._loop.live()

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready while the database answers and Kafka acknowledged the last batch."""
        ok = self._loop.ok and self._kafka_ok
        return ok, {
            "worker": "outbox_relay",
            "database": self._loop.ok,
            "kafka": self._kafka_ok,
            "published": self.stats.published,
        }

    def _report_backlog(self, conn: psycopg.Connection[Any]) -> None:
        now = time.monotonic()
        if now - self._backlog_at < BACKLOG_EVERY:
            return
        self._backlog_at = now
        row = conn.execute(BACKLOG).fetchone()
        if row is not None:
            PENDING.set(row[0])
            OLDEST.set(row[1])

    def publish_batch(self, conn: psycopg.Connection[Any]) -> int:
        """Publish one batch; returns how many rows it published."""
        with conn.transaction():
            # first the accounts, each locked or left to another relay as a whole; then, in a
            # fresh snapshot, their rows: a lock tried row by row could fail on an account's
            # earlier row and succeed on a later one once the other relay committed
            accounts = [a for (a,) in conn.execute(ACCOUNTS, (self.batch_size,)).fetchall()]
            if not accounts:
                return 0
            rows = conn.execute(CLAIM, (accounts, self.batch_size)).fetchall()
            if not rows:
                return 0
            ids = [r[0] for r in rows]
            for _, topic, key, value, headers in rows:
                target = self.producer.redirect.get(topic, topic)
                self.producer.produce_encoded(target, bytes(key), bytes(value), list(headers.items()))
            try:
                self.producer.flush()
            except DeliveryError as e:
                conn.execute(FAILED, (str(e)[:500], ids))
                self._kafka_ok = False
                self.stats.failures += 1
                RELAYED.labels("not_acknowledged").inc(len(ids))
                log.warning("outbox: %d rows not acknowledged (%s); they stay pending", len(ids), e)
                return 0
            conn.execute(MARK, (ids,))
        self._kafka_ok = True
        self.stats.published += len(ids)
        RELAYED.labels("published").inc(len(ids))
        self.stats.batches += 1
        return len(ids)

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        idle_exit: float | None = None,
        poll: float = POLL_SECONDS,
    ) -> RelayStats:
        """Publish until `stop` is set (or `idle_exit` seconds pass with nothing pending); a
        database outage is waited out as every polling connector waits it out."""

        def step(conn: psycopg.Connection[Any]) -> int:
            self._report_backlog(conn)
            return self.publish_batch(conn)

        step_until_idle(self.settings, step, stop=stop, poll=poll, idle_exit=idle_exit, probe=self._loop)
        return self.stats
