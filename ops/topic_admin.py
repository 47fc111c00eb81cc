"""`ledgerstream topics apply | list`: the catalog against the broker.

`apply` creates missing topics and reports drift. It never deletes, shrinks or
recreates a topic: fewer partitions than the catalog would move keys between
partitions (breaking per-account order), more cannot be undone, so both are only
reported. Configuration drift is reported too, and fixed with `--fix-config`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from topics.catalog import Catalog, Profile, TopicSpec
from topics.errors import LedgerstreamError
from topics.settings import Settings


class TopicAdminError(LedgerstreamError):
    """The broker refused or could not be reached."""


@dataclass
class TopicState:
    spec: TopicSpec | None
    name: str
    broker_partitions: int | None = None
    broker_replication: int | None = None
    drift: list[str] = field(default_factory=list)
    config_drift: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.spec is None:
            return "not in catalog"
        if self.broker_partitions is None:
            return "missing"
        return "drift" if self.drift else "ok"


def _admin(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka_config(**{"socket.timeout.ms": 10000}))


def wait_for_leaders(admin: AdminClient, names: Iterable[str], timeout: float = 60.0) -> None:
    """Return once every partition of `names` answers a ListOffsets request.

    A topic that was just created shows leaders in its metadata before the broker
    has loaded the partitions; until then clients get NOT_LEADER_FOR_PARTITION.
    """
    pending = set(names)
    deadline = time.monotonic() + timeout
    while pending:
        metadata = admin.list_topics(timeout=10)
        requests = {}
        for name in pending:
            topic = metadata.topics.get(name)
            if topic is not None and topic.error is None:
                for p in topic.partitions:
                    requests[TopicPartition(name, p)] = OffsetSpec.latest()
        if requests:
            futures = admin.list_offsets(requests, request_timeout=10)
            failed = set()
            for tp, future in futures.items():
                try:
                    future.result()
                except KafkaException:
                    failed.add(tp.topic)
            seen = {tp.topic for tp in requests}
            pending -= seen - failed
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TopicAdminError(f"partitions not ready after {timeout:.0f}s: {', '.join(sorted(pending))}")
        time.sleep(0.2)


def inspect(settings: Settings, catalog: Catalog, profile: Profile) -> list[TopicState]:
    """Compare every catalog topic (and every non-internal broker topic) with the broker."""
    admin = _admin(settings)
    try:
        metadata = admin.list_topics(timeout=15)
    except KafkaException as e:
        raise TopicAdminError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {e}") from e
    states: dict[str, TopicState] = {}
    for spec in catalog.topics.values():
        state = TopicState(spec, spec.name)
        meta = metadata.topics.get(spec.name)
        if meta is not None and meta.error is None:
            state.broker_partitions = len(meta.partitions)
            state.broker_replication = min((len(p.replicas) for p in meta.partitions.values()), default=0)
            if state.broker_partitions < spec.partitions:
                state.drift.append(
                    f"partitions: broker {state.broker_partitions} < catalog {spec.partitions} "
                    "(not grown: growing moves keys between partitions)"
                )
            elif state.broker_partitions > spec.partitions:
                state.drift.append(
                    f"partitions: broker {state.broker_partitions} > catalog {spec.partitions} "
                    "(a topic is never shrunk; fix the catalog or make a new topic version)"
                )
            if state.broker_replication < profile.replication_factor:
                state.drift.append(
                    f"replication: broker {state.broker_replication} < profile {profile.replication_factor}"
                )
        states[spec.name] = state
    present = [s for s in states.values() if s.broker_partitions is not None]
    if present:
        _config_drift(admin, present, profile)
    for name in metadata.topics:
        if name not in states and not name.startswith("_"):
            states[name] = TopicState(None, name, len(metadata.topics[name].partitions))
    return sorted(states.values(), key=lambda s: s.name)


def _config_drift(admin: AdminClient, states: list[TopicState], profile: Profile) -> None:
    resources = [ConfigResource(ResourceType.TOPIC, s.name) for s in states]
    futures = admin.describe_configs(resources)
    by_name = {s.name: s for s in states}
    for resource, future in futures.items():
        state = by_name[resource.name]
        assert state.spec is not None
        try:
            actual = {k: v.value for k, v in future.result(timeout=15).items()}
        except KafkaException as e:
            state.drift.append(f"config unreadable: {e}")
            continue
        for key, wanted in state.spec.config(profile).items():
            if actual.get(key) != wanted:
                state.config_drift[key] = wanted
                state.drift.append(f"config {key}: broker {actual.get(key)} != catalog {wanted}")


def apply(
    settings: Settings, catalog: Catalog, profile: Profile, *, fix_config: bool = False
) -> tuple[list[str], list[TopicState]]:
    """Create missing topics (and, with `fix_config`, set drifted configs).

    Returns (created topic names, states still drifting afterwards).
    """
    states = inspect(settings, catalog, profile)
    admin = _admin(settings)
    missing = [s.spec for s in states if s.spec is not None and s.broker_partitions is None]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=profile.replication_factor,
                    config=spec.config(profile),
                )
                for spec in missing
                if spec is not None
            ],
            request_timeout=30,
        )
        errors = []
        for name, future in futures.items():
            try:
                future.result(timeout=60)
                created.append(name)
            except KafkaException as e:
                error = e.args[0] if e.args else None
                if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue  # created concurrently (another apply, or metadata not yet visible)
                errors.append(f"{name}: {error.str() if isinstance(error, KafkaError) else e}")
        if errors:
            raise TopicAdminError("could not create topics:\n  " + "\n  ".join(errors))
        wait_for_leaders(admin, [spec.name for spec in missing if spec is not None])
    if fix_config:
        to_fix = [s for s in states if s.config_drift]
        if to_fix:
            altered = admin.incremental_alter_configs(
                [
                    ConfigResource(
                        ResourceType.TOPIC,
                        s.name,
                        incremental_configs=[
                            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                            for k, v in s.config_drift.items()
                        ],
                    )
                    for s in to_fix
                ]
            )
            for done in altered.values():
                done.result(timeout=30)
            for s in to_fix:
                s.drift = [d for d in s.drift if not d.startswith("config ")]
    drifting = [s for s in states if s.drift]
    return sorted(created), drifting
