"""The topic catalog (`catalog.toml`) loaded into frozen records and checked."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from topics.errors import CatalogError

CATALOG_FILE = Path(__file__).with_name("catalog.toml")
TOPIC_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){2,3}\.v[1-9][0-9]*$")
DLQ_PARTITIONS = 3
DAY_MS = 86_400_000

TopicKind = Literal["ingress", "derived", "audit", "dlq"]


@dataclass(frozen=True)
class Profile:
    """How topics are replicated in one deployment."""

    name: str
    replication_factor: int
    min_insync_replicas: int
    require_acls: bool = False
    """`topics apply` fails on a broker without an authorizer."""
    security_protocols: tuple[str, ...] = ("SASL_PLAINTEXT", "SASL_SSL", "PLAINTEXT", "SSL")
    """The client security protocols a deployment of this profile may use."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its shape on the broker and the contract of its values."""

    name: str
    kind: TopicKind
    partitions: int
    key_field: str | None
    value_schema: str
    retention_ms: int
    cleanup_policy: str
    money: bool
    dlq_of: str | None = None
    published: bool = False
    """Read by systems outside ledgerstream; inside, only the audit trail reads it."""

    def config(self, profile: Profile) -> dict[str, str]:
        """The topic-level broker configuration under `profile`."""
        return {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
            "min.insync.replicas": str(profile.min_insync_replicas),
        }

    def key_of(self, record: dict[str, Any]) -> str | None:
        """The Kafka key of a record: the value at `key_field` (dotted path)."""
        if self.key_field is None:
            return None
        value: Any = record
        for part in self.key_field.split("."):
            value = value[part]
        return str(value)


@dataclass(frozen=True)
class ConsumerSpec:
    """One consumer group (an agent or a sink) and its dead-letter topic."""

    name: str
    kind: Literal["agent", "sink"]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    outbox_outputs: tuple[str, ...] = ()
    """What it writes as outbox rows in its own transaction; the outbox relay produces them."""

    @property
    def group_id(self) -> str:
        return f"ledgerstream.{self.name}"

    @property
    def dlq(self) -> str:
        return dlq_topic(self.name)


def dlq_topic(consumer: str) -> str:
    return f"dlq.{consumer}.dead_lettered.v1"


@dataclass(frozen=True)
class ProducerSpec:
    """A component that writes topics without being a consumer group (the outbox relay)."""

    name: str
    outputs: tuple[str, ...]
    external: bool = False
    """Outside ledgerstream (an upstream system): the catalog names what it may write."""


@dataclass(frozen=True)
class ReaderSpec:
    """A read-only principal (analysts)."""

    name: str
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class Principal:
    """One Kafka identity and what the catalog lets it do.

    It reads `reads`, writes `writes`, and may use the consumer groups whose ids
    start with `group_prefix` (its own group and the ones operators derive from it).
    """

    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    group_prefix: str | None


@dataclass(frozen=True)
class Catalog:
    """Every topic and consumer, with the partition count money topics share."""

    money_partitions: int
    profiles: dict[str, Profile]
    topics: dict[str, TopicSpec]
    consumers: dict[str, ConsumerSpec]
    producers: dict[str, ProducerSpec] = field(default_factory=dict)
    readers: dict[str, ReaderSpec] = field(default_factory=dict)

    def topic(self, name: str) -> TopicSpec:
        try:
            return self.topics[name]
        except KeyError:
            raise CatalogError(f"topic {name!r} is not in the catalog") from None

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles))
            raise CatalogError(f"unknown topic profile {name!r} (known: {known})") from None

    def schema_topics(self) -> list[str]:
        return sorted(t.name for t in self.topics.values() if t.value_schema != "raw")

    def inputs_of(self, consumer: str) -> list[str]:
        """The topics a catalog consumer reads."""
        return self.expand(self.consumers[consumer].inputs)

    def expand(self, inputs: Sequence[str]) -> list[str]:
        """Topics as a consumer names them (`*`: every topic with a schema)."""
        return self.schema_topics() if "*" in inputs else list(inputs)

    def principals(self) -> list[Principal]:
        """Every Kafka identity of the catalog, with the topics it may read and write."""
        found = [
            Principal(c.name, c.inputs, (*c.outputs, c.dlq), c.group_id) for c in self.consumers.values()
        ]
        found += [Principal(p.name, (), p.outputs, None) for p in self.producers.values()]
        found += [Principal(r.name, r.inputs, (), f"ledgerstream.{r.name}") for r in self.readers.values()]
        return found

    def principal(self, name: str) -> Principal:
        for principal in self.principals():
            if principal.name == name:
                return principal
        raise CatalogError(f"{name!r} is not a principal of the catalog")


def parse_catalog(doc: dict[str, Any]) -> Catalog:
    """Build and check a catalog from its TOML document."""
    try:
        money_partitions = int(doc["money_partitions"])
        profiles = {
            name: Profile(
                name,
                int(p["replication_factor"]),
                int(p["min_insync_replicas"]),
                bool(p.get("require_acls", False)),
                tuple(p.get("security_protocols", Profile.security_protocols)),
            )
            for name, p in doc["profiles"].items()
        }
        topics: dict[str, TopicSpec] = {}
        for raw in doc.get("topic", []):
            money = bool(raw.get("money", True))
            spec = TopicSpec(
                name=raw["name"],
                kind=raw["kind"],
                partitions=int(raw.get("partitions", money_partitions)),
                key_field=raw.get("key_field", "account_id"),
                value_schema=raw.get("value_schema", raw["name"]),
                retention_ms=_retention(raw["retention_days"]),
                cleanup_policy=raw.get("cleanup_policy", "delete"),
                money=money,
                published=bool(raw.get("published", False)),
            )
            _add(topics, spec)

        def topic_list(names: list[str]) -> tuple[str, ...]:
            return every if names == ["*"] else tuple(names)

        every = tuple(sorted(t.name for t in topics.values() if t.value_schema != "raw"))
        names: set[str] = set()

        def named(name: str) -> str:
            if name in names:
                raise CatalogError(f"principal {name} is listed twice")
            names.add(name)
            return name

        consumers: dict[str, ConsumerSpec] = {}
        for raw in doc.get("consumer", []):
            consumer = ConsumerSpec(
                name=named(raw["name"]),
                kind=raw["kind"],
                inputs=topic_list(raw["inputs"]),
                outputs=tuple(raw["outputs"]),
                outbox_outputs=tuple(raw.get("outbox_outputs", ())),
            )
            consumers[consumer.name] = consumer
            _add(
                topics,
                TopicSpec(
                    name=consumer.dlq,
                    kind="dlq",
                    partitions=DLQ_PARTITIONS,
                    key_field=None,
                    value_schema="raw",
                    retention_ms=_retention(30),
                    cleanup_policy="delete",
                    money=False,
                    dlq_of=consumer.name,
                ),
            )
        producers = {
            raw["name"]: ProducerSpec(
                named(raw["name"]), tuple(raw["outputs"]), bool(raw.get("external", False))
            )
            for raw in doc.get("producer", [])
        }
        readers = {
            raw["name"]: ReaderSpec(named(raw["name"]), topic_list(raw["inputs"]))
            for raw in doc.get("reader", [])
        }
    except (KeyError, TypeError, ValueError) as e:
        raise CatalogError(f"malformed catalog: {type(e).__name__}: {e}") from e
    catalog = Catalog(money_partitions, profiles, topics, consumers, producers, readers)
    check_catalog(catalog)
    return catalog


def _retention(days: int) -> int:
    return -1 if int(days) < 0 else int(days) * DAY_MS


def _add(topics: dict[str, TopicSpec], spec: TopicSpec) -> None:
    if spec.name in topics:
        raise CatalogError(f"topic {spec.name} is listed twice")
    topics[spec.name] = spec


def check_catalog(catalog: Catalog) -> None:
    """The catalog's rules: names, keys, co-partitioning, consumers' topics exist."""
    problems = []
    for spec in catalog.topics.values():
        if not TOPIC_NAME.match(spec.name):
            problems.append(f"{spec.name}: name must be {{domain}}.{{entity}}.{{event}}.v{{N}}")
        if spec.money and (spec.key_field != "account_id" or spec.partitions != catalog.money_partitions):
            problems.append(
                f"{spec.name}: a money topic is keyed by account_id "
                f"with {catalog.money_partitions} partitions"
            )
        if spec.kind not in ("ingress", "derived", "audit", "dlq"):
            problems.append(f"{spec.name}: unknown kind {spec.kind!r}")
    for principal in catalog.principals():
        for topic in (*principal.reads, *principal.writes):
            if topic not in catalog.topics:
                problems.append(f"{principal.name}: topic {topic} is not in the catalog")
    relayed = {topic for p in catalog.producers.values() for topic in p.outputs}
    for consumer in catalog.consumers.values():
        for topic in consumer.outbox_outputs:
            if topic not in relayed:
                problems.append(f"{consumer.name}: outbox output {topic} is not a relayed topic")
    if problems:
        raise CatalogError("topic catalog is invalid:\n  " + "\n  ".join(problems))


@cache
def load_catalog(path: Path = CATALOG_FILE) -> Catalog:
    """The catalog from `catalog.toml` (read once per process)."""
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CatalogError(f"{path}: {e}") from e
    return parse_catalog(doc)
