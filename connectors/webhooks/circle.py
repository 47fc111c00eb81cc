"""Circle: `X-Circle-Signature` is a base64 ECDSA (P-256, SHA-256) signature of the raw
body by the key `X-Circle-Key-Id` names; public keys are configured by id (Circle
serves them at /v2/notifications/publicKey/{id}). `payments` (money in) notifications
become bank transactions with the amount's decimal string converted exactly to minor
units; the wallet id is the link. `payouts` (money out) are payouts our dispatcher asked
for: `complete` and `failed` become status reports of the transfer the payout id is
linked to (`pending` adds nothing to the SENT_TO_PROVIDER the dispatcher reported).
A payout id that is not (yet) ours is refused with 503, so Circle redelivers it: money
out is never posted twice, once by a bank debit and once by its transfer.
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
    Link,
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
from topics.names import BANKING_TRANSACTION_RECEIVED_V1, PAYMENTS_TRANSACTION_STATUS_REPORTED_V1

TOPIC = BANKING_TRANSACTION_RECEIVED_V1
REPORTED = PAYMENTS_TRANSACTION_STATUS_REPORTED_V1
STATUSES = {
    "payments": {"pending": "PENDING", "confirmed": "PENDING", "paid": "POSTED", "failed": "CANCELLED"},
}
PAYOUT_STEPS: dict[str, tuple[str, ...]] = {
    "complete": ("PROVIDER_PROCESSING", "PROVIDER_CONFIRMING", "COMPLETED"),
    "failed": ("FAILED",),
}
"""What a payout's notification reports about its transfer: a complete payout has settled, so
the steps in between are recorded one by one, each naming this delivery."""


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
        if kind == "payouts":
            return payout_notice(section(body, "notification"), event_id)
        if kind not in STATUSES:
            return Notice(event_id, kind, status="ignored", note=f"{kind} is not a payment or payout")
        item = section(body, "notification")
        wallet = text(item, "walletId")

        def build(link: Link) -> list[Canonical]:
            account_id = link.account_id
            amount = section(item, "amount")
            currency = text(amount, "currency")
            units = minor_units(amount.get("amount"), currency)
            if units <= 0:
                raise Unprocessable(f"a {kind} amount of {amount.get('amount')}")
            status = STATUSES[kind].get(str(item.get("status")))
            if status is None:
                raise Unprocessable(f"{kind} status {item.get('status')!r} is unknown")
            at = iso_instant(item.get("updateDate") or item.get("createDate"))
            record = {
                "account_id": account_id,
                "transaction_id": text(item, "id"),
                "amount": {"units": units, "currency": currency, "exponent": exponent_of(currency)},
                "direction": "CREDIT",
                "status": status,
                "counterparty_reference": item.get("description")
                if isinstance(item.get("description"), str)
                else None,
                "booking_date": at.date(),
                "value_date": None,
                "provider": "circle",
                "provider_reference": text(item, "id"),
            }
            return [Canonical(TOPIC, record, to_micros(at))]

        return Notice(event_id, f"{kind}.{item.get('status')}", wallet, build)


def payout_notice(item: Mapping[str, Any], event_id: str) -> Notice:
    """A payout's outcome for the transfer it paid out (linked by the payout id Circle gave us)."""
    payout_id, status = text(item, "id"), item.get("status")
    if status == "pending":
        return Notice(event_id, "payouts.pending", status="ignored", note="reported SENT_TO_PROVIDER already")
    steps = PAYOUT_STEPS.get(str(status))
    if steps is None:
        raise Unprocessable(f"payout status {status!r} is unknown")
    at = iso_instant(item.get("updateDate") or item.get("createDate"))

    def build(link: Link) -> list[Canonical]:
        if link.transaction_id is None:
            raise Unprocessable(f"payout {payout_id} is linked to no transfer")
        reason = f"circle payout {payout_id} {status}"
        if status == "failed":
            reason += f": {item.get('errorCode') or 'no error code given'}"
        return [
            Canonical(
                REPORTED,
                {
                    "account_id": link.account_id,
                    "transaction_id": link.transaction_id,
                    "status": step,
                    "reason": reason,
                    "provider": "circle",
                    "provider_update_id": event_id,
                    "expected_version": None,
                },
                to_micros(at),
            )
            for step in steps
        ]

    return Notice(event_id, f"payouts.{status}", payout_id, build, payout=True)
