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

A row Kafka cannot take while it is up (too large for it, a topic the relay may not write) is
refused, not lost, and does not stop the others. It is tried again, alone of its account, after
each delay of `RETRY_DELAYS` (its `next_attempt_at`), then marked `failed`; its account's later
rows wait behind it meanwhile, so an account's events stay in order, and every other account
goes on. (Rows of the account already sent in the batch where the broker first refused it are
not called back: a refusal before sending, such as a row too large, holds them at once.) `ledgerstream
connect outbox-failed` lists failed rows and, once their cause is fixed, puts them back in
turn (`retry_failed`). A broker that cannot be reached (a timeout, a transport error) fails no
row: the batch stays pending and is tried again for as long as the outage lasts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import KafkaError
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
FAILED_ROWS = Gauge(
    "ledgerstream_outbox_failed_rows", "Outbox rows Kafka refused after every retry (each holds its account)"
)
BACKLOG = """
SELECT count(*), COALESCE(extract(epoch FROM now() - min(created_at)), 0)::float8,
       (SELECT count(*) FROM outbox WHERE next_attempt_at IS NOT NULL AND status = 'failed')
  FROM outbox WHERE status = 'pending'
"""
BACKLOG_EVERY = 1.0
"""Seconds between two looks at the backlog for the gauges (an index-only count of pending rows)."""
STALL_SECONDS = 60.0
"""A relay whose loop has not turned for this long answers /healthz with 503."""

_ACCOUNTS = """
WITH pending AS MATERIALIZED (
    SELECT DISTINCT aggregate_id FROM (
        SELECT aggregate_id FROM outbox WHERE status = 'pending'{but} ORDER BY id LIMIT %s
    ) oldest
)
SELECT aggregate_id FROM pending WHERE pg_try_advisory_xact_lock(hashtext(aggregate_id))
"""
ACCOUNTS = _ACCOUNTS.format(but="")
"""The accounts of the oldest pending rows, each locked for this relay or left to the one that holds it."""
ACCOUNTS_BUT_HELD = _ACCOUNTS.format(but=" AND aggregate_id <> ALL(%s::text[])")
"""The same, but the accounts held behind a refused row (`HELD`)."""
ANY_HELD = "SELECT min(next_attempt_at) IS NOT NULL FROM outbox"
"""Whether any row was refused and not yet published: the first entry of a small partial index."""
HELD = """
SELECT DISTINCT aggregate_id FROM outbox
 WHERE next_attempt_at IS NOT NULL
   AND (status = 'failed' OR (status = 'pending' AND next_attempt_at > now()))
"""
"""Accounts held behind a refused row: one waiting for its next attempt, or failed."""
CLAIM = """
SELECT id, aggregate_id, topic, key, value, headers, refusals FROM outbox
 WHERE status = 'pending' AND aggregate_id = ANY(%s)
 ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
"""
MARK = (
    "UPDATE outbox SET status = 'published', published_at = now(), attempts = attempts + 1, "
    "next_attempt_at = NULL WHERE id = ANY(%s)"
)
FAILED = "UPDATE outbox SET attempts = attempts + 1, last_error = %s WHERE id = ANY(%s)"
REFUSED = """
UPDATE outbox SET attempts = attempts + 1, refusals = refusals + 1, last_error = %(error)s,
       status = CASE WHEN refusals >= %(retries)s THEN 'failed' ELSE 'pending' END,
       next_attempt_at = now() + make_interval(
           secs => (%(delays)s::float8[])[least(refusals + 1, cardinality(%(delays)s::float8[]))])
 WHERE id = %(id)s
RETURNING status
"""
RETRY_DELAYS = (5.0, 30.0, 120.0)
"""Seconds before each retry of a refused row; after the last one fails, the row is failed."""
TRANSIENT = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
    }
)
"""Delivery errors of a broker that is down or moving: the row is not refused, only not yet taken."""


def _recorder(outcomes: dict[int, KafkaError | None], row_id: int) -> Callable[[KafkaError | None], None]:
    """Records the delivery outcome of outbox row `row_id`."""

    def record(err: KafkaError | None) -> None:
        outcomes[row_id] = err

    return record


def refused(err: KafkaError) -> bool:
    """Kafka is up and will not take the row as it is (too large, not authorized, invalid)."""
    return not err.retriable() and err.code() not in TRANSIENT


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
    refusals: int = 0


class OutboxRelay:
    """Args:
    settings: PostgreSQL and Kafka.
    codec: only for the producer's framing (rows are already encoded).
    catalog: topic metadata for the producer.
    batch_size: most rows per transaction.
    redirect: publishes a topic's rows to another topic (a benchmark's scratch copy).
    retry_delays: seconds before each retry of a row Kafka refused; then the row is failed.
    """

    def __init__(
        self,
        settings: Settings,
        codec: AvroCodec,
        catalog: Catalog,
        *,
        batch_size: int = 500,
        redirect: dict[str, str] | None = None,
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        self.settings = settings
        self.retry_delays = [float(d) for d in retry_delays]
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
            FAILED_ROWS.set(row[2])

    def publish_batch(self, conn: psycopg.Connection[Any]) -> int:
        """Publish one batch; returns how many rows it published."""
        with conn.transaction():
            # first the accounts, each locked or left to another relay as a whole; then, in a
            # fresh snapshot, their rows: a lock tried row by row could fail on an account's
            # earlier row and succeed on a later one once the other relay committed
            behind = (
                [a for (a,) in conn.execute(HELD).fetchall()]
                if conn.execute(ANY_HELD).fetchone() == (True,)
                else []
            )
            found = (
                conn.execute(ACCOUNTS_BUT_HELD, (behind, self.batch_size))
                if behind
                else conn.execute(ACCOUNTS, (self.batch_size,))
            )
            accounts = [a for (a,) in found.fetchall()]
            if not accounts:
                return 0
            rows = conn.execute(CLAIM, (accounts, self.batch_size)).fetchall()
            if not rows:
                return 0
            outcomes: dict[int, KafkaError | None] = {}
            refusals: dict[int, str] = {}
            sent: list[int] = []
            held: set[str] = set()
            """Accounts whose later rows wait for this batch: a row of theirs was refused before it
            was sent, or is being tried again after a refusal."""
            for row_id, account, topic, key, value, headers, refusals_before in rows:
                if account in held:
                    continue
                if refusals_before:
                    held.add(account)
                target = self.producer.redirect.get(topic, topic)
                try:
                    self.producer.produce_encoded(
                        target, bytes(key), bytes(value), list(headers.items()), _recorder(outcomes, row_id)
                    )
                except DeliveryError as e:
                    refusals[row_id] = str(e)
                    held.add(account)
                else:
                    sent.append(row_id)
            try:
                self.producer.flush()
            except DeliveryError as e:
                flush_error: DeliveryError | None = e
            else:
                flush_error = None
            refusals.update(
                (i, f"{err.name()}: {err.str()}") for i, err in outcomes.items() if err and refused(err)
            )
            published = [i for i in sent if i in outcomes and outcomes[i] is None]
            waiting = [
                i for i in sent if i not in refusals and (i not in outcomes or outcomes[i] is not None)
            ]
            if published:
                conn.execute(MARK, (published,))
            for row_id, error in refusals.items():
                self._refuse(conn, row_id, error)
            if waiting:  # not taken (the broker is unreachable or slow): tried again, as they are
                error = str(flush_error or "not acknowledged")
                conn.execute(FAILED, (error[:500], waiting))
                self.stats.failures += 1
                RELAYED.labels("not_acknowledged").inc(len(waiting))
                log.warning("outbox: %d rows not acknowledged (%s); they stay pending", len(waiting), error)
        self._kafka_ok = not waiting
        self.stats.published += len(published)
        RELAYED.labels("published").inc(len(published))
        self.stats.batches += 1
        return len(published)

    def _refuse(self, conn: psycopg.Connection[Any], row_id: int, error: str) -> None:
        """Count a refusal of the row: it is tried again after its delay, or failed after the last."""
        status = conn.execute(
            REFUSED,
            {
                "error": error[:500],
                "retries": len(self.retry_delays),
                "delays": self.retry_delays,
                "id": row_id,
            },
        ).fetchone()
        self.stats.refusals += 1
        RELAYED.labels("refused").inc()
        if status is not None and status[0] == "failed":
            log.error(
                "outbox: row %d failed after %d retries (%s); its account waits",
                row_id,
                len(self.retry_delays),
                error,
            )
        else:
            log.warning("outbox: row %d refused (%s); it is tried again later", row_id, error)

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


@dataclass(frozen=True)
class FailedRow:
    id: int
    account: str
    topic: str
    event_type: str
    attempts: int
    error: str
    created_at: str


FAILED_LIST = """
SELECT id, aggregate_id, topic, event_type, attempts, coalesce(last_error, ''), created_at
  FROM outbox
 WHERE next_attempt_at IS NOT NULL AND status = 'failed'
   AND (%(account)s::text IS NULL OR aggregate_id = %(account)s)
 ORDER BY id
"""
RETRY = """
UPDATE outbox SET status = 'pending', refusals = 0, next_attempt_at = NULL
 WHERE next_attempt_at IS NOT NULL AND status = 'failed'
   AND (%(account)s::text IS NULL OR aggregate_id = %(account)s)
"""


def failed_rows(conn: psycopg.Connection[Any], account: str | None = None) -> list[FailedRow]:
    """The rows Kafka refused after every retry (each holds its account's later rows), oldest first."""
    return [
        FailedRow(i, a, t, e, int(n), err, at.isoformat(timespec="seconds"))
        for i, a, t, e, n, err, at in conn.execute(FAILED_LIST, {"account": account}).fetchall()
    ]


def retry_failed(conn: psycopg.Connection[Any], account: str | None = None) -> int:
    """Put failed rows back in turn (their cause fixed): the relay publishes each before its
    account's later rows. Returns how many."""
    return conn.execute(RETRY, {"account": account}).rowcount
