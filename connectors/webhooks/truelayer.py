"""TrueLayer: `Tl-Signature` is a detached JWS (ES512) over the method, the path, the
headers it lists in `tl_headers` and the body, verified with the truelayer-signing
library against the configured key set (TrueLayer's JWKS, fetched by ops from an
allow-listed `jku`). `X-Tl-Webhook-Timestamp` must be signed and within +-300 s.
`external_payment_received` (money into a merchant account) becomes a bank
transaction; the merchant account id is the link to our account. `payout_executed` and
`payout_failed` become status reports of the transfer the payout was for.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
from truelayer_signing import HttpMethod, extract_jws_header, verify_with_jwks
from truelayer_signing.errors import TlSigningException

from connectors.webhooks.common import (
    BadPayload,
    BadSignature,
    Canonical,
    Delivery,
    Link,
    MissingSignature,
    Notice,
    Unprocessable,
    document,
    exponent_of,
    integer,
    iso_instant,
    text,
)
from topics.events import to_micros
from topics.names import BANKING_TRANSACTION_RECEIVED_V1, PAYMENTS_TRANSACTION_STATUS_REPORTED_V1

log = logging.getLogger(__name__)
TOPIC = BANKING_TRANSACTION_RECEIVED_V1
TIMESTAMP_HEADER = "x-tl-webhook-timestamp"
TOLERANCE_SECONDS = 300


JKU_ALLOWED = (
    "https://webhooks.truelayer.com/.well-known/jwks",
    "https://webhooks.truelayer-sandbox.com/.well-known/jwks",
)
"""The key-set URLs TrueLayer signs webhooks with; any other `jku` is never fetched."""
UNKNOWN_SECONDS = 60.0


class TrueLayerKeys:
    """TrueLayer's webhook signing keys, fetched from an allow-listed `jku` at most once a minute."""

    def __init__(self, allowed: tuple[str, ...] = JKU_ALLOWED, timeout: float = 3.0) -> None:
        self.allowed, self.timeout = frozenset(allowed), timeout
        self._asked: dict[str, float] = {}
        self.fetched = 0

    def keys(self, jku: str) -> list[dict[str, Any]]:
        if jku not in self.allowed or self._asked.get(jku, 0.0) > time.monotonic():
            return []
        self._asked[jku] = time.monotonic() + UNKNOWN_SECONDS
        self.fetched += 1
        try:
            answer = httpx.get(jku, timeout=self.timeout)
            found = answer.json().get("keys") if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as e:
            log.warning("truelayer: fetching %s failed: %s", jku, type(e).__name__)
            return []
        return [k for k in found if isinstance(k, dict)] if isinstance(found, list) else []


DETACHED_JWS = re.compile(r"[A-Za-z0-9_-]+\.\.[A-Za-z0-9_-]+")


class TrueLayer:
    name = "truelayer"

    def __init__(
        self,
        jwks: Mapping[str, Any],
        tolerance: int = TOLERANCE_SECONDS,
        fetcher: TrueLayerKeys | None = None,
    ) -> None:
        self._jwks: dict[str, Any] = {"keys": list(jwks.get("keys", []))}
        self._kids = {key.get("kid") for key in self._jwks["keys"]}
        self._tolerance = tolerance
        self._fetcher = fetcher

    def _learn(self, kid: str, jku: str | None) -> None:
        """Fetch the key set a signature names by `jku` (an allow-listed TrueLayer URL only) when its
        key id is new: TrueLayer rotates its keys."""
        if self._fetcher is None or jku is None or kid in self._kids:
            return
        for key in self._fetcher.keys(jku):
            if key.get("kid") not in self._kids:
                self._jwks["keys"].append(key)
                self._kids.add(key.get("kid"))

    def verify(self, delivery: Delivery) -> None:
        signature = delivery.headers.get("tl-signature")
        if not signature:
            raise MissingSignature("Tl-Signature header is missing")
        if not DETACHED_JWS.fullmatch(signature):
            # base64 decoding skips characters outside its alphabet: refuse them before it can
            raise MissingSignature("Tl-Signature is not a detached JWS (base64url header..signature)")
        try:
            header = extract_jws_header(signature)
        except (TlSigningException, ValueError, KeyError, TypeError) as e:
            raise MissingSignature(f"Tl-Signature is not a JWS: {e}") from None
        self._learn(header.kid, header.jku)
        if header.alg != "ES512" or header.kid not in self._kids:
            raise BadSignature("Tl-Signature names an unknown key or algorithm")
        try:
            body = delivery.body.decode("utf-8")
            (
                verify_with_jwks(self._jwks, header)
                .set_method(HttpMethod.POST)
                .set_path(delivery.path)
                .add_headers(dict(delivery.headers))
                .add_required_header(TIMESTAMP_HEADER)
                .set_body(body)
                .verify(signature)
            )
        except (TlSigningException, UnicodeDecodeError, ValueError) as e:
            raise BadSignature(f"Tl-Signature does not verify: {e}") from None
        try:
            sent = iso_instant(delivery.headers.get(TIMESTAMP_HEADER))
        except Unprocessable as e:
            raise BadSignature(str(e)) from None
        if abs(delivery.now - int(sent.timestamp())) > self._tolerance:
            raise BadSignature(f"X-Tl-Webhook-Timestamp is outside +-{self._tolerance}s")

    def read(self, payload: Any, environment: str, delivery: Delivery) -> Notice:
        body = document(payload)
        kind, event_id = text(body, "type"), text(body, "event_id")
        if kind in PAYOUT_STEPS:
            return payout_notice(body, kind, event_id)
        if kind != "external_payment_received":
            return Notice(event_id, kind, status="ignored", note=f"{kind} carries no amount to book")
        merchant_account = text(body, "merchant_account_id")
        if body.get("event_version") != 1:
            raise BadPayload(f"event_version {body.get('event_version')!r} of {kind} is not supported")

        def build(link: Link) -> list[Canonical]:
            account_id = link.account_id
            currency = text(body, "currency")
            units = integer(body, "amount_in_minor")
            if units <= 0:
                raise Unprocessable(f"a received payment of {units}")
            settled: datetime = iso_instant(body.get("settled_at"))
            given = body.get("remitter")
            remitter: Mapping[str, Any] = given if isinstance(given, dict) else {}
            record = {
                "account_id": account_id,
                "transaction_id": text(body, "transaction_id"),
                "amount": {"units": units, "currency": currency, "exponent": exponent_of(currency)},
                "direction": "CREDIT",
                "status": "POSTED",
                "counterparty_reference": remitter.get("reference") or body.get("reference"),
                "booking_date": settled.date(),
                "value_date": settled.date(),
                "provider": "truelayer",
                "provider_reference": text(body, "transaction_id"),
            }
            return [Canonical(TOPIC, record, to_micros(settled))]

        return Notice(event_id, kind, merchant_account, build)


REPORTED = PAYMENTS_TRANSACTION_STATUS_REPORTED_V1
PAYOUT_STEPS: dict[str, tuple[str, ...]] = {
    "payout_executed": ("PROVIDER_PROCESSING", "PROVIDER_CONFIRMING", "COMPLETED"),
    "payout_failed": ("FAILED",),
}
"""What a payout's webhook reports about its transfer. TrueLayer says `executed` once the money
has left: the steps in between are recorded one by one, each naming this delivery."""


def payout_notice(body: Mapping[str, Any], kind: str, event_id: str) -> Notice:
    """A payout's outcome for the transfer it paid out; the transfer id comes back in the payout's
    metadata (we set it when we asked for the payout) and is the link to tenant and account."""
    if body.get("event_version") != 1:
        raise BadPayload(f"event_version {body.get('event_version')!r} of {kind} is not supported")
    given = body.get("metadata")
    metadata: Mapping[str, Any] = given if isinstance(given, dict) else {}
    transaction_id = text(metadata, "transaction_id")
    payout_id = text(body, "payout_id")
    at = body.get("executed_at") if kind == "payout_executed" else body.get("failed_at")

    def build(link: Link) -> list[Canonical]:
        account_id = link.account_id
        occurred = to_micros(iso_instant(at))
        reason = f"truelayer {kind} {payout_id}"
        if kind == "payout_failed":
            reason += f": {body.get('failure_reason') or 'no reason given'}"
        return [
            Canonical(
                REPORTED,
                {
                    "account_id": account_id,
                    "transaction_id": transaction_id,
                    "status": status,
                    "reason": reason,
                    "provider": "truelayer",
                    "provider_update_id": event_id,
                    "expected_version": None,
                },
                occurred,
            )
            for status in PAYOUT_STEPS[kind]
        ]

    return Notice(event_id, kind, transaction_id, build)
