"""The catalog is the single source: the code's agents and sinks are its consumers, and every
topic it lists is written by someone and read by someone (or is named as external)."""

from __future__ import annotations

from sinks.registry import SINKS
from streams.registry import AGENTS
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.schemas import load_store
from topics.settings import REPO_ROOT, Settings


def test_every_agent_is_a_catalog_consumer_with_the_same_inputs_and_outputs(catalog: Catalog) -> None:
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    for key, make in AGENTS.items():
        handler = make(Settings(), codec)
        consumer = catalog.consumers.get(handler.name)
        assert consumer is not None and consumer.kind == "agent", (
            f"agent {key} ({handler.name}) is not in the catalog"
        )
        assert set(handler.topics) == set(consumer.inputs), handler.name
        assert set(handler.outputs) == set(consumer.outputs), handler.name
        assert set(handler.outbox_outputs) == set(consumer.outbox_outputs), handler.name
        handler.close()


def test_every_sink_is_a_catalog_consumer_with_the_same_inputs_and_outbox_outputs(catalog: Catalog) -> None:
    for key, make in SINKS.items():
        sink = make()
        consumer = catalog.consumers.get(sink.name)
        assert consumer is not None and consumer.kind == "sink", (
            f"sink {key} ({sink.name}) is not in the catalog"
        )
        assert set(sink.topics) == set(consumer.inputs), sink.name
        assert consumer.outputs == () and set(sink.outbox_outputs) == set(consumer.outbox_outputs), sink.name


def test_every_catalog_consumer_runs_in_the_code(catalog: Catalog) -> None:
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    running = {make(Settings(), codec).name for make in AGENTS.values()} | {
        make().name for make in SINKS.values()
    }
    assert set(catalog.consumers) == running


def test_every_topic_has_a_writer_and_a_reader_or_is_published(catalog: Catalog) -> None:
    written = {t for p in catalog.principals() for t in p.writes}
    written |= {t for c in catalog.consumers.values() for t in c.outbox_outputs}
    # the audit trail reads every topic: a topic only it reads is read by nobody who acts on it,
    # but for the audit topic itself
    read = {
        t
        for c in catalog.consumers.values()
        for t in c.inputs
        if c.name != "audit_sink" or catalog.topics[t].kind == "audit"
    }
    unwritten = sorted(t for t in catalog.topics if t not in written)
    unread = sorted(
        t for t, spec in catalog.topics.items() if t not in read and spec.kind != "dlq" and not spec.published
    )
    read_yet_published = sorted(t for t, spec in catalog.topics.items() if spec.published and t in read)
    assert unwritten == [], "topics nothing may produce"
    assert unread == [], "topics nothing here reads and that are not marked published"
    assert read_yet_published == [], "marked published, but a consumer here reads them: drop the mark"


def test_topic_names_come_from_the_catalog_and_nowhere_else(catalog: Catalog) -> None:
    import re

    from topics import names

    declared = {value for key, value in vars(names).items() if key.endswith("_V1")}
    assert declared == set(names.ALL) == {t for t, spec in catalog.topics.items() if spec.dlq_of is None}
    spelled = []
    for package in ("topics", "streams", "sinks", "connectors", "ops"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if path == REPO_ROOT / "topics" / "names.py":
                continue
            for topic in re.findall(r"[\"']([a-z]+(?:\.[a-z_]+)+\.v\d+)[\"']", path.read_text()):
                if topic in declared:
                    spelled.append(f"{path.relative_to(REPO_ROOT)}: {topic}")
    assert spelled == [], "use topics.names instead"
