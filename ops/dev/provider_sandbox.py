"""A local stand-in for TrueLayer's and Circle's payout APIs, for the demo and the tests (no
provider API is reachable from here). Like the real providers it takes a payout idempotently,
answers at once and reports the outcome later through the real webhook endpoint, signed with
the key whose public half the webhook service trusts, and redelivers what was not taken:
- TrueLayer: `POST /v3/payouts` by `Idempotency-Key`; then `payout_executed`, or
  `payout_failed` for a payout whose amount ends in 13 minor units.
- Circle: `POST /v1/payouts` by the body's `idempotencyKey`; then a `payouts` notification,
  `complete`, or `failed` (`insufficient_funds`) for an amount ending in 13 minor units.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictInt

log = logging.getLogger(__name__)

Sign = Callable[[bytes, str], dict[str, str]]
"""(body, path) -> the signature headers of a TrueLayer webhook."""
FAILING_UNITS = 13
"""A payout whose amount ends in these minor units fails (`insufficient_funds` at the bank)."""


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
    *,
    circle_url: str | None = None,
    circle_sign: Sign | None = None,
    delay: float = 0.05,
    attempts: int = 8,
) -> FastAPI:
    """The sandbox app; TrueLayer's webhooks go to `webhook_url` (`/v1/webhooks/truelayer`), and
    Circle's (when given) to `circle_url`. A webhook not taken (a 5xx, no answer) is sent again
    up to `attempts` times, `delay` times the attempt apart (at most 2 s): a real provider keeps
    trying for days, a chaos run's sandbox for as long as its faults last."""
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

    @app.post("/v3/payouts", status_code=202)
    def create_payout(
        body: PayoutRequest, idempotency_key: str = Header(alias="Idempotency-Key", min_length=1)
    ) -> dict[str, str]:
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
    def create_circle_payout(body: CirclePayoutRequest) -> dict[str, Any]:
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
