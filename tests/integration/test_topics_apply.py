"""`topics apply` against the real broker: creates what is missing, reports drift."""

from __future__ import annotations

import uuid

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from ops.topic_admin import apply, inspect, wait_for_leaders
from topics.catalog import parse_catalog


def small_catalog(suffix: str):
    return parse_catalog(
        {
            "money_partitions": 3,
            "profiles": {"dev": {"replication_factor": 1, "min_insync_replicas": 1}},
            "topic": [
                {"name": f"test.apply.t{suffix}.v1", "kind": "ingress", "retention_days": 2},
                {"name": f"test.grow.t{suffix}.v1", "kind": "ingress", "retention_days": 2},
            ],
        }
    )


def test_catalog_topics_exist_with_their_partitions(services, catalog):
    states = inspect(services, catalog, catalog.profile("dev"))
    by_name = {s.name: s for s in states}
    for spec in catalog.topics.values():
        assert by_name[spec.name].broker_partitions == spec.partitions, spec.name


def test_apply_creates_missing_then_is_idempotent_and_reports_drift(services):
    suffix = uuid.uuid4().hex[:8]
    catalog = small_catalog(suffix)
    profile = catalog.profile("dev")
    admin = AdminClient(services.kafka_config())
    grow = f"test.grow.t{suffix}.v1"
    admin.create_topics([NewTopic(grow, num_partitions=2, replication_factor=1)])[grow].result(timeout=30)
    wait_for_leaders(admin, [grow])

    created, drifting = apply(services, catalog, profile)
    assert created == [f"test.apply.t{suffix}.v1"]
    assert [s.name for s in drifting] == [grow]
    assert any("partitions: broker 2 < catalog 3" in d for d in drifting[0].drift)

    created, drifting = apply(services, catalog, profile, fix_config=True)
    assert created == []
    assert [s.name for s in drifting] == [grow]  # config fixed, partitions never touched
    assert all(not d.startswith("config") for d in drifting[0].drift)
    assert {s.name: s.broker_partitions for s in inspect(services, catalog, profile)}[grow] == 2

    name = f"test.apply.t{suffix}.v1"
    resource = ConfigResource(
        ResourceType.TOPIC,
        name,
        incremental_configs=[
            ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)
    state = {s.name: s for s in inspect(services, catalog, profile)}[name]
    assert any("retention.ms" in d for d in state.drift)
    apply(services, catalog, profile, fix_config=True)
    assert {s.name: s for s in inspect(services, catalog, profile)}[name].drift == []
