"""What every provider module shares: the errors, what a verified delivery says, exact money."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from topics.currencies import iso_exponent
from topics.errors import LedgerstreamError

InboxStatus = Literal["pending", "processed", "failed", "ignored"]


class MissingSignature(LedgerstreamError):
    """The signature header is absent or unreadable (400)."""


class BadSignature(LedgerstreamError):
    """The signature does not verify, is too old or names an unknown key (401)."""


class BadPayload(LedgerstreamError):
    """A verified body that is not a delivery of this provider (400)."""


class Unprocessable(LedgerstreamError):
    """A verified delivery whose content cannot become an event (kept in the inbox as failed)."""


@dataclass(frozen=True)
class Canonical:
    """One canonical event a delivery becomes: its topic and record, without metadata or inbox id."""

    topic: str
    record: dict[str, Any]
    occurred_at: int | None = None


@dataclass(frozen=True)
class Link:
    """What a delivery's provider object is linked to: one of our accounts, and for a payout of
    ours the transfer it paid out."""

    tenant_id: str
    account_id: str
    transaction_id: str | None = None


@dataclass(frozen=True)
class Authorization:
    """A card purchase asking, while the cardholder waits, to be approved against the ledger: the
    answer to the delivery is the decision (no event; the provider's own later events post and
    release). With `refusal` set the request could not be read as money, and is declined."""

    authorization_id: str
    units: int
    currency: str
    exponent: int
    reply_headers: tuple[tuple[str, str], ...] = ()
    """Headers the provider requires on the decision."""
    refusal: str | None = None


Build = Callable[[Link], list[Canonical]]
"""Given the link, the canonical events of a delivery (raises Unprocessable)."""


@dataclass(frozen=True)
class Notice:
    """What a verified delivery is: its provider event id and type, and what it becomes.

    `external_ref` names the provider's object that is linked to one of our accounts
    (a card, a merchant account, a wallet, an applicant); `build` makes the events
    once the link is found. With `payout` set, `external_ref` is the provider's id of a
    payout our dispatcher asked for, and the link is that payout's transfer. With `authorize`
    set, the delivery asks for a decision on the linked account's available funds. A notice
    with neither is kept with `status` and emits nothing.
    """

    event_id: str
    event_type: str
    external_ref: str | None = None
    build: Build | None = None
    status: InboxStatus = "processed"
    note: str | None = None
    payout: bool = False
    authorize: Authorization | None = None


@dataclass(frozen=True)
class Delivery:
    """The raw request as it reached us."""

    path: str
    headers: Mapping[str, str]
    body: bytes
    now: int
    """Seconds since the epoch when the request arrived."""


class Provider(Protocol):
    name: str

    def verify(self, delivery: Delivery) -> None:
        """Raise MissingSignature or BadSignature unless the body is the provider's."""

    def read(self, payload: Any, environment: str, delivery: Delivery) -> Notice:
        """What the verified payload is (raises BadPayload); `delivery` is the request it came in."""


def exponent_of(currency: str) -> int:
    """The ISO 4217 exponent of a currency code (Unprocessable for codes without minor units)."""
    exponent = iso_exponent(currency.upper())
    if exponent is None:
        raise Unprocessable(f"{currency!r} is not an ISO 4217 currency with minor units")
    return exponent


def minor_units(amount: Any, currency: str) -> int:
    """A decimal amount written as a string ("12.34") in exact minor units; refuses floats and
    amounts more precise than the currency."""
    if not isinstance(amount, str):
        raise Unprocessable(f"amount {amount!r} must be a decimal string")
    try:
        value = Decimal(amount)
    except ArithmeticError:
        raise Unprocessable(f"amount {amount!r} is not a decimal") from None
    if not value.is_finite():
        raise Unprocessable(f"amount {amount!r} is not finite")
    scaled = value.scaleb(exponent_of(currency))
    if scaled != scaled.to_integral_value():
        raise Unprocessable(f"amount {amount} has more decimals than {currency.upper()} allows")
    return int(scaled)


def integer(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if type(value) is not int:
        raise Unprocessable(f"{key} must be an integer, not {value!r}")
    return value


def text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value or len(value) > 256:
        raise BadPayload(f"{key} must be a non-empty string")
    return value


def section(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise BadPayload(f"{key} must be an object")
    return value


def document(payload: Any) -> Mapping[str, Any]:
    if not isinstance(payload, dict):
        raise BadPayload("the body must be a JSON object")
    return payload


def iso_instant(value: Any) -> datetime:
    """An RFC 3339 instant with an offset, as an aware datetime."""
    if not isinstance(value, str):
        raise Unprocessable(f"{value!r} is not a timestamp")
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Unprocessable(f"{value!r} is not an RFC 3339 timestamp") from None
    if at.tzinfo is None:
        raise Unprocessable(f"{value!r} has no UTC offset")
    return at.astimezone(UTC)
