"""Hostile bytes get the codec's own DecodeError before fastavro can hurt the process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.fixtures.events import transfer_requested
from topics.codec import AvroCodec
from topics.errors import DecodeError
from topics.schemas import SchemaStore

NULLS = {
    "type": "record",
    "name": "Nulls",
    "namespace": "test",
    "fields": [{"name": "items", "type": {"type": "array", "items": "null"}}],
}
TREE = {
    "type": "record",
    "name": "Node",
    "namespace": "test",
    "fields": [{"name": "next", "type": ["null", "Node"]}],
}
FLAT = {
    "type": "record",
    "name": "Flat",
    "namespace": "test",
    "fields": [{"name": "name", "type": "string"}, {"name": "maybe", "type": ["null", "long"]}],
}


def zz(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory) -> SchemaStore:
    folder = tmp_path_factory.mktemp("avro")
    for topic, schema in [
        ("test.hostile.nulls.v1", NULLS),
        ("test.hostile.tree.v1", TREE),
        ("test.hostile.flat.v1", FLAT),
    ]:
        (folder / f"{topic}.avsc").write_text(json.dumps(schema))
    return SchemaStore(folder)


@pytest.fixture(scope="module")
def codec(hostile_store) -> AvroCodec:
    return AvroCodec(hostile_store)


def framed(store: SchemaStore, topic: str, body: bytes) -> bytes:
    return b"\xc3\x01" + store.for_topic(topic).fingerprint + body


def rejects(codec: AvroCodec, data: bytes, match: str) -> DecodeError:
    with pytest.raises(DecodeError, match=match) as caught:
        codec.decode(data, topic="t.x.y.v1", partition=3, offset=42)
    err = caught.value
    assert err.raw == data
    assert (err.topic, err.partition, err.offset) == ("t.x.y.v1", 3, 42)
    assert err.origin == "t.x.y.v1[3]@42"
    return err


ARRAY_2_40 = zz(2**40)
DEEP = b"\x02" * 200_000 + b"\x00"


def test_an_array_claiming_2_pow_40_items_is_refused(codec, hostile_store):
    rejects(codec, framed(hostile_store, "test.hostile.nulls.v1", ARRAY_2_40), "zero-size items")


def test_an_array_of_2_pow_40_longs_is_refused_by_size(tmp_path):
    (tmp_path / "test.hostile.longs.v1.avsc").write_text(
        json.dumps(
            {
                "type": "record",
                "name": "L",
                "fields": [{"name": "xs", "type": {"type": "array", "items": "long"}}],
            }
        )
    )
    store = SchemaStore(tmp_path)
    rejects(AvroCodec(store), framed(store, "test.hostile.longs.v1", zz(2**40) + zz(1)), "cannot fit")


def test_very_deep_recursion_is_refused(codec, hostile_store):
    rejects(codec, framed(hostile_store, "test.hostile.tree.v1", DEEP), "nested deeper")


def test_moderate_recursion_still_decodes(codec, hostile_store):
    record = codec.decode(framed(hostile_store, "test.hostile.tree.v1", b"\x02" * 5 + b"\x00"))
    depth = 0
    while record["next"] is not None:
        record, depth = record["next"], depth + 1
    assert depth == 5


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (ARRAY_2_40, "nulls"),
        (DEEP, "tree"),
    ],
)
def test_the_hazards_are_real_for_unguarded_fastavro(payload, why, tmp_path):
    """Without the guard, fastavro exhausts memory or crashes on these exact payloads."""
    schema = NULLS if why == "nulls" else TREE
    script = textwrap.dedent(
        """
        import io, json, resource, sys, fastavro
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        schema = fastavro.parse_schema(json.loads(sys.argv[1]))
        data = open(sys.argv[2], "rb").read()
        fastavro.schemaless_reader(io.BytesIO(data), schema, None)
        """
    )
    payload_file = Path(tmp_path) / "payload"
    payload_file.write_bytes(payload)
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(schema), str(payload_file)],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert done.returncode < 0 or b"MemoryError" in done.stderr or b"RecursionError" in done.stderr


def test_truncated_data_is_refused(store):
    codec = AvroCodec(store)
    data = codec.encode("payments.transfer.requested.v1", transfer_requested())
    rejects(codec, data[:-5], "truncated|exceeds")


def test_a_wrong_magic_byte_is_refused(codec):
    rejects(codec, b"\x07\x01" + b"\x00" * 12, "unknown framing")


def test_empty_bytes_are_refused(codec):
    rejects(codec, b"", "unknown framing")


def test_an_unknown_fingerprint_is_refused(codec):
    rejects(codec, b"\xc3\x01" + b"\xde\xad\xbe\xef" * 2 + zz(0), "unknown schema fingerprint")


def test_an_unknown_schema_id_is_refused_without_a_registry(codec):
    rejects(codec, b"\x00" + (987654).to_bytes(4, "big") + zz(0), "schema id 987654")


@pytest.mark.parametrize("index", [2, 7, -1, -3, 2**31])
def test_an_out_of_range_union_index_is_refused(codec, hostile_store, index):
    body = zz(3) + b"abc" + zz(index) + zz(1)
    rejects(codec, framed(hostile_store, "test.hostile.flat.v1", body), "union index|varint")


def test_invalid_utf8_is_refused(codec, hostile_store):
    body = zz(2) + b"\xff\xfe" + zz(0)
    rejects(codec, framed(hostile_store, "test.hostile.flat.v1", body), "UnicodeDecodeError")


def test_trailing_bytes_are_refused(codec, hostile_store):
    body = zz(3) + b"abc" + zz(0) + b"junk"
    rejects(codec, framed(hostile_store, "test.hostile.flat.v1", body), "trailing bytes")


def test_a_string_longer_than_the_message_is_refused(codec, hostile_store):
    body = zz(2**40) + b"abc" + zz(0)
    rejects(codec, framed(hostile_store, "test.hostile.flat.v1", body), "exceeds")


def test_a_valid_flat_record_decodes(codec, hostile_store):
    body = zz(3) + b"abc" + zz(1) + zz(-42)
    assert codec.decode(framed(hostile_store, "test.hostile.flat.v1", body)) == {"name": "abc", "maybe": -42}
