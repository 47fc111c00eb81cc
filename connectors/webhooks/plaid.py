"""Plaid: the `Plaid-Verification` header is a JWT, ES256 only, naming its key by `kid`.

The key comes from the configured key set (Plaid serves it at
/webhook_verification_key/get). The token must be at most five minutes old and
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
from collections.abc import Mapping
from typing import Any

import jwt

from connectors.webhooks.common import (
    BadPayload,
    BadSignature,
    Delivery,
    MissingSignature,
    Notice,
    document,
    text,
)

MAX_AGE_SECONDS = 300
PLAID_ENVIRONMENTS = {"live": "production", "sandbox": "sandbox"}


class Plaid:
    name = "plaid"

    def __init__(self, jwks: Mapping[str, Any], max_age: int = MAX_AGE_SECONDS) -> None:
        self._keys = {key["kid"]: jwt.PyJWK(key, algorithm="ES256") for key in jwks.get("keys", [])}
        self._max_age = max_age

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
        key = self._keys.get(header.get("kid", ""))
        if key is None:
            raise BadSignature("unknown key id")
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
