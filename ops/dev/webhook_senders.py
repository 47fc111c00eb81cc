"""Providers' side of webhooks, for the demo and the tests: keys, signatures and payloads
shaped as Stripe, Plaid, TrueLayer, Circle and Sumsub send them.

Nothing here is used by the service itself; it signs the way each provider's
documentation and libraries say, so the service's verifiers are exercised for real.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from pydantic import SecretStr
from truelayer_signing import HttpMethod, sign_with_pem

from connectors.payouts import PayoutCredentials
from connectors.webhooks.settings import WebhookSettings


def _jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    public = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    return {**public, "kid": kid, "use": "sig"}


@dataclass
class ProviderKeys:
    """One fresh set of every provider's signing material."""

    stripe_secrets: list[str] = field(default_factory=lambda: [f"whsec_{secrets.token_hex(16)}"])
    sumsub_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    plaid_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    plaid_kid: str = "plaid-key-1"
    truelayer_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP521R1())
    )
    truelayer_kid: str = "tl-key-1"
    circle_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    circle_kid: str = "circle-key-1"
    # the merchant's side of the payout APIs: what TrueLayer and Circle would have issued us
    truelayer_client_id: str = field(default_factory=lambda: f"ledgerstream-{secrets.token_hex(4)}")
    truelayer_client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    truelayer_request_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP521R1())
    )
    truelayer_request_kid: str = field(default_factory=lambda: str(uuid.uuid4()))
    circle_api_key: str = field(default_factory=lambda: f"SAND_API_KEY:{secrets.token_hex(16)}")

    def payouts(self) -> PayoutCredentials:
        """How the dispatcher authenticates to the sandbox's payout APIs."""
        return PayoutCredentials.from_environment(self.payout_environment())

    def payout_environment(self) -> dict[str, str]:
        """The same credentials as environment variables, for a `connect dispatcher` process."""
        pem = self.truelayer_request_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return {
            "TRUELAYER_CLIENT_ID": self.truelayer_client_id,
            "TRUELAYER_CLIENT_SECRET": self.truelayer_client_secret,
            "TRUELAYER_SIGNING_KEY_ID": self.truelayer_request_kid,
            "TRUELAYER_SIGNING_KEY": pem,
            "CIRCLE_API_KEY": self.circle_api_key,
        }

    def settings(self, **overrides: Any) -> WebhookSettings:
        circle_der = self.circle_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return WebhookSettings.model_validate(
            {
                "STRIPE_WEBHOOK_SECRETS": SecretStr(",".join(self.stripe_secrets)),
                "SUMSUB_WEBHOOK_SECRET": SecretStr(self.sumsub_secret),
                "PLAID_WEBHOOK_JWKS": {"keys": [_jwk(self.plaid_key, self.plaid_kid)]},
                "TRUELAYER_WEBHOOK_JWKS": {"keys": [_jwk(self.truelayer_key, self.truelayer_kid)]},
                "CIRCLE_WEBHOOK_KEYS": {self.circle_kid: base64.b64encode(circle_der).decode()},
                **overrides,
            }
        )

    def environment(self) -> dict[str, str]:
        """The same settings as environment variables, for a `connect webhooks` process."""
        s = self.settings()
        return {
            "STRIPE_WEBHOOK_SECRETS": ",".join(self.stripe_secrets),
            "SUMSUB_WEBHOOK_SECRET": self.sumsub_secret,
            "PLAID_WEBHOOK_JWKS": json.dumps(s.plaid_jwks),
            "TRUELAYER_WEBHOOK_JWKS": json.dumps(s.truelayer_jwks),
            "CIRCLE_WEBHOOK_KEYS": json.dumps(s.circle_keys),
        }

    # -- signatures -------------------------------------------------------------------------
    def stripe(self, body: bytes, *, at: int | None = None, secret: str | None = None) -> dict[str, str]:
        t = str(at if at is not None else int(time.time()))
        key = (secret or self.stripe_secrets[0]).encode()
        v1 = hmac.new(key, t.encode() + b"." + body, hashlib.sha256).hexdigest()
        return {"Stripe-Signature": f"t={t},v1={v1}"}

    def plaid(
        self,
        body: bytes,
        *,
        iat: int | None = None,
        kid: str | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> dict[str, str]:
        claims = {
            "iat": iat if iat is not None else int(time.time()),
            "request_body_sha256": hashlib.sha256(body).hexdigest(),
        }
        token = jwt.encode(
            claims, key or self.plaid_key, algorithm="ES256", headers={"kid": kid or self.plaid_kid}
        )
        return {"Plaid-Verification": token}

    def truelayer(self, body: bytes, path: str, *, at: datetime | None = None) -> dict[str, str]:
        stamp = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        pem = self.truelayer_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        signature = (
            sign_with_pem(self.truelayer_kid, pem)
            .set_method(HttpMethod.POST)
            .set_path(path)
            .add_header("X-Tl-Webhook-Timestamp", stamp)
            .set_body(body.decode())
            .sign()
        )
        return {"Tl-Signature": signature, "X-Tl-Webhook-Timestamp": stamp}

    def circle(self, body: bytes, *, key: ec.EllipticCurvePrivateKey | None = None) -> dict[str, str]:
        signature = (key or self.circle_key).sign(body, ec.ECDSA(hashes.SHA256()))
        encoded = base64.b64encode(signature).decode()
        return {"X-Circle-Signature": encoded, "X-Circle-Key-Id": self.circle_kid}

    def sumsub(self, body: bytes, *, algorithm: str = "HMAC_SHA256_HEX") -> dict[str, str]:
        digest = {
            "HMAC_SHA256_HEX": hashlib.sha256,
            "HMAC_SHA512_HEX": hashlib.sha512,
            "HMAC_SHA1_HEX": hashlib.sha1,
        }[algorithm]
        mac = hmac.new(self.sumsub_secret.encode(), body, digest).hexdigest()
        return {"X-Payload-Digest": mac, "X-Payload-Digest-Alg": algorithm}

    def sign(self, provider: str, body: bytes, path: str | None = None) -> dict[str, str]:
        """Headers that make `body` a valid delivery from `provider` now."""
        if provider == "truelayer":
            return self.truelayer(body, path or "/v1/webhooks/truelayer")
        if provider == "stripe":
            return self.stripe(body)
        if provider == "plaid":
            return self.plaid(body)
        if provider == "circle":
            return self.circle(body)
        return self.sumsub(body)


# -- payloads -----------------------------------------------------------------------------------
def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _authorization(
    card: str, units: int, currency: str, approved: bool, authorization: str | None
) -> dict[str, Any]:
    """A Stripe issuing authorization object."""
    return {
        "id": authorization or _id("iauth"),
        "object": "issuing.authorization",
        "amount": units,
        "currency": currency,
        "approved": approved,
        "status": "pending",
        "card": {"id": card, "object": "issuing.card"},
        "merchant_data": {"name": "Corner Books", "category_code": "5942"},
    }


def _issuing_event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": _id("evt"),
        "object": "event",
        "type": kind,
        "livemode": False,
        "created": int(time.time()),
        "data": {"object": obj},
    }


def stripe_authorization(
    card: str, units: int, currency: str = "eur", *, approved: bool = True, authorization: str | None = None
) -> dict[str, Any]:
    """`issuing_authorization.created`: a card purchase authorized (funds held until capture); of
    `authorization`, the id its real-time request had, when given."""
    obj = _authorization(card, units, currency, approved, authorization)
    return _issuing_event("issuing_authorization.created", obj)


def stripe_authorization_request(card: str, units: int, currency: str = "eur") -> dict[str, Any]:
    """`issuing_authorization.request`: a card purchase waiting on our decision (Stripe's real-time
    authorization); the amount asked for is in `pending_request`, the authorization's own is 0."""
    obj = _authorization(card, 0, currency, False, None)
    obj["pending_request"] = {
        "amount": units,
        "currency": currency,
        "is_amount_controllable": False,
        "merchant_amount": units,
        "merchant_currency": currency,
    }
    return _issuing_event("issuing_authorization.request", obj)


def stripe_capture(
    card: str,
    units: int,
    currency: str = "eur",
    *,
    live: bool = False,
    authorization: str | None = None,
    refund: bool = False,
) -> dict[str, Any]:
    """`issuing_transaction.created` for a card purchase (Stripe's amount is negative) or its refund."""
    return {
        "id": _id("evt"),
        "object": "event",
        "type": "issuing_transaction.created",
        "livemode": live,
        "created": int(time.time()),
        "api_version": "2024-06-20",
        "data": {
            "object": {
                "id": _id("ipi"),
                "object": "issuing.transaction",
                "amount": units if refund else -units,
                "currency": currency,
                "card": card,
                "authorization": authorization or _id("iauth"),
                "type": "refund" if refund else "capture",
                "merchant_data": {"name": "Corner Books", "category_code": "5942"},
            }
        },
    }


def stripe_charge(customer: str, units: int, currency: str = "eur") -> dict[str, Any]:
    """`charge.succeeded`: a customer loads money with a card."""
    return {
        "id": _id("evt"),
        "object": "event",
        "type": "charge.succeeded",
        "livemode": False,
        "created": int(time.time()),
        "data": {
            "object": {
                "id": _id("ch"),
                "object": "charge",
                "amount": units,
                "currency": currency,
                "customer": customer,
                "payment_method": _id("pm"),
                "status": "succeeded",
            }
        },
    }


def plaid_sync(item: str) -> dict[str, Any]:
    return {
        "webhook_type": "TRANSACTIONS",
        "webhook_code": "SYNC_UPDATES_AVAILABLE",
        "item_id": item,
        "initial_update_complete": True,
        "historical_update_complete": True,
        "environment": "sandbox",
    }


def truelayer_payment(merchant_account: str, units: int, currency: str = "GBP") -> dict[str, Any]:
    """`external_payment_received`: money paid into a merchant account."""
    return {
        "type": "external_payment_received",
        "event_version": 1,
        "event_id": str(uuid.uuid4()),
        "transaction_id": str(uuid.uuid4()),
        "currency": currency,
        "amount_in_minor": units,
        "settled_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "merchant_account_id": merchant_account,
        "reference": "INV-2026-11",
        "remitter": {"account_holder_name": "A. Customer", "reference": "INV-2026-11"},
    }


def circle_payment(
    wallet: str, amount: str, currency: str = "USD", status: str = "paid", kind: str = "payments"
) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "subscriptionId": str(uuid.uuid4()),
        "notificationId": str(uuid.uuid4()),
        "notificationType": kind,
        "notification": {
            "id": str(uuid.uuid4()),
            "walletId": wallet,
            "status": status,
            "amount": {"amount": amount, "currency": currency},
            "createDate": now,
            "updateDate": now,
            "description": "Merchant Push",
        },
        "timestamp": now,
        "version": 2,
    }


def sumsub_review(user: str, answer: str = "GREEN", reject: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"reviewAnswer": answer}
    if reject:
        result["reviewRejectType"] = reject
    return {
        "applicantId": uuid.uuid4().hex[:24],
        "inspectionId": uuid.uuid4().hex[:24],
        "correlationId": f"req-{uuid.uuid4()}",
        "externalUserId": user,
        "levelName": "basic-kyc-level",
        "type": "applicantReviewed",
        "reviewStatus": "completed",
        "reviewResult": result,
        "sandboxMode": True,
        "createdAtMs": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
    }


def encode(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
