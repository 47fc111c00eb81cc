"""Avro events through the real broker, in both framings, keyed by account."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from ops.dev.roundtrip import TOPIC, round_trip, watermarks
from tests.fixtures.events import transfer_requested
from topics.codec import AvroCodec, codec_from_settings
from topics.errors import DecodeError
from topics.producer import EventProducer
from topics.schemas import load_store
from topics.settings import REPO_ROOT


@pytest.fixture(scope="module")
def single_object_codec() -> AvroCodec:
    return AvroCodec(load_store(REPO_ROOT / "avro"))


@pytest.fixture(scope="module")
def registry_codec(services) -> Iterator[AvroCodec]:
    if not services.schema_registry_url:
        pytest.skip("no schema registry in this environment (containers run without one)")
    codec = codec_from_settings(services, auto_register=True)
    yield codec
    codec.close()


def ends_of(services, topic: str, partitions: int) -> list[int]:
    consumer = Consumer(services.kafka_config(**{"group.id": f"ends-{uuid.uuid4()}"}))
    try:
        return [tp.offset for tp in watermarks(consumer, topic, partitions)]
    finally:
        consumer.close()


def test_single_object_round_trip_keeps_per_account_order(services, single_object_codec, catalog):
    partitions = catalog.topic(TOPIC).partitions
    before = ends_of(services, TOPIC, partitions)
    report = round_trip(services, single_object_codec, catalog, accounts=6, per_account=30)
    # a scratch topic of its own, deleted after: the real topic keeps one framing, and no new requests
    assert (
        report.topic != TOPIC
        and report.topic not in AdminClient(services.kafka_config()).list_topics(timeout=10).topics
    )
    assert ends_of(services, TOPIC, partitions) == before
    assert report.produced == report.consumed == 180
    assert report.accounts == 6
    assert report.out_of_order == []
    assert report.mismatched == []


def test_confluent_round_trip_keeps_per_account_order(services, registry_codec, catalog):
    report = round_trip(services, registry_codec, catalog, accounts=6, per_account=30)
    assert report.framing == "confluent"
    assert report.produced == report.consumed == 180
    assert report.out_of_order == []
    assert report.mismatched == []


def test_readers_accept_both_framings_and_keys_route_by_account(
    services, single_object_codec, registry_codec, catalog
):
    consumer = Consumer(
        services.kafka_config(**{"group.id": "test-both-framings", "enable.auto.commit": False})
    )
    start = watermarks(consumer, TOPIC, catalog.topic(TOPIC).partitions)
    soe = transfer_requested(account="acc-framing", units=101)
    cfl = transfer_requested(account="acc-framing", units=202)
    for codec, record in ((single_object_codec, soe), (registry_codec, cfl)):
        producer = EventProducer(services, codec, catalog)
        producer.produce(TOPIC, record)
        producer.flush()
    consumer.assign(start)
    got = []
    try:
        while len(got) < 2:
            msgs = consumer.consume(100, timeout=10)
            assert msgs, "events did not arrive within 10s"
            got += [m for m in msgs if m.key() == b"acc-framing"]
    finally:
        consumer.close()
    first, second = got
    assert first.value()[:2] == b"\xc3\x01"
    assert second.value()[0] == 0
    assert first.partition() == second.partition()
    assert registry_codec.decode(first.value(), topic=TOPIC)["amount"]["units"] == 101
    assert registry_codec.decode(second.value(), topic=TOPIC)["amount"]["units"] == 202
    assert single_object_codec.decode(first.value(), topic=TOPIC)["amount"]["units"] == 101
    with pytest.raises(DecodeError, match="no schema registry is configured"):
        single_object_codec.decode(second.value(), topic=TOPIC)
    assert dict(first.headers())["correlation_id"] == soe["metadata"]["correlation_id"].encode()


def test_a_confluent_value_may_only_name_a_schema_of_its_own_topic(services, registry_codec, store):
    """Regression (issue 12): any schema id in the registry was accepted, if it resolved."""
    import io
    import json
    import uuid

    import fastavro
    from confluent_kafka.schema_registry import Schema

    from tests.fixtures.events import transfer_requested
    from topics.errors import DecodeError

    current = store.for_topic(TOPIC)
    rogue = json.loads(json.dumps(current.definition))
    rogue["fields"].append({"name": "bonus", "type": "long", "default": 0})  # resolves to the reader
    rogue_id = registry_codec.registry.register_schema(
        f"rogue-{uuid.uuid4().hex[:8]}-value", Schema(json.dumps(rogue), "AVRO")
    )
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(rogue), {**transfer_requested(), "bonus": 10**6})
    forged = b"\x00" + rogue_id.to_bytes(4, "big") + body.getvalue()
    with pytest.raises(DecodeError, match=f"schema id {rogue_id} is neither a released version of {TOPIC}"):
        registry_codec.decode(forged, topic=TOPIC)
    # the topic's own registered schema still decodes
    genuine = registry_codec.encode(TOPIC, transfer_requested(units=5))
    assert registry_codec.decode(genuine, topic=TOPIC)["amount"]["units"] == 5
