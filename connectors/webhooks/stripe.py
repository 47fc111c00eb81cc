"""Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`, HMAC-SHA256 over `t.raw_body`.

Hand-written rather than the stripe SDK's helper: that one checks only that the
timestamp is not too old, and a timestamp from the future must be refused too.
Every v1 in the header is tried against every configured secret, so both sides
of a secret rotation verify. Card events are linked by card id (issuing) or
customer id (charges).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import SecretStr

from connectors.webhooks.common import (
    Authorization,
    BadPayload,
    BadSignature,
    Build,
    Canonical,
    Delivery,
    Link,
    MissingSignature,
    Notice,
    Unprocessable,
    document,
    exponent_of,
    integer,
    section,
    text,
)
from topics.names import CARDS_TRANSACTION_RECEIVED_V1

TOPIC = CARDS_TRANSACTION_RECEIVED_V1
TOLERANCE_SECONDS = 300
API_VERSION = "2025-03-31.basil"
"""The `Stripe-Version` a real-time authorization decision answers with (Stripe requires one)."""


class Stripe:
    name = "stripe"

    def __init__(self, secrets: Sequence[SecretStr], tolerance: int = TOLERANCE_SECONDS) -> None:
        self._secrets = [s.get_secret_value().encode() for s in secrets]
        self._tolerance = tolerance

    def verify(self, delivery: Delivery) -> None:
        header = delivery.headers.get("stripe-signature")
        if not header:
            raise MissingSignature("Stripe-Signature header is missing")
        timestamp, signatures = None, []
        for item in header.split(","):
            key, _, value = item.strip().partition("=")
            if key == "t":
                timestamp = value
            elif key == "v1":
                signatures.append(value)
        if timestamp is None or not timestamp.isdigit() or not signatures:
            raise MissingSignature("Stripe-Signature needs t= and at least one v1=")
        if abs(delivery.now - int(timestamp)) > self._tolerance:
            raise BadSignature(f"Stripe-Signature timestamp is outside +-{self._tolerance}s")
        signed = timestamp.encode() + b"." + delivery.body
        for secret in self._secrets:
            expected = hmac.new(secret, signed, hashlib.sha256).hexdigest()
            if any(hmac.compare_digest(expected, given) for given in signatures):
                return
        raise BadSignature("no v1 signature matches")

    def read(self, payload: Any, environment: str, delivery: Delivery) -> Notice:
        event = document(payload)
        event_id, kind = text(event, "id"), text(event, "type")
        if not event_id.startswith("evt_"):
            raise BadPayload("not a Stripe event id")
        livemode = event.get("livemode")
        if livemode is not (environment == "live"):
            raise BadPayload(f"a livemode={livemode} event sent to the {environment} endpoint")
        obj = section(section(event, "data"), "object")
        created = event.get("created")
        occurred = created * 1_000_000 if type(created) is int else None
        if kind == "issuing_authorization.request":
            return Notice(event_id, kind, text(section(obj, "card"), "id"), authorize=_request(obj))
        if kind in ("issuing_authorization.created", "issuing_authorization.updated"):
            if kind.endswith("updated") and obj.get("status") != "reversed":
                return Notice(event_id, kind, status="ignored", note="only reversals of authorizations")
            card = section(obj, "card")
            status = (
                "REVERSED"
                if obj.get("status") == "reversed"
                else ("AUTHORIZED" if obj.get("approved") is True else "DECLINED")
            )
            card_id = text(card, "id")
            return Notice(
                event_id, kind, card_id, _card(obj, text(obj, "id"), card_id, status, "DEBIT", occurred)
            )
        if kind == "issuing_transaction.created":
            capture = obj.get("type") == "capture"
            auth = obj.get("authorization")
            txn = auth if isinstance(auth, str) and auth else text(obj, "id")
            card_id = text(obj, "card")
            status, direction = ("CAPTURED", "DEBIT") if capture else ("REFUNDED", "CREDIT")
            return Notice(event_id, kind, card_id, _card(obj, txn, card_id, status, direction, occurred))
        if kind == "charge.succeeded":
            customer = text(obj, "customer")
            token = text(obj, "payment_method")
            return Notice(
                event_id, kind, customer, _card(obj, text(obj, "id"), token, "CAPTURED", "CREDIT", occurred)
            )
        return Notice(event_id, kind, status="ignored", note=f"{kind} is not a card money movement")


ZERO_DECIMAL = frozenset(
    "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split()  # noqa: SIM905
)
"""Stripe's zero-decimal currencies (stripe.com/docs/currencies#zero-decimal): amounts are whole units."""
TWO_DECIMAL_ONLY = frozenset({"ISK"})
"""Stripe's special case: ISK stays two-decimal in the API (100 = 1 krona) though ISO 4217 gives it 0
decimals, and amounts must be multiples of 100 (stripe.com/docs/currencies#special-cases)."""


def iso_units(amount: int, currency: str) -> tuple[int, int]:
    """A Stripe amount in ISO 4217 minor units, and the ISO exponent.

    Stripe writes most currencies in ISO minor units, except its zero-decimal list (MGA has 2
    decimals in ISO 4217, none at Stripe) and ISK (two decimals at Stripe, none in ISO 4217).
    HUF and TWD are two-decimal in both for charges (Stripe's whole-unit rule is for payouts), and
    three-decimal currencies (BHD, JOD, KWD, OMR, TND) are three in both. An amount that does not
    convert exactly is refused."""
    iso = exponent_of(currency)
    stripe = 0 if currency in ZERO_DECIMAL else 2 if currency in TWO_DECIMAL_ONLY else iso
    if stripe > iso:
        whole, rest = divmod(amount, 10 ** (stripe - iso))
        if rest:
            raise Unprocessable(
                f"a Stripe {currency} amount of {amount} is not a whole number of {currency} units"
            )
        return whole, iso
    return amount * 10 ** (iso - stripe), iso


def _request(obj: Mapping[str, Any]) -> Authorization:
    """What a real-time authorization asks to hold: its pending request's amount (the
    authorization's own amount is 0 until it is decided)."""
    pending = section(obj, "pending_request")
    currency = text(pending, "currency").upper()
    headers = (("Stripe-Version", API_VERSION),)
    try:
        units, exponent = iso_units(abs(integer(pending, "amount")), currency)
    except Unprocessable as e:
        return Authorization(text(obj, "id"), 0, currency, 0, headers, f"UNREADABLE_AMOUNT: {e}")
    refusal = None if units > 0 else "UNREADABLE_AMOUNT: an authorization of zero"
    return Authorization(text(obj, "id"), units, currency, exponent, headers, refusal)


def _card(
    obj: Mapping[str, Any], txn: str, card: str, status: str, direction: str, occurred: int | None
) -> Build:
    def build(link: Link) -> list[Canonical]:
        account_id = link.account_id
        currency = str(obj.get("currency", "")).upper()
        units, exponent = iso_units(abs(integer(obj, "amount")), currency)
        if units == 0 and status in ("CAPTURED", "REFUNDED"):
            raise Unprocessable("a captured or refunded amount of zero")
        given = obj.get("merchant_data")
        merchant: Mapping[str, Any] = given if isinstance(given, dict) else {}
        record = {
            "account_id": account_id,
            "transaction_id": txn,
            "card_token": card,
            "amount": {"units": units, "currency": currency, "exponent": exponent},
            "direction": direction,
            "status": status,
            "merchant_name": merchant.get("name"),
            "merchant_category_code": merchant.get("category_code"),
            "provider": "stripe",
            "provider_reference": obj["id"],
        }
        return [Canonical(TOPIC, record, occurred)]

    return build
