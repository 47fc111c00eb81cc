"""The compiled reader builds what fastavro builds, and refuses what the guard refuses."""

from __future__ import annotations

import io
import random
from typing import Any

import fastavro
import pytest
from fastavro.utils import generate_many

from topics.avro_read import compile_reader
from topics.guard import GuardViolation, compile_guard

EVERY_KIND = {
    "type": "record",
    "name": "Everything",
    "namespace": "test",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "small", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "ratio", "type": "float"},
        {"name": "precise", "type": "double"},
        {"name": "blob", "type": "bytes"},
        {"name": "text", "type": "string"},
        {"name": "nothing", "type": "null"},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN", "BLUE"]}},
        {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 4}},
        {"name": "again", "type": "Colour"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "counts", "type": {"type": "map", "values": ["null", "long"]}},
        {"name": "nested", "type": {"type": "array", "items": {"type": "map", "values": "Hash"}}},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "at_micros", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "at_millis", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 40, "scale": 18}},
        {
            "name": "fixed_amount",
            "type": {
                "type": "fixed",
                "name": "Amount",
                "size": 16,
                "logicalType": "decimal",
                "precision": 30,
                "scale": 2,
            },
        },
        {"name": "unknown_logical", "type": {"type": "string", "logicalType": "not-a-type"}},
        {
            "name": "choice",
            "type": [
                "null",
                "string",
                "Hash",
                {"type": "record", "name": "Inner", "fields": [{"name": "n", "type": "long"}]},
            ],
        },
        {
            "name": "tree",
            "type": {
                "type": "record",
                "name": "Node",
                "fields": [{"name": "label", "type": "string"}, {"name": "next", "type": ["null", "Node"]}],
            },
        },
    ],
}


def _fastavro(schema: Any, data: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(data), fastavro.parse_schema(schema), None)


def _encode(schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def _schemas(store) -> list[Any]:
    return [EVERY_KIND, *(store.for_topic(t).definition for t in store.topics())]


def test_every_kind_of_value_reads_as_fastavro_reads_it():
    read = compile_reader(EVERY_KIND)
    records = list(generate_many(EVERY_KIND, 300))
    for record in records:
        data = _encode(EVERY_KIND, record)
        assert read(data, 0) == _fastavro(EVERY_KIND, data)
    assert any(r["choice"] is not None for r in records)  # the generator reached the unions' branches


def test_every_event_schema_reads_as_fastavro_reads_it(store):
    for schema in _schemas(store)[1:]:
        read = compile_reader(schema)
        for record in generate_many(schema, 50):
            data = _encode(schema, record)
            assert read(b"xx" + data, 2) == _fastavro(schema, data), schema["name"]


def _guarded(schema: Any, guard: Any, data: bytes) -> tuple[str, Any]:
    try:
        guard(data, 0)
        return "read", _fastavro(schema, data)
    except GuardViolation:
        return "refused", None
    except Exception as e:  # what the codec reports as a decode error: bad UTF-8, a bad uuid
        return "failed", type(e).__name__


def _compiled(read: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "read", read(data, 0)
    except GuardViolation:
        return "refused", None
    except Exception as e:
        return "failed", type(e).__name__


def test_mutated_values_are_refused_or_read_exactly_as_by_the_guard_and_fastavro(store):
    """A seeded differential fuzz: flipped, cut and spliced bytes of real values, every schema."""
    rng = random.Random(20261129)
    outcomes = {"read": 0, "refused": 0, "failed": 0}
    for schema in _schemas(store):
        read, guard = compile_reader(schema), compile_guard(schema)
        for record in generate_many(schema, 40):
            body = bytearray(_encode(schema, record))
            for _ in range(rng.randrange(1, 4)):
                at = rng.randrange(len(body)) if body else 0
                op = rng.randrange(3)
                if op == 0 and body:
                    body[at] = rng.randrange(256)
                elif op == 1:
                    del body[at:]
                else:
                    body[at:at] = b"\xff" * rng.randrange(1, 12) + b"\x01"
            data = bytes(body)
            expected, got = _guarded(schema, guard, data), _compiled(read, data)
            if expected[0] == "refused" or got[0] == "refused":
                assert got[0] in ("refused", "failed") and expected[0] in ("refused", "failed"), data
            else:
                assert got == expected, data
            outcomes[got[0]] += 1
    assert outcomes["read"] > 30 and outcomes["refused"] > 300


@pytest.mark.parametrize(
    "data, why",
    [
        (b"\x02ab\x00", "trailing"),
        (b"\x0aab", "truncated"),
        (b"\x01ab", "negative length"),
        (b"", "truncated"),
    ],
)
def test_a_bad_string_value_is_refused_with_the_reason(data, why):
    read = compile_reader({"type": "record", "name": "S", "fields": [{"name": "s", "type": "string"}]})
    with pytest.raises(GuardViolation, match=why):
        read(data, 0)
