"""Kafka headers that repeat an event's routing fields, so tools filter without decoding."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

ROUTING_FIELDS = ("event_id", "event_type", "tenant_id", "environment", "correlation_id", "source")
SCHEMA_HEADER = "schema"

Headers = list[tuple[str, str | bytes | None]]


def routing_headers(metadata: Mapping[str, Any], schema_fullname: str) -> Headers:
    """Headers for one event from its metadata record."""
    headers: Headers = [
        (name, str(metadata[name]).encode()) for name in ROUTING_FIELDS if metadata.get(name) is not None
    ]
    headers.append((SCHEMA_HEADER, schema_fullname.encode()))
    return headers


def header_map(
    headers: Iterable[tuple[str, str | bytes | None]] | dict[str, str | bytes | None] | None,
) -> dict[str, str]:
    """Kafka headers as a dict of text (the last value wins for a repeated name)."""
    pairs = headers.items() if isinstance(headers, dict) else headers or ()
    return {k: v if isinstance(v, str) else (v or b"").decode("utf-8", "replace") for k, v in pairs}
