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
    rejects(codec, framed(hostile_store, "test.hostile.flat.v1", body), "exceeds|truncated")


def test_a_valid_flat_record_decodes(codec, hostile_store):
    body = zz(3) + b"abc" + zz(1) + zz(-42)
    assert codec.decode(framed(hostile_store, "test.hostile.flat.v1", body)) == {"name": "abc", "maybe": -42}


def nested_arrays(depth: int, leaf: object = "null") -> dict:
    node: object = leaf
    for _ in range(depth):
        node = {"type": "array", "items": node}
    return {"type": "record", "name": "Nested", "namespace": "test", "fields": [{"name": "xs", "type": node}]}


def store_of(tmp_path: Path, schema: dict, topic: str = "test.hostile.nested.v1") -> SchemaStore:
    (tmp_path / f"{topic}.avsc").write_text(json.dumps(schema))
    return SchemaStore(tmp_path)


def test_nested_collections_share_one_zero_size_budget_per_message(tmp_path):
    """Regression (issue 12): 6 kB of array<array<null>> decoded to 8 million items; the cap was per array."""
    store = store_of(tmp_path, nested_arrays(2))
    inner = zz(4000) + zz(0)  # one inner array of 4,000 nulls: under the old per-array cap
    body = zz(2000) + inner * 2000 + zz(0)
    err = rejects(AvroCodec(store), framed(store, "test.hostile.nested.v1", body), "in one message exceed")
    assert len(err.raw) < 12_000


def test_a_writer_schema_too_deep_to_guard_is_a_decode_error_not_a_crash(tmp_path):
    """Regression (issue 12): ten nested arrays made the guard's compile step raise SyntaxError."""
    store = store_of(tmp_path, nested_arrays(60))
    rejects(
        AvroCodec(store),
        framed(store, "test.hostile.nested.v1", zz(0)),
        "can be built for this writer schema",
    )


@pytest.mark.parametrize(
    ("field", "value", "fits"),
    [
        ("int", 2**31 - 1, True),
        ("int", -(2**31), True),
        ("int", 2**31, False),
        ("int", 2**33, False),
        ("long", 2**63 - 1, True),
        ("long", 2**63, False),
    ],
)
def test_ints_are_bounded_to_32_bits_and_longs_to_64(tmp_path, field, value, fits):
    schema = {"type": "record", "name": "N", "namespace": "test", "fields": [{"name": "n", "type": field}]}
    store = store_of(tmp_path, schema)
    data = framed(store, "test.hostile.nested.v1", zz(value) if value < 2**63 else _raw_zz(value))
    if fits:
        assert AvroCodec(store).decode(data) == {"n": value}
    else:
        rejects(AvroCodec(store), data, f"does not fit an Avro {field}|varint longer")


def _raw_zz(n: int) -> bytes:
    """Zigzag varint of a value beyond 64 bits (what a hostile writer can put on the wire)."""
    n <<= 1
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


FUZZ = """
import random, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from tests.fixtures.events import transfer_requested
from topics.codec import AvroCodec
from topics.errors import DecodeError
from topics.schemas import load_store
from topics.settings import REPO_ROOT

store = load_store(REPO_ROOT / "avro")
codec = AvroCodec(store)
rng = random.Random(int(sys.argv[1]))
seed_value = codec.encode("payments.transfer.requested.v1", transfer_requested())
schemas = [store.for_topic(t) for t in store.topics()]
decoded = refused = 0
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    schema = rng.choice(schemas)
    head = b"\\xc3\\x01" + schema.fingerprint
    kind = rng.randrange(3)
    if kind == 0:  # random bytes
        body = rng.randbytes(rng.randrange(0, 200))
    elif kind == 1:  # a real event's body under another schema
        body = seed_value[10:]
    else:  # a real event, mutated: flipped bytes, cut, or huge varints spliced in
        body = bytearray(seed_value[10:])
        for _ in range(rng.randrange(1, 6)):
            op = rng.randrange(3)
            at = rng.randrange(len(body)) if body else 0
            if op == 0 and body:
                body[at] = rng.randrange(256)
            elif op == 1:
                del body[at:]
            else:
                body[at:at] = b"\\xff" * rng.randrange(1, 12) + b"\\x01"
        body = bytes(body)
        head = seed_value[:10] if rng.random() < 0.5 else head
    try:
        record = codec.decode(head + body, topic=schema.topic)
        assert isinstance(record, dict)
        decoded += 1
    except DecodeError as e:
        assert e.raw == head + body
        refused += 1
print(decoded, refused)
"""


def test_a_seeded_fuzz_of_random_and_mutated_payloads_against_every_schema_only_decodes_or_refuses():
    """No crash, no exception but DecodeError, memory under 2 GiB: every bad value would be dead-lettered."""
    done = subprocess.run(
        [sys.executable, "-c", FUZZ, "20261129", "4"],
        capture_output=True,
        timeout=120,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    decoded, refused = map(int, done.stdout.split())
    assert refused > 1000 and decoded >= 0  # it ran, and hostile input was refused
