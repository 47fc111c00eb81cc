"""A local stand-in for TrueLayer's Payouts API, for the demo and the tests (no provider API is
reachable from here). It takes `POST /v3/payouts` idempotently by `Idempotency-Key` and, like
the real provider, answers at once and reports the outcome later: a signed `payout_executed`
(or `payout_failed`, for a payout whose amount ends in 13 minor units) delivered to the
webhook endpoint, signed with the key whose public half the webhook service trusts.
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


def create_sandbox(webhook_url: str, sign: Sign, *, delay: float = 0.05) -> FastAPI:
    """The sandbox app; webhooks go to `webhook_url` (the `/v1/webhooks/truelayer` endpoint)."""
    payouts: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()
    outgoing: queue.Queue[dict[str, Any] | None] = queue.Queue()
    path = httpx.URL(webhook_url).path

    def deliver() -> None:
        with httpx.Client(timeout=10) as http:
            while (event := outgoing.get()) is not None:
                body = json.dumps(event, separators=(",", ":")).encode()
                for attempt in range(5):  # a provider retries a webhook it could not deliver
                    try:
                        headers = {"content-type": "application/json", **sign(body, path)}
                        answer = http.post(webhook_url, content=body, headers=headers)
                        if answer.status_code < 500:
                            break
                    except httpx.HTTPError as e:
                        log.warning("sandbox webhook attempt %d failed: %s", attempt + 1, e)
                    threading.Event().wait(delay * (attempt + 1))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker = threading.Thread(target=deliver, name="provider-sandbox-webhooks", daemon=True)
        worker.start()
        try:
            yield
        finally:
            outgoing.put(None)
            worker.join(timeout=10)

    app = FastAPI(title="provider sandbox (TrueLayer payouts)", lifespan=lifespan)

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
            "type": "payout_failed" if failed else "payout_executed", "event_id": str(uuid.uuid4()),
            "event_version": 1, "payout_id": payout_id, "metadata": body.metadata,
        }  # fmt: skip
        event.update(
            {"failed_at": now, "failure_reason": "insufficient_funds"} if failed else {"executed_at": now}
        )
        outgoing.put(event)
        return {"id": payout_id}

    return app
