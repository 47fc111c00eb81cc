"""The schemas in `avro/`: loaded once, shared types inlined, parsed and fingerprinted.

File layout: one `<topic>.avsc` per event (e.g. `payments.transfer.requested.v1.avsc`)
and one `<fullname>.avsc` per shared named type (e.g. `ledgerstream.common.FiatMoney.avsc`).
An event schema names shared types by their full name; loading inlines each
shared type at its first use, so every event schema is self-contained: that is the
form registered in the schema registry and checked for compatibility.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from topics.avro_read import compile_reader
from topics.avro_write import compile_writer
from topics.errors import SchemaError
from topics.guard import compile_guard
from topics.money import compile_money_check

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
TOPIC_FILE = re.compile(r"^(?P<topic>[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+\.v[1-9][0-9]*)\.avsc$")

Json = Any


def expand(node: Json, shared: Mapping[str, Json], defined: set[str], namespace: str = "") -> Json:
    """Inline every shared named type at its first use; later uses stay references."""
    if isinstance(node, str):
        if node in PRIMITIVES:
            return node
        full = node if "." in node else (f"{namespace}.{node}" if namespace else node)
        if full in defined:
            return full
        if full not in shared:
            raise SchemaError(f"unknown type {node!r} (no avro/{full}.avsc)")
        return expand(copy.deepcopy(shared[full]), shared, defined, namespace)
    if isinstance(node, list):
        return [expand(branch, shared, defined, namespace) for branch in node]
    if not isinstance(node, dict):
        raise SchemaError(f"not a schema: {node!r}")
    kind = node.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        name = node["name"]
        own_ns = name.rpartition(".")[0] if "." in name else node.get("namespace", namespace)
        full = name if "." in name else (f"{own_ns}.{name}" if own_ns else name)
        if full in defined:
            raise SchemaError(f"type {full} is defined twice")
        defined.add(full)
        if kind in ("record", "error"):
            fields = [{**f, "type": expand(f["type"], shared, defined, own_ns)} for f in node["fields"]]
            return {**node, "fields": fields}
        return dict(node)
    if kind == "array":
        return {**node, "items": expand(node["items"], shared, defined, namespace)}
    if kind == "map":
        return {**node, "values": expand(node["values"], shared, defined, namespace)}
    if kind in PRIMITIVES:
        return dict(node)
    return {**node, "type": expand(kind, shared, defined, namespace)}


def fingerprint64(parsed: Json) -> bytes:
    """CRC-64-AVRO of the Parsing Canonical Form, in the little-endian byte order
    that Avro single-object encoding writes."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def schema_text(definition: Json) -> str:
    """The compact JSON text registered in a schema registry."""
    return json.dumps(definition, separators=(",", ":"))


@dataclass(frozen=True)
class WriterSchema:
    """One concrete schema version: parsed, fingerprinted, with its byte guard."""

    definition: Json
    topic: str | None = None

    @cached_property
    def parsed(self) -> Json:
        return fastavro.parse_schema(copy.deepcopy(self.definition))

    @cached_property
    def fullname(self) -> str:
        d = self.definition
        if isinstance(d, dict) and "name" in d:
            name = d["name"]
            return name if "." in name or not d.get("namespace") else f"{d['namespace']}.{name}"
        return str(d)

    @cached_property
    def text(self) -> str:
        return schema_text(self.definition)

    @cached_property
    def fingerprint(self) -> bytes:
        return fingerprint64(self.parsed)

    @cached_property
    def guard(self) -> Callable[[bytes, int], None]:
        return compile_guard(self.definition)

    @cached_property
    def read(self) -> Callable[[bytes, int], Any]:
        """The compiled reader of values written with this schema (no resolution)."""
        return compile_reader(self.definition)

    @cached_property
    def write(self) -> Callable[[Any], bytes]:
        """The compiled writer (raises NotCompiled for a value it leaves to fastavro)."""
        return compile_writer(self.definition)

    @cached_property
    def money_check(self) -> Callable[[Any], None]:
        return compile_money_check(self.definition)


@dataclass(frozen=True)
class EventSchema(WriterSchema):
    """The current schema of one topic's values."""

    topic: str = ""
    path: Path = field(default_factory=Path)

    @property
    def subject(self) -> str:
        """The registry subject (TopicNameStrategy)."""
        return f"{self.topic}-value"


class SchemaStore:
    """All event schemas of `avro/`, plus released versions for reading old data."""

    def __init__(self, avro_dir: Path, history: Mapping[str, Iterable[Json]] | None = None) -> None:
        if not avro_dir.is_dir():
            raise SchemaError(f"schema folder {avro_dir} does not exist")
        self.avro_dir = avro_dir
        self.shared: dict[str, Json] = {}
        raw_events: dict[str, tuple[Path, Json]] = {}
        for path in sorted(avro_dir.glob("*.avsc")):
            doc = _read_json(path)
            match = TOPIC_FILE.match(path.name)
            if match:
                raw_events[match["topic"]] = (path, doc)
                continue
            full = path.name.removesuffix(".avsc")
            if not isinstance(doc, dict) or _fullname(doc) != full:
                raise SchemaError(f"{path.name}: a shared type's file must be named <fullname>.avsc")
            self.shared[full] = doc
        self._events: dict[str, EventSchema] = {}
        for topic, (path, doc) in raw_events.items():
            definition = expand(doc, self.shared, set())
            event = EventSchema(definition=definition, topic=topic, path=path)
            _parse_or_raise(event, path.name)
            self._events[topic] = event
        self._by_fingerprint: dict[bytes, WriterSchema] = {e.fingerprint: e for e in self._events.values()}
        for topic, versions in (history or {}).items():
            for definition in versions:
                old = WriterSchema(definition=definition, topic=topic)
                self._by_fingerprint.setdefault(old.fingerprint, old)

    def topics(self) -> list[str]:
        """Topics that have a value schema, sorted."""
        return sorted(self._events)

    def events(self) -> list[EventSchema]:
        return [self._events[t] for t in self.topics()]

    def for_topic(self, topic: str) -> EventSchema:
        try:
            return self._events[topic]
        except KeyError:
            raise SchemaError(f"no schema for topic {topic!r} in {self.avro_dir}") from None

    def has_topic(self, topic: str) -> bool:
        return topic in self._events

    def by_fingerprint(self, fp: bytes) -> WriterSchema | None:
        return self._by_fingerprint.get(fp)


def _fullname(doc: Json) -> str:
    name = doc.get("name", "")
    ns = doc.get("namespace")
    return name if "." in name or not ns else f"{ns}.{name}"


def _read_json(path: Path) -> Json:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SchemaError(f"{path.name}: {e}") from e


def _parse_or_raise(schema: WriterSchema, label: str) -> None:
    try:
        _ = schema.parsed
    except Exception as e:  # fastavro raises several types for a bad schema
        raise SchemaError(f"{label}: {e}") from e


LOCK_FILE = Path(__file__).with_name("schemas.lock.json")


def read_lock(path: Path = LOCK_FILE) -> dict[str, list[Json]]:
    """Released schema versions per topic, oldest first (empty if no lock yet)."""
    if not path.exists():
        return {}
    doc = _read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("topics"), dict):
        raise SchemaError(f"{path.name}: expected {{'topics': {{topic: [schema, ...]}}}}")
    return {topic: list(versions) for topic, versions in doc["topics"].items()}


def write_lock(lock: Mapping[str, list[Json]], path: Path = LOCK_FILE) -> None:
    doc = {
        "about": "Released value schemas per topic, oldest first. Written by `ledgerstream schemas lock`; "
        "every new version must be backward compatible with all of them.",
        "topics": {topic: lock[topic] for topic in sorted(lock)},
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")


def load_store(avro_dir: Path, lock_path: Path = LOCK_FILE) -> SchemaStore:
    """The schemas of `avro_dir`, able to read every released version too."""
    return SchemaStore(avro_dir, history=read_lock(lock_path))
