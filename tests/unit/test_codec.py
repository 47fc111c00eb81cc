from __future__ import annotations

import json
import struct
from decimal import Decimal

import pytest

from tests.fixtures.events import transfer_confirmed, transfer_requested
from topics.codec import SINGLE_OBJECT_MAGIC, AvroCodec
from topics.errors import EncodeError
from topics.schemas import fingerprint64

WEI_TOPIC = "crypto.wallet.transfer.confirmed.v1"
TRANSFER = "payments.transfer.requested.v1"


@pytest.fixture
def codec(store):
    return AvroCodec(store)


def test_crc64_avro_fingerprint_matches_the_spec_vector():
    # Avro's schema-tests.txt: the fingerprint of "int" is 8247732601305521295,
    # written little-endian in single-object encoding.
    assert fingerprint64("int") == struct.pack("<q", 8247732601305521295)


def test_single_object_framing_is_magic_plus_fingerprint(codec, store):
    data = codec.encode(TRANSFER, transfer_requested())
    assert data[:2] == SINGLE_OBJECT_MAGIC
    assert data[2:10] == store.for_topic(TRANSFER).fingerprint


def test_round_trip_keeps_fiat_minor_units_exact(codec):
    record = transfer_requested(units=-987_654_321_012)
    decoded = codec.decode(codec.encode(TRANSFER, record), topic=TRANSFER)
    assert decoded["amount"] == {"units": -987_654_321_012, "currency": "EUR", "exponent": 2}
    assert decoded["transfer_id"] == record["transfer_id"]


@pytest.mark.parametrize("wei", [0, 1, 10**18, 2**64 + 1, 10**30, 2**256 - 1, -(2**255)])
def test_wei_beyond_64_bits_round_trips_exactly(codec, wei):
    decoded = codec.decode(codec.encode(WEI_TOPIC, transfer_confirmed(wei)), topic=WEI_TOPIC)
    units = decoded["transfer"]["amount"]["units"]
    assert isinstance(units, Decimal)
    assert units == wei
    assert int(units) == wei


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (12.5, r"amount\.units"),
        (12.0, r"amount\.units"),
        (True, r"amount\.units"),
        (Decimal("12"), "does not fit"),
    ],
)
def test_a_non_integer_minor_unit_amount_is_refused(codec, bad, match):
    record = transfer_requested()
    record["amount"] = {"units": bad, "currency": "EUR", "exponent": 2}
    with pytest.raises(EncodeError, match=match):
        codec.encode(TRANSFER, record)


@pytest.mark.parametrize("bad", [1.5e18, 10**18, Decimal("NaN")])
def test_a_crypto_amount_must_be_a_finite_decimal(codec, bad):
    record = transfer_confirmed(1)
    record["transfer"]["amount"]["units"] = bad
    with pytest.raises(EncodeError, match=r"transfer\.amount\.units"):
        codec.encode(WEI_TOPIC, record)


def test_fractional_wei_is_refused(codec):
    record = transfer_confirmed(1)
    record["transfer"]["amount"]["units"] = Decimal("1.5")
    with pytest.raises(EncodeError):
        codec.encode(WEI_TOPIC, record)


def test_an_unknown_field_is_refused(codec):
    with pytest.raises(EncodeError):
        codec.encode(TRANSFER, {**transfer_requested(), "amount_usd": 3})


def test_no_float_or_double_anywhere_in_the_schemas(store):
    def walk(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for n in node:
                yield from walk(n)
        elif isinstance(node, dict):
            for key in ("type", "items", "values"):
                if key in node:
                    yield from walk(node[key])
            for f in node.get("fields", []):
                yield from walk(f["type"])

    for event in store.events():
        types = set(walk(event.definition))
        assert not types & {"float", "double"}, event.topic


def test_schemas_are_parsed_once_and_cached(store):
    schema = store.for_topic(TRANSFER)
    assert schema.parsed is schema.parsed
    assert json.loads(schema.text) == schema.definition
