"""Building event metadata and deterministic ids."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha1
from typing import Any

from topics.settings import Environment

LEDGERSTREAM_NAMESPACE = uuid.UUID("5b0c6f7e-3a7d-4d0e-9a43-6c1f0e2b8d11")
_NAMESPACE_BYTES = LEDGERSTREAM_NAMESPACE.bytes


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(at: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, in integers (no float in between)."""
    delta = at - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def now_micros() -> int:
    return time.time_ns() // 1000


def new_metadata(
    event_type: str,
    *,
    tenant_id: str,
    environment: Environment,
    source: str,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    idempotency_key: str | None = None,
    user_id: str | None = None,
    customer_id: str | None = None,
    event_id: str | None = None,
    occurred_at: int | datetime | None = None,
) -> dict[str, Any]:
    """A metadata record; a correlation id is generated when the edge gave none."""
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": occurred_at if occurred_at is not None else now_micros(),
        "tenant_id": tenant_id,
        "user_id": user_id,
        "customer_id": customer_id,
        "environment": environment,
        "correlation_id": correlation_id or str(uuid.uuid4()),
        "causation_id": causation_id,
        "idempotency_key": idempotency_key,
        "source": source,
    }


def derived_metadata(
    cause: Mapping[str, Any],
    event_type: str,
    *,
    source: str,
    event_id: str,
    occurred_at: int | datetime | None = None,
) -> dict[str, Any]:
    """Metadata of an event an agent derives from `cause` (a decoded metadata record): the same
    tenant, environment, correlation, user and customer; caused by it; at its time unless given."""
    return new_metadata(
        event_type,
        tenant_id=cause["tenant_id"],
        environment=cause["environment"],
        source=source,
        correlation_id=cause["correlation_id"],
        causation_id=str(cause["event_id"]),
        user_id=cause.get("user_id"),
        customer_id=cause.get("customer_id"),
        event_id=event_id,
        occurred_at=cause["occurred_at"] if occurred_at is None else occurred_at,
    )


def derived_event_id(source_event_id: str, agent: str, qualifier: str = "") -> str:
    """UUIDv5 of the source event id and the agent: reprocessing yields the same id.

    `uuid.uuid5` computed straight from its SHA-1 (RFC 9562, 5.5), the same string without
    building a UUID object: the agents derive two or three ids per event."""
    digest = bytearray(
        sha1(_NAMESPACE_BYTES + f"{agent}:{source_event_id}:{qualifier}".encode()).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True)
class Event:
    """A decoded event and where it came from."""

    record: dict[str, Any]
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None = None
    """The original bytes, where a consumer needs to keep or dead-letter them."""
