"""The compiled writer writes fastavro's bytes, or leaves the value to fastavro."""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from fastavro.utils import generate_many

from tests.fixtures.events import transfer_confirmed, transfer_requested
from tests.unit.test_avro_read import EVERY_KIND
from topics.avro_write import NotCompiled, compile_writer
from topics.balances import BALANCE_TOPIC, BalanceState, balance_record
from topics.codec import AvroCodec


def _fastavro(schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record, strict_allow_default=True)
    return out.getvalue()


def _same_or_left(schema: Any, record: Any) -> str:
    try:
        got = compile_writer(schema)(record)
    except NotCompiled:
        return "left to fastavro"
    assert got == _fastavro(schema, record), record
    return "compiled"


def test_every_event_schema_and_every_kind_of_value_write_fastavros_bytes(store):
    outcomes = {"compiled": 0, "left to fastavro": 0}
    for schema in [EVERY_KIND, *(store.for_topic(t).definition for t in store.topics())]:
        write = compile_writer(schema)
        for record in generate_many(schema, 60):
            try:
                got = write(record)
            except NotCompiled:
                outcomes["left to fastavro"] += 1
                continue
            assert got == _fastavro(schema, record), (schema["name"], record)
            outcomes["compiled"] += 1
    assert outcomes["compiled"] > 1000  # most values take the compiled path


def test_the_events_ledgerstream_builds_take_the_compiled_path(store):
    state = BalanceState("customer:t/acc-1:EUR", "t", "acc-1", "EUR", 2, 1000, 10, 0, "cause")
    for topic, record in [
        ("payments.transfer.requested.v1", transfer_requested()),
        (BALANCE_TOPIC, balance_record(state, environment="sandbox", source="test", producer="test")),
    ]:
        schema = store.for_topic(topic)
        assert schema.write(record) == _fastavro(schema.definition, record)
    crypto = transfer_confirmed(10**18)  # a crypto amount: fastavro's, its first branch being fiat
    with pytest.raises(NotCompiled):
        store.for_topic("crypto.wallet.transfer.confirmed.v1").write(crypto)


UNION = {
    "type": "record",
    "name": "U",
    "fields": [
        {
            "name": "u",
            "type": [
                {"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]},
                {"type": "map", "values": "long"},
            ],
        },
        {"name": "n", "type": ["null", "long", "double"]},
        {"name": "d", "type": ["double", "long"]},
    ],
}


@pytest.mark.parametrize(
    "record, path",
    [
        ({"u": {"a": 1}, "n": None, "d": 1.5}, "left to fastavro"),  # a double
        ({"u": {"a": 1}, "n": 5, "d": 2}, "left to fastavro"),  # fastavro takes the later map for a record
    ],
)
def test_a_union_choice_fastavro_could_make_otherwise_is_left_to_it(record, path):
    assert _same_or_left(UNION, record) == path
    codec_bytes = _fastavro(UNION, record)
    assert codec_bytes  # fastavro writes it


def test_a_missing_field_with_a_default_and_a_wrong_type_are_left_to_fastavro():
    schema = {
        "type": "record",
        "name": "D",
        "fields": [
            {"name": "a", "type": "string"},
            {"name": "b", "type": ["null", "string"], "default": None},
        ],
    }
    write = compile_writer(schema)
    assert write({"a": "x", "b": "y"}) == _fastavro(schema, {"a": "x", "b": "y"})
    for record in (
        {"a": "x"},
        {"a": 1, "b": None},
        {"a": "x", "b": None, "c": 1},
        {"a": Decimal(1), "b": None},
    ):
        with pytest.raises(NotCompiled):
            write(record)


def test_the_codec_still_refuses_what_fastavro_refuses(store):
    codec = AvroCodec(store)
    bad = transfer_requested()
    bad["rail"] = "PIGEON"
    with pytest.raises(Exception, match="does not fit"):
        codec.encode("payments.transfer.requested.v1", bad)


def test_a_tuple_naming_its_union_branch_is_written_as_fastavro_writes_it():
    schema = {
        "type": "record",
        "name": "T",
        "namespace": "test",
        "fields": [
            {
                "name": "m",
                "type": [
                    {"type": "record", "name": "A", "fields": [{"name": "x", "type": "long"}]},
                    {"type": "record", "name": "B", "fields": [{"name": "x", "type": "long"}]},
                    "string",
                ],
            },
        ],
    }
    write = compile_writer(schema)
    for value in [("test.B", {"x": 3}), ("test.A", {"x": 3}), ("string", "s"), {"x": 4}]:
        assert write({"m": value}) == _fastavro(schema, {"m": value})
    with pytest.raises(NotCompiled):  # fastavro refuses a branch the union does not have
        write({"m": ("test.C", {"x": 3})})
    with pytest.raises(NotCompiled):  # the named branch does not take the value
        write({"m": ("test.B", "s")})
