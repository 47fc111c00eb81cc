"""Circle: `X-Circle-Signature` is a base64 ECDSA (P-256, SHA-256) signature of the raw
body by the key `X-Circle-Key-Id` names; public keys are configured by id (Circle
serves them at /v2/notifications/publicKey/{id}). `payments` (money in) and
`payouts` (money out) notifications become bank transactions with the amount's
decimal string converted exactly to minor units; the wallet id is the link.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from connectors.webhooks.common import (
    BadSignature,
    Canonical,
    Delivery,
    MissingSignature,
    Notice,
    Unprocessable,
    document,
    exponent_of,
    iso_instant,
    minor_units,
    section,
    text,
)
from topics.events import to_micros

TOPIC = "banking.transaction.received.v1"
STATUSES = {
    "payments": {"pending": "PENDING", "confirmed": "PENDING", "paid": "POSTED", "failed": "CANCELLED"},
    "payouts": {"pending": "PENDING", "complete": "POSTED", "failed": "CANCELLED"},
}


class Circle:
    name = "circle"

    def __init__(self, public_keys: Mapping[str, str]) -> None:
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for key_id, der in public_keys.items():
            key = load_der_public_key(base64.b64decode(der))
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise ValueError(f"Circle key {key_id} is not an EC public key")
            self._keys[key_id] = key

    def verify(self, delivery: Delivery) -> None:
        signature = delivery.headers.get("x-circle-signature")
        key_id = delivery.headers.get("x-circle-key-id")
        if not signature or not key_id:
            raise MissingSignature("X-Circle-Signature and X-Circle-Key-Id are required")
        key = self._keys.get(key_id)
        if key is None:
            raise BadSignature("unknown Circle key id")
        try:
            key.verify(base64.b64decode(signature, validate=True), delivery.body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, binascii.Error, ValueError):
            raise BadSignature("X-Circle-Signature does not verify") from None

    def read(self, payload: Any, environment: str, delivery: Delivery) -> Notice:
        body = document(payload)
        kind, event_id = text(body, "notificationType"), text(body, "notificationId")
        if kind not in STATUSES:
            return Notice(event_id, kind, status="ignored", note=f"{kind} is not a payment or payout")
        item = section(body, "notification")
        wallet = text(item, "walletId")

        def build(account_id: str) -> list[Canonical]:
            amount = section(item, "amount")
            currency = text(amount, "currency")
            units = minor_units(amount.get("amount"), currency)
            if units <= 0:
                raise Unprocessable(f"a {kind} amount of {amount.get('amount')}")
            status = STATUSES[kind].get(str(item.get("status")))
            if status is None:
                raise Unprocessable(f"{kind} status {item.get('status')!r} is unknown")
            at = iso_instant(item.get("updateDate") or item.get("createDate"))
            credit = kind == "payments"
            record = {
                "account_id": account_id, "transaction_id": text(item, "id"),
                "amount": {"units": units if credit else -units, "currency": currency,
                           "exponent": exponent_of(currency)},
                "direction": "CREDIT" if credit else "DEBIT", "status": status,
                "counterparty_reference": item.get("description") if isinstance(item.get("description"), str)
                else None, "booking_date": at.date(), "value_date": None, "provider": "circle",
                "provider_reference": text(item, "id"),
            }  # fmt: skip
            return [Canonical(TOPIC, record, to_micros(at))]

        return Notice(event_id, f"{kind}.{item.get('status')}", wallet, build)
