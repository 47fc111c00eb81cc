"""The provider webhook service: POST /v1/webhooks/{provider}.

In order, each step answering without writing anything when it refuses:
404 unknown or unconfigured provider; 429 over the provider's rate; 415 not
`application/json`; 413 a body over the limit (by Content-Length or while
reading a chunked body); 408 a body that does not arrive in time; 400 a missing
or unreadable signature; 401 a signature that does not verify; 400 malformed
JSON (NaN, duplicate keys, huge numbers, deep nesting) or a body that is not the
provider's delivery. Other methods get 405.

A card authorization request (Stripe's `issuing_authorization.request`) is answered with a
decision while the cardholder waits: in one transaction its inbox row goes in, the linked
account's funds are reserved as for a transfer (a hold, announced on the balance topic) and the
decision is kept on the row. It is approved only when the hold fits the available balance; a
redelivery gets the decision already kept.

A verified delivery is then kept exactly once: Redis (SET NX with a TTL, set
after the commit) answers most redeliveries without touching PostgreSQL, and the
inbox row's UNIQUE (provider, event_id) is the durable guard; concurrent copies
wait on it and answer as duplicates. The inbox row and the outbox rows of its
canonical events commit in one transaction, so the provider hears 200 only once
the events are durably queued for Kafka. A verified delivery that cannot become
an event (no linked account, money that does not add up) is kept as `failed`
with the reason instead of being guessed at.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache, lru_cache
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from connectors.webhooks.common import (
    Authorization,
    BadPayload,
    BadSignature,
    Delivery,
    Link,
    MissingSignature,
    Notice,
    Provider,
    Unprocessable,
)
from connectors.webhooks.limits import BodyTooLarge, BodyTooSlow, ClientBuckets, TokenBucket, read_bounded
from connectors.webhooks.settings import WebhookSettings
from connectors.webhooks.strict_json import MalformedJson, loads
from topics.balances import BalanceAnnouncer
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.currencies import CurrencyRegistry
from topics.errors import EncodeError
from topics.events import LEDGERSTREAM_NAMESPACE, new_metadata
from topics.holds import Spend, reserve
from topics.journals import CARD_HOLD_DAYS, card_hold_id
from topics.masking import mask
from topics.outbox import outbox_row
from topics.settings import WEBHOOKS, Settings

log = logging.getLogger(__name__)

DELIVERIES = Counter(
    "ledgerstream_webhook_deliveries_total",
    "Webhook requests by provider and outcome (inbox status, duplicate, or the HTTP status refused with)",
    ["provider", "outcome"],
)
SECONDS = Histogram("ledgerstream_webhook_seconds", "Time to answer a webhook request", ["provider"])
LINK = "SELECT tenant_id, account_id FROM provider_links WHERE provider = %s AND external_ref = %s"
SEEN = "SELECT 1 FROM webhook_seen WHERE provider = %s AND event_id = %s"
"""Deliveries kept once and purged from the inbox since: still duplicates."""


LOOKUP = """
SELECT EXISTS (SELECT 1 FROM webhook_seen WHERE provider = %(provider)s AND event_id = %(event_id)s), l.*
FROM (SELECT 1) AS one LEFT JOIN ({link}) AS l ON true
"""
"""In one round trip: whether the delivery was kept and purged since (`SEEN`), and what its
reference links to (NULLs when nothing is linked or the delivery names no reference)."""
LOOKUPS = {
    False: LOOKUP.format(
        link="SELECT tenant_id, account_id FROM provider_links WHERE provider = %(provider)s "
        "AND external_ref = %(ref)s"
    ),
    True: LOOKUP.format(  # a payout of ours: the transfer it paid out
        link="SELECT tenant_id, account_id, transaction_id FROM payouts WHERE provider = %(provider)s "
        "AND payout_id = %(ref)s"
    ),
}
INBOX = """
INSERT INTO webhook_inbox (id, provider, event_id, event_type, status, external_ref, tenant_id, account_id,
    raw_body, result, error, correlation_id, processed_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END)
ON CONFLICT DO NOTHING RETURNING id
"""
"""No arbiter: the id is derived from (provider, event_id), and two concurrent copies may meet on
either unique index first (naming one raised a unique violation, a 500, on the other)."""


@lru_cache(maxsize=8)
def keep_statement(events: int) -> str:
    """The inbox row and, only if it is new, its events' outbox rows, as one statement."""
    if events == 0:
        return INBOX
    values = ", ".join(["(%s, %s, %s::uuid, %s, %s::bytea, %s::bytea, %s::jsonb)"] * events)
    return f"""
WITH kept AS ({INBOX}),
queued AS (
    INSERT INTO outbox (aggregate_id, topic, event_id, event_type, key, value, headers)
    SELECT v.* FROM (VALUES {values}) AS v (aggregate_id, topic, event_id, event_type, key, value, headers)
    WHERE EXISTS (SELECT 1 FROM kept)
    ON CONFLICT (event_id) DO NOTHING
)
SELECT id FROM kept
"""


KEPT_DECISION = "SELECT result FROM webhook_inbox WHERE id = %s"
DECIDED = "UPDATE webhook_inbox SET status = %s, result = %s, error = %s WHERE id = %s"
FIAT = CurrencyRegistry()
"""Card money is fiat: ISO 4217 checks its exponent."""


def problem(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


def inbox_id(provider: str, event_id: str) -> str:
    return str(uuid.uuid5(LEDGERSTREAM_NAMESPACE, f"webhook:{provider}:{event_id}"))


def kept_body(document: Any) -> str:
    """The delivery as the inbox keeps it: card numbers redacted and account numbers cut to their last
    four, as in the audit trail (the signature was checked on the bytes that arrived)."""
    return json.dumps(mask(document).value, separators=(",", ":"))


def create_app(
    settings: Settings,
    hooks: WebhookSettings,
    codec: AvroCodec,
    catalog: Catalog,
    providers: dict[str, Provider] | None = None,
) -> FastAPI:
    """The webhook service for one environment; `providers` defaults to the configured ones."""
    served = providers if providers is not None else hooks.providers()
    buckets = {name: TokenBucket(hooks.requests_per_second, hooks.burst, time.monotonic()) for name in served}
    clients = ClientBuckets(hooks.client_requests_per_second, hooks.client_burst)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        url = settings.database_url.get_secret_value()
        pool = AsyncConnectionPool(
            url, min_size=1, max_size=hooks.pool_size, open=False, kwargs={"autocommit": True}
        )
        await pool.open(wait=True, timeout=30)
        state["pool"] = pool
        # decisions reserve funds with the ledger's own (blocking) reservation, on a thread
        state["decisions"] = ConnectionPool(url, min_size=0, max_size=hooks.pool_size, open=True)
        state["redis"] = aioredis.Redis.from_url(settings.redis_url, socket_timeout=2)
        try:
            yield
        finally:
            await state["redis"].aclose()
            await pool.close()
            state["decisions"].close()

    # the public port serves deliveries only: no OpenAPI documents, no metrics (those are on the admin port)
    app = FastAPI(
        title="ledgerstream provider webhooks",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/webhooks/{provider}", responses={200: {"description": "kept, or already kept"}})
    async def receive(provider: str, request: Request) -> JSONResponse:
        started = time.perf_counter()
        outcome, response = await handle(provider, request)
        label = provider if provider in served else "unknown"
        DELIVERIES.labels(label, outcome).inc()
        SECONDS.labels(label).observe(time.perf_counter() - started)
        return response

    async def handle(provider: str, request: Request) -> tuple[str, JSONResponse]:
        handler = served.get(provider)
        if handler is None:
            return "404", problem(404, f"no webhook endpoint for provider {provider!r}")
        if not clients.take(request.client.host if request.client else "", time.monotonic()):
            return "429", problem(429, "over the per-client rate limit", **{"Retry-After": "1"})
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return "415", problem(415, "the body must be application/json")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > hooks.max_body_bytes):
            return "413", problem(413, f"the body is over {hooks.max_body_bytes} bytes")
        try:
            body = await read_bounded(request.stream(), hooks.max_body_bytes, hooks.read_timeout_seconds)
        except BodyTooLarge as e:
            return "413", problem(413, str(e))
        except BodyTooSlow as e:
            return "408", problem(408, str(e), Connection="close")
        delivery = Delivery(request.url.path, dict(request.headers), body, int(time.time()))
        try:
            handler.verify(delivery)
        except MissingSignature as e:
            return "400", problem(400, str(e))
        except BadSignature as e:
            log.info("webhook %s: signature refused: %s", provider, e)
            return "401", problem(401, "the signature does not verify")
        except (
            Exception
        ) as e:  # a header no verifier can read (non-ASCII, a digit that is not 0-9): unverified
            log.info("webhook %s: unreadable signature: %s: %s", provider, type(e).__name__, e)
            return "400", problem(400, "the signature headers cannot be read")
        # the provider's own rate is spent only by deliveries it signed: an unsigned flood cannot starve it
        if not buckets[provider].take(time.monotonic()):
            return "429", problem(429, f"over the {provider} rate limit", **{"Retry-After": "1"})
        try:
            document = loads(body)
            notice = handler.read(document, settings.environment, delivery)
        except (MalformedJson, BadPayload) as e:
            return "400", problem(400, str(e))
        correlation = request.headers.get("x-correlation-id") or str(uuid.uuid4())
        return await keep(provider, notice, kept_body(document), correlation)

    async def keep(provider: str, notice: Notice, raw: str, correlation: str) -> tuple[str, JSONResponse]:
        if notice.authorize is not None:
            return await authorize(provider, notice, notice.authorize, raw, correlation)
        ident = inbox_id(provider, notice.event_id)
        dedupe_key = f"webhook:{settings.environment}:{provider}:{notice.event_id}"
        try:
            if await state["redis"].exists(dedupe_key):
                return "duplicate", JSONResponse({"status": "duplicate", "inbox_id": ident})
        except aioredis.RedisError as e:
            log.warning("webhook dedupe cache unavailable (%s); the inbox decides", e)
        pool: AsyncConnectionPool = state["pool"]
        async with pool.connection() as conn:
            asked = {"provider": provider, "event_id": notice.event_id, "ref": notice.external_ref}
            found = await (await conn.execute(LOOKUPS[notice.payout], asked)).fetchone()
            assert found is not None  # one row whatever is linked
            seen, linked = found[0], found[1:]
            if seen:
                return "duplicate", JSONResponse({"status": "duplicate", "inbox_id": ident})
            link = None
            if notice.external_ref is not None:
                link = Link(*linked) if linked[0] is not None else None
                if link is None and notice.payout:
                    # our dispatcher may not have recorded the payout id yet: nothing is kept, the
                    # provider redelivers; a payout that is never ours is never posted
                    return "payout_unknown", JSONResponse(
                        {"detail": f"payout {notice.external_ref} is not known (yet); redeliver"},
                        503,
                        headers={"Retry-After": "5"},
                    )
            status, error, rows = notice.status, notice.note, []
            tenant, account = (link.tenant_id, link.account_id) if link else (None, None)
            if notice.build is not None:
                try:
                    if link is None:
                        what = "payout of ours" if notice.payout else "account"
                        raise Unprocessable(f"no {what} is linked to {provider} {notice.external_ref}")
                    rows = outbox_rows(notice, provider, ident, link, correlation)
                    status, error = "processed", None
                except (Unprocessable, EncodeError) as e:
                    status, error, rows = "failed", str(e), []
            events = [str(r[2]) for r in rows]
            inbox = (
                ident,
                provider,
                notice.event_id,
                notice.event_type,
                status,
                notice.external_ref,
                tenant,
                account,
                raw,
                Jsonb(events),
                error,
                correlation,
                status != "pending",
            )
            # one statement, so atomic without BEGIN/COMMIT: the outbox rows go in only with a new inbox row
            params = [*inbox, *(value for row in rows for value in row)]
            inserted = await (await conn.execute(keep_statement(len(rows)), params)).fetchone()
        answer: dict[str, Any] = {"status": "duplicate", "inbox_id": ident}
        if inserted is not None:
            answer = {"status": status, "inbox_id": ident, "events": events}
            if error:
                answer["detail"] = error
        try:
            await state["redis"].set(dedupe_key, ident, nx=True, ex=hooks.dedupe_ttl_seconds)
        except aioredis.RedisError as e:
            log.warning("webhook dedupe cache unavailable (%s)", e)
        return answer["status"], JSONResponse(answer, headers={"x-correlation-id": correlation})

    balances = BalanceAnnouncer(codec, catalog, settings.environment, "connectors.webhooks", "webhooks")

    async def authorize(
        provider: str, notice: Notice, ask: Authorization, raw: str, correlation: str
    ) -> tuple[str, JSONResponse]:
        outcome, decision = await asyncio.to_thread(decide, provider, notice, ask, raw, correlation)
        headers = {"x-correlation-id": correlation, **dict(ask.reply_headers)}
        return outcome, JSONResponse(decision, headers=headers)

    def decide(
        provider: str, notice: Notice, ask: Authorization, raw: str, correlation: str
    ) -> tuple[str, dict[str, Any]]:
        """Approve only what the linked account's available balance holds; a decision is taken
        once per delivery and a redelivery gets it again."""
        ident = inbox_id(provider, notice.event_id)
        pool: ConnectionPool = state["decisions"]
        with pool.connection() as conn, conn.transaction():
            if conn.execute(SEEN, (provider, notice.event_id)).fetchone() is not None:
                return "duplicate", {"approved": False, "metadata": {"decision": "DUPLICATE"}}
            found = conn.execute(LINK, (provider, notice.external_ref)).fetchone()
            link = Link(*found) if found else None
            tenant, account = (link.tenant_id, link.account_id) if link else (None, None)
            inbox = (ident, provider, notice.event_id, notice.event_type, "processed", notice.external_ref)
            kept = (tenant, account, raw, Jsonb({}), None, correlation, True)
            if conn.execute(INBOX, (*inbox, *kept)).fetchone() is None:
                row = conn.execute(KEPT_DECISION, (ident,)).fetchone()
                return "duplicate", dict(row[0]) if row and row[0] else {"approved": False}
            refusal = ask.refusal
            if refusal is None and link is None:
                refusal = f"NO_LINKED_ACCOUNT: no account is linked to {provider} card {notice.external_ref}"
            if refusal is None and link is not None:
                hold = card_hold_id(link.tenant_id, ask.authorization_id)
                spend = Spend(
                    hold,
                    link.tenant_id,
                    link.account_id,
                    ask.currency,
                    ask.exponent,
                    ask.units,
                    f"card authorization {ask.authorization_id}",
                    correlation_id=correlation,
                )
                refusal = reserve(conn, FIAT, spend, seconds=CARD_HOLD_DAYS * 86_400)
                if refusal is None:
                    balances.holds_changed(conn, {hold: None})  # a request at the edge, not an event
            decision: dict[str, Any] = {"approved": refusal is None}
            if refusal is not None:
                decision["metadata"] = {"decision": refusal.split(":", 1)[0]}
            status = "failed" if link is None else "processed"
            conn.execute(DECIDED, (status, Jsonb(decision), refusal, ident))
        return ("approved" if refusal is None else "declined"), decision

    @cache
    def has_inbox_id(topic: str) -> bool:
        return any(f["name"] == "inbox_id" for f in codec.store.for_topic(topic).definition["fields"])

    def outbox_rows(
        notice: Notice, provider: str, ident: str, link: Link, correlation: str
    ) -> list[tuple[Any, ...]]:
        assert notice.build is not None
        rows = []
        for index, event in enumerate(notice.build(link)):
            metadata = new_metadata(
                event.topic.rsplit(".", 1)[0],
                tenant_id=link.tenant_id,
                environment=settings.environment,
                source=f"connectors.webhooks.{provider}",
                correlation_id=correlation,
                event_id=str(uuid.uuid5(LEDGERSTREAM_NAMESPACE, f"{ident}:{index}")),
                occurred_at=event.occurred_at,
            )
            record = {"metadata": metadata, **event.record}
            if has_inbox_id(event.topic):  # events of provider money name the inbox row they came from
                record["inbox_id"] = ident
            rows.append(outbox_row(codec, catalog, event.topic, record))
        return rows

    return app


def from_environment() -> FastAPI:
    """The service as configured by the environment (uvicorn's factory for several workers)."""
    from topics.catalog import load_catalog
    from topics.codec import codec_from_settings
    from topics.collector import settle_collector

    settings = Settings().as_principal(WEBHOOKS)
    app = create_app(settings, WebhookSettings(), codec_from_settings(settings), load_catalog())
    settle_collector()  # each worker process calls the factory once, before it serves
    return app
