"""A local stand-in for TrueLayer's and Circle's payout APIs, for the demo and the tests (no
provider API is reachable from here). Like the real providers it takes a payout idempotently,
answers at once and reports the outcome later through the real webhook endpoint, signed with
the key whose public half the webhook service trusts, and redelivers what was not taken:
- TrueLayer: `POST /v3/payouts` by `Idempotency-Key`; then `payout_executed`, or
  `payout_failed` for a payout whose amount ends in 13 minor units.
- Circle: `POST /v1/payouts` by the body's `idempotencyKey`; then a `payouts` notification,
  `complete`, or `failed` (`insufficient_funds`) for an amount ending in 13 minor units.

Like the real ones it lets in only its merchant (401 otherwise): TrueLayer's payouts want an
access token it issued (`POST /connect/token`, client credentials) and a `Tl-Signature` by
the merchant's registered key over the method, path, `Idempotency-Key` and body (verified
with the truelayer-signing library); Circle's want the API key as a bearer token.
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI, Header, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from truelayer_signing import HttpMethod, verify_with_pem
from truelayer_signing.errors import TlSigningException

from connectors.payouts import PayoutCredentials

log = logging.getLogger(__name__)

Sign = Callable[[bytes, str], dict[str, str]]
"""(body, path) -> the signature headers of a TrueLayer webhook."""
FAILING_UNITS = 13
"""A payout whose amount ends in these minor units fails (`insufficient_funds` at the bank)."""
TOKEN_SECONDS = 3600
"""How long an access token the sandbox issues lives (TrueLayer's are an hour)."""


def _public_pem(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _same(given: str, expected: str) -> bool:
    """A constant-time comparison of a secret (any text a caller sends)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    return token


class PayoutRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    merchant_account_id: str
    amount_in_minor: StrictInt = Field(gt=0)
    currency: str
    metadata: dict[str, str] = Field(default_factory=dict)


class CircleMoney(BaseModel):
    amount: str = Field(pattern=r"^[0-9]+(\.[0-9]+)?$")
    currency: str


class CirclePayoutRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    idempotencyKey: uuid.UUID
    source: dict[str, str]
    destination: dict[str, str]
    amount: CircleMoney


def create_sandbox(
    webhook_url: str,
    sign: Sign,
    credentials: PayoutCredentials,
    *,
    circle_url: str | None = None,
    circle_sign: Sign | None = None,
    delay: float = 0.05,
    attempts: int = 8,
) -> FastAPI:
    """The sandbox app; TrueLayer's webhooks go to `webhook_url` (`/v1/webhooks/truelayer`), and
    Circle's (when given) to `circle_url`. A webhook not taken (a 5xx, no answer) is sent again
    up to `attempts` times, `delay` times the attempt apart (at most 2 s): a real provider keeps
    trying for days, a chaos run's sandbox for as long as its faults last. Only the merchant of
    `credentials` gets in."""
    merchant = credentials.truelayer
    request_key = _public_pem(merchant.signing_key_pem)
    tokens: dict[str, float] = {}
    payouts: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()
    outgoing: queue.Queue[tuple[str, Sign, dict[str, Any]] | None] = queue.Queue()

    def deliver() -> None:
        with httpx.Client(timeout=10) as http:
            while (item := outgoing.get()) is not None:
                url, signer, event = item
                body = json.dumps(event, separators=(",", ":")).encode()
                for attempt in range(attempts):  # a provider redelivers a webhook that was not taken
                    try:
                        headers = {"content-type": "application/json", **signer(body, httpx.URL(url).path)}
                        answer = http.post(url, content=body, headers=headers)
                        if answer.status_code < 500:
                            break
                    except httpx.HTTPError as e:
                        log.warning("sandbox webhook attempt %d failed: %s", attempt + 1, e)
                    threading.Event().wait(min(delay * (attempt + 1), 2.0))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker = threading.Thread(target=deliver, name="provider-sandbox-webhooks", daemon=True)
        worker.start()
        try:
            yield
        finally:
            outgoing.put(None)
            worker.join(timeout=10)

    app = FastAPI(title="provider sandbox (TrueLayer and Circle payouts)", lifespan=lifespan)

    @app.post("/connect/token")
    async def issue_token(request: Request) -> dict[str, Any]:
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
        grant_type, scope = form.get("grant_type", ""), form.get("scope", "")
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        known = _same(client_id, merchant.client_id) and _same(client_secret, merchant.client_secret)
        if grant_type != "client_credentials" or not known:
            raise HTTPException(401, "invalid_client")
        if "payments" not in scope.split():
            raise HTTPException(400, "invalid_scope: payouts need the payments scope")
        token = secrets.token_urlsafe(32)
        with lock:
            tokens[token] = time.monotonic() + TOKEN_SECONDS
        return {"access_token": token, "expires_in": TOKEN_SECONDS, "token_type": "Bearer", "scope": scope}

    @app.post("/v3/payouts", status_code=202)
    async def create_payout(
        request: Request,
        idempotency_key: str = Header(alias="Idempotency-Key", min_length=1),
        authorization: str | None = Header(None),
        tl_signature: str = Header("", alias="Tl-Signature"),
    ) -> dict[str, str]:
        token = _bearer(authorization)
        with lock:
            alive = tokens.get(token, 0.0) > time.monotonic()
        if not alive:
            raise HTTPException(401, "the access token is unknown or expired")
        raw = await request.body()
        try:
            verify_with_pem(request_key).set_method(HttpMethod.POST).set_path(
                "/v3/payouts"
            ).add_required_header("Idempotency-Key").add_header("Idempotency-Key", idempotency_key).set_body(
                raw.decode()
            ).verify(tl_signature)
        except (TlSigningException, UnicodeDecodeError, ValueError) as e:
            raise HTTPException(401, f"the request signature does not verify: {e}") from None
        try:
            body = PayoutRequest.model_validate_json(raw)
        except ValidationError as e:
            raise HTTPException(422, str(e)) from None
        with lock:
            known = payouts.get(idempotency_key)
            if known is not None:
                if known["request"] != body.model_dump():
                    raise HTTPException(422, "Idempotency-Key reused with another payout")
                return {"id": known["id"]}
            payout_id = str(uuid.uuid4())
            payouts[idempotency_key] = {"id": payout_id, "request": body.model_dump()}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        failed = body.amount_in_minor % 100 == FAILING_UNITS
        event: dict[str, Any] = {
            "type": "payout_failed" if failed else "payout_executed",
            "event_id": str(uuid.uuid4()),
            "event_version": 1,
            "payout_id": payout_id,
            "metadata": body.metadata,
        }
        event.update(
            {"failed_at": now, "failure_reason": "insufficient_funds"} if failed else {"executed_at": now}
        )
        outgoing.put((webhook_url, sign, event))
        return {"id": payout_id}

    @app.post("/v1/payouts", status_code=201)
    def create_circle_payout(
        body: CirclePayoutRequest, authorization: str | None = Header(None)
    ) -> dict[str, Any]:
        if not _same(_bearer(authorization), credentials.circle_api_key):
            raise HTTPException(401, "the API key is not this merchant's")
        if circle_url is None or circle_sign is None:
            raise HTTPException(404, "this sandbox does not serve Circle")
        key = f"circle:{body.idempotencyKey}"
        with lock:
            known = payouts.get(key)
            if known is not None:
                if known["request"] != body.model_dump(mode="json"):
                    raise HTTPException(409, "idempotencyKey reused with another payout")
                return {"data": known["payout"]}
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            payout = {
                "id": str(uuid.uuid4()),
                "sourceWalletId": body.source.get("id"),
                "destination": body.destination,
                "amount": body.amount.model_dump(),
                "status": "pending",
                "createDate": now,
                "updateDate": now,
            }
            payouts[key] = {"payout": payout, "request": body.model_dump(mode="json")}
        minor = body.amount.amount.replace(".", "")
        failed = minor.endswith(f"{FAILING_UNITS:02d}")
        outcome = {**payout, "status": "failed" if failed else "complete", "updateDate": now}
        if failed:
            outcome["errorCode"] = "insufficient_funds"
        outgoing.put(
            (
                circle_url,
                circle_sign,
                {
                    "subscriptionId": str(uuid.uuid4()),
                    "notificationId": str(uuid.uuid4()),
                    "notificationType": "payouts",
                    "notification": outcome,
                    "timestamp": now,
                },
            )
        )
        return {"data": payout}

    return app
