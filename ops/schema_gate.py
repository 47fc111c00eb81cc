"""The schema gate: every schema change must be backward compatible with every
released version of the same topic.

The release history is `topics/schemas.lock.json`, committed with the schemas:
`ledgerstream schemas lock` appends a topic's current schema once it passes, and
`ledgerstream schemas check` (run by CI) fails when a schema is incompatible with
any locked version, when a released topic lost its schema, or when a changed
schema was not locked. Compatibility is decided by the Apache `avro` package's
ReaderWriterCompatibilityChecker (new schema as reader, each old one as writer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from topics.schemas import LOCK_FILE, SchemaStore, read_lock, write_lock
from topics.settings import Settings

Json = Any


@dataclass(frozen=True)
class Finding:
    topic: str
    message: str


def _field_path(definition: Json, location: str) -> str:
    """Turn a checker location like /fields/3/type/fields/0 into field names."""
    names: list[str] = []
    node = definition
    parts = [p for p in location.split("/") if p]
    i = 0
    while i < len(parts):
        part = parts[i]
        try:
            if part == "fields" and i + 1 < len(parts):
                node = node["fields"][int(parts[i + 1])]
                names.append(node["name"])
                i += 2
                continue
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            break
        i += 1
    return ".".join(names) or "(the schema itself)"


def _failing_fields(reader: avro.schema.Schema, writer: avro.schema.Schema) -> list[str]:
    """Top-level fields of `reader` that cannot read `writer`'s data, for results
    the checker only locates at the root (e.g. a union that became a plain type)."""
    if not isinstance(reader, avro.schema.RecordSchema) or not isinstance(writer, avro.schema.RecordSchema):
        return []
    checker = ReaderWriterCompatibilityChecker()
    failing = []
    for field in reader.fields:
        candidates = [field.name, *(field.props.get("aliases") or [])]
        old = next((writer.fields_dict[n] for n in candidates if n in writer.fields_dict), None)
        if old is None:
            if not field.has_default:
                failing.append(field.name)
            continue
        result = checker.get_compatibility(field.type, old.type)
        if result.compatibility is not SchemaCompatibilityType.compatible:
            failing.append(field.name)
    return failing


def next_version_topic(topic: str) -> str:
    base, _, version = topic.rpartition(".v")
    return f"{base}.v{int(version) + 1}"


def compatibility_problems(topic: str, new: Json, old: Json, version: int) -> list[str]:
    """Why `new` cannot read data written with `old` (empty when it can)."""
    reader = avro.schema.parse(json.dumps(new))
    writer = avro.schema.parse(json.dumps(old))
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(sorted({i.value for i in result.incompatibilities})) or "incompatible"
    locations = [loc for loc in result.locations if loc != "/"]
    names = {_field_path(new, loc) for loc in locations} or set(_failing_fields(reader, writer))
    fields = ", ".join(sorted(names)) or "(the schema itself)"
    details = "; ".join(sorted(result.messages))
    return [
        f"{topic}: not backward compatible with released version {version}: field {fields}: "
        f"{kinds} ({details}). A breaking change belongs in a new topic: add "
        f"avro/{next_version_topic(topic)}.avsc and a catalog entry, and leave {topic} as released."
    ]


def check(store: SchemaStore, lock: Mapping[str, list[Json]]) -> list[Finding]:
    """Every problem the gate sees; an empty list means the gate passes."""
    findings: list[Finding] = []
    for topic in sorted(lock):
        if not store.has_topic(topic):
            findings.append(
                Finding(
                    topic,
                    f"{topic}: has released versions but avro/{topic}.avsc is gone; "
                    "a released topic keeps its schema (retire it with a new topic version instead)",
                )
            )
    for event in store.events():
        versions = lock.get(event.topic, [])
        problems = [
            message
            for number, old in enumerate(versions, start=1)
            for message in compatibility_problems(event.topic, event.definition, old, number)
        ]
        findings += [Finding(event.topic, m) for m in problems]
        if not problems and (not versions or versions[-1] != event.definition):
            findings.append(
                Finding(
                    event.topic,
                    f"{event.topic}: schema changed (or is new) and is not locked; "
                    "run `ledgerstream schemas lock` and commit topics/schemas.lock.json",
                )
            )
    return findings


def lock(store: SchemaStore, lock_path: Path = LOCK_FILE) -> tuple[list[str], list[Finding]]:
    """Append each compatible, changed schema to the lock; returns (locked topics, refusals)."""
    current = read_lock(lock_path)
    locked: list[str] = []
    refused: list[Finding] = []
    for event in store.events():
        versions = current.setdefault(event.topic, [])
        if versions and versions[-1] == event.definition:
            continue
        problems = [
            p
            for n, old in enumerate(versions, start=1)
            for p in compatibility_problems(event.topic, event.definition, old, n)
        ]
        if problems:
            refused += [Finding(event.topic, p) for p in problems]
            continue
        versions.append(event.definition)
        locked.append(event.topic)
    if locked:
        write_lock(current, lock_path)
    return locked, refused


def register(settings: Settings, store: SchemaStore, lock_path: Path = LOCK_FILE) -> list[tuple[str, int]]:
    """Register every released version, then the current one, under `<topic>-value`.

    Returns (subject, id of the current schema) per topic.
    """
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    if not settings.schema_registry_url:
        raise ValueError("SCHEMA_REGISTRY_URL is not set; there is no registry to register with")
    history = read_lock(lock_path)
    registered = []
    with SchemaRegistryClient(settings.registry_config()) as client:
        for event in store.events():
            for old in history.get(event.topic, []):
                if old != event.definition:
                    old_text = json.dumps(old, separators=(",", ":"))
                    client.register_schema(event.subject, Schema(old_text, "AVRO"))
            schema_id = client.register_schema(event.subject, Schema(event.text, "AVRO"))
            registered.append((event.subject, int(schema_id)))
    return registered
