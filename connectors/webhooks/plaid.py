"""Plaid: the `Plaid-Verification` header is a JWT, ES256 only, naming its key by `kid`.

The key comes from the configured key set, and a key id it does not hold is fetched
from Plaid's `/webhook_verification_key/get` when API credentials are configured
(Plaid's own advice: keys rotate). Fetched keys are cached; a key whose `expired_at`
has passed is refused; an id Plaid does not know is remembered for a minute, so forged
ids cannot turn deliveries into a flood of key requests. The token must be at most five minutes old and
its `request_body_sha256` claim must equal the SHA-256 of the body as received.
Plaid's transaction webhooks say that updates are available, not what they are:
a delivery is kept in the inbox as `pending` for its item to be synced, and no
event is emitted from the webhook itself. Plaid sends no event id and the same body
each time an item has news, so a delivery is named by its signed token: copies of
one delivery are one row, and a later notice for the same item is a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx
import jwt
from pydantic import SecretStr

from connectors.webhooks.common import (
    BadPayload,
    BadSignature,
    Delivery,
    MissingSignature,
    Notice,
    document,
    text,
)

log = logging.getLogger(__name__)
MAX_AGE_SECONDS = 300
UNKNOWN_KID_SECONDS = 60.0


class PlaidKeys:
    """Plaid's webhook verification keys fetched by id (`POST /webhook_verification_key/get`)."""

    def __init__(self, api_url: str, client_id: str, secret: SecretStr, timeout: float = 3.0) -> None:
        self.api_url, self.client_id, self.secret, self.timeout = (
            api_url.rstrip("/"),
            client_id,
            secret,
            timeout,
        )
        self.fetched = 0

    def fetch(self, kid: str) -> dict[str, Any] | None:
        """The JWK of `kid`, or None when Plaid does not know it (or cannot be asked now)."""
        self.fetched += 1
        try:
            answer = httpx.post(
                f"{self.api_url}/webhook_verification_key/get",
                json={"client_id": self.client_id, "secret": self.secret.get_secret_value(), "key_id": kid},
                timeout=self.timeout,
            )
        except httpx.HTTPError as e:
            log.warning("plaid: fetching key %s failed: %s", kid, type(e).__name__)
            return None
        key = answer.json().get("key") if answer.status_code == 200 else None
        return key if isinstance(key, dict) and key.get("kid") == kid else None


PLAID_ENVIRONMENTS = {"live": "production", "sandbox": "sandbox"}


class Plaid:
    name = "plaid"

    def __init__(
        self, jwks: Mapping[str, Any], max_age: int = MAX_AGE_SECONDS, fetcher: PlaidKeys | None = None
    ) -> None:
        self._keys: dict[str, tuple[jwt.PyJWK, int | None]] = {
            key["kid"]: (jwt.PyJWK(key, algorithm="ES256"), key.get("expired_at"))
            for key in jwks.get("keys", [])
        }
        self._max_age = max_age
        self._fetcher = fetcher
        self._unknown: dict[str, float] = {}

    def _key(self, kid: str, now: int) -> jwt.PyJWK:
        found = self._keys.get(kid)
        if found is None and self._fetcher is not None and self._unknown.get(kid, 0.0) < time.monotonic():
            fetched = self._fetcher.fetch(kid)
            if fetched is None:
                self._unknown[kid] = time.monotonic() + UNKNOWN_KID_SECONDS
                if len(self._unknown) > 10_000:
                    self._unknown.clear()
            else:
                try:
                    found = (jwt.PyJWK(fetched, algorithm="ES256"), fetched.get("expired_at"))
                except jwt.PyJWKError as e:
                    raise BadSignature(f"Plaid's key {kid} is not an ES256 key: {e}") from None
                self._keys[kid] = found
        if found is None:
            raise BadSignature("unknown key id")
        key, expired_at = found
        if isinstance(expired_at, int) and expired_at <= now:
            raise BadSignature(f"key {kid} expired")
        return key

    def verify(self, delivery: Delivery) -> None:
        token = delivery.headers.get("plaid-verification")
        if not token:
            raise MissingSignature("Plaid-Verification header is missing")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as e:
            raise MissingSignature(f"Plaid-Verification is not a JWT: {e}") from None
        if header.get("alg") != "ES256":
            raise BadSignature(f"algorithm {header.get('alg')!r} is not ES256")
        key = self._key(str(header.get("kid", "")), delivery.now)
        try:
            claims = jwt.decode(token, key.key, algorithms=["ES256"], options={"require": ["iat"]})
        except jwt.PyJWTError as e:
            raise BadSignature(f"the token does not verify: {e}") from None
        iat = claims["iat"]
        if type(iat) is not int or not -60 <= delivery.now - iat <= self._max_age:
            raise BadSignature(f"the token was issued more than {self._max_age}s ago or in the future")
        claimed = claims.get("request_body_sha256")
        digest = hashlib.sha256(delivery.body).hexdigest()
        if not isinstance(claimed, str) or not hmac.compare_digest(claimed, digest):
            raise BadSignature("the body's SHA-256 does not match the token")

    def read(self, payload: Any, environment: str, delivery: Delivery) -> Notice:
        body = document(payload)
        kind = f"{text(body, 'webhook_type')}.{text(body, 'webhook_code')}"
        env = body.get("environment")
        if env is not None and env != PLAID_ENVIRONMENTS[environment]:
            raise BadPayload(f"a Plaid {env} webhook sent to the {environment} endpoint")
        item = text(body, "item_id")
        # Plaid gives no event id, and its sync notices for an item repeat the same body: the
        # signed token (body hash and issue time) names one delivery, and its copies dedupe.
        event_id = hashlib.sha256(delivery.headers["plaid-verification"].encode()).hexdigest()
        if kind in ("TRANSACTIONS.SYNC_UPDATES_AVAILABLE", "TRANSACTIONS.DEFAULT_UPDATE"):
            note = f"item {item} needs a transactions sync"
            return Notice(event_id, kind, item, status="pending", note=note)
        return Notice(event_id, kind, item, status="ignored", note=f"{kind} carries no money movement")
