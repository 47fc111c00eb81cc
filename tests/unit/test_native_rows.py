"""The native row writer (`ledgerstream_native`, built by `make install`) writes the row the Python
path writes, or declines and leaves the event to it: never a different row, never a row the
Python path would refuse."""

from __future__ import annotations

import random
import secrets
import struct
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from sinks.rows import native_available
from sinks.transfers import PLAN, TOPIC
from tests.fixtures.events import transfer_requested
from topics.codec import AvroCodec
from topics.errors import DecodeError
from topics.events import Event
from topics.fields import TRANSFER_REQUESTS_BENEFICIARY, open_field
from topics.schemas import load_store
from topics.settings import REPO_ROOT

pytestmark = pytest.mark.unit

KEY = secrets.token_bytes(32)
SEALED_AT = PLAN.names.index("beneficiary_sealed")
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(load_store(REPO_ROOT / "avro"))


@pytest.fixture(scope="module")
def writer(codec: AvroCodec) -> Any:
    made = PLAN.native(codec.store.for_topic(TOPIC).definition, "sandbox", KEY)
    assert made is not None
    return made


def _accept(codec: AvroCodec, writer: Any, value: bytes) -> None:
    _, schema = codec.decode_with_schema(value, topic=TOPIC)
    header = codec.current_header(value, TOPIC, schema)
    assert header is not None
    writer.accept(header)


def _numeric(body: bytes) -> int:
    ndigits, weight, sign, dscale = struct.unpack_from(">hhHH", body)
    assert dscale == 0 and sign in (0, 0x4000)
    digits = struct.unpack_from(f">{ndigits}H", body, 8)
    value = 0
    for d in digits:
        value = value * 10_000 + d
    value *= 10_000 ** (weight + 1 - ndigits)
    return -value if sign else value


def _decode(pg: str, body: bytes) -> Any:
    if pg == "text":
        return body.decode()
    if pg == "uuid":
        return uuid.UUID(bytes=body)
    if pg == "numeric":
        return _numeric(body)
    if pg in ("smallint", "integer", "bigint"):
        assert len(body) == {"smallint": 2, "integer": 4, "bigint": 8}[pg]
        return int.from_bytes(body, "big", signed=True)
    if pg == "timestamp with time zone":
        return PG_EPOCH + timedelta(microseconds=int.from_bytes(body, "big", signed=True))
    assert pg == "bytea"
    return body


def _fields(line: bytes) -> list[Any]:
    """The values of one binary COPY tuple, by the plan's column types."""
    (count,) = struct.unpack_from(">h", line)
    assert count == len(PLAN.columns)
    at, out = 2, []
    for column in PLAN.columns:
        (size,) = struct.unpack_from(">i", line, at)
        at += 4
        if size == -1:
            out.append(None)
            continue
        out.append(_decode(column.pg, line[at : at + size]))
        at += size
    assert at == len(line)
    return out


def _same(native: list[Any], row: tuple[Any, ...]) -> None:
    assert len(native) == len(row)
    for at, (got, value) in enumerate(zip(native, row, strict=True)):
        name = PLAN.names[at]
        if at == SEALED_AT and value is not None:
            opened = open_field(KEY, got, TRANSFER_REQUESTS_BENEFICIARY)
            assert opened == open_field(KEY, value, TRANSFER_REQUESTS_BENEFICIARY), name
        else:
            assert got == value and type(got) is type(value), name


def _python_row(codec: AvroCodec, value: bytes, partition: int, offset: int) -> tuple[Any, ...]:
    record = codec.decode(value, topic=TOPIC)
    return PLAN.row(Event(record, TOPIC, partition, offset, None, value), KEY)


def _odd_text(rng: random.Random) -> str:
    alphabet = "ab\\\t\n\r ü€𝄞'\",;{}|\x01\x7f"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def _random_record(rng: random.Random) -> dict[str, Any]:
    record = transfer_requested(
        _odd_text(rng) or "acc",
        rng.choice([0, 1, -1, 10_000, -100_000_000, 2**63 - 1, -(2**63), rng.randint(-(10**12), 10**12)]),
        beneficiary_reference=rng.choice([None, "GB33BUKB20201555555555", _odd_text(rng)]),
    )
    record["metadata"]["tenant_id"] = _odd_text(rng)
    record["metadata"]["idempotency_key"] = rng.choice([None, _odd_text(rng)])
    record["metadata"]["occurred_at"] = rng.choice(
        [0, -1, 1, 253_402_300_799_999_999, -62_135_596_800_000_000, rng.randint(0, 2_000_000_000_000_000)]
    )
    record["destination_account_id"] = rng.choice([None, _odd_text(rng)])
    record["reference"] = rng.choice([None, _odd_text(rng)])
    record["rail"] = rng.choice(["BOOK", "SEPA", "CARD"])
    record["amount"]["currency"] = rng.choice(["EUR", "JPY", "KWD"])
    record["amount"]["exponent"] = {"EUR": 2, "JPY": 0, "KWD": 3}[record["amount"]["currency"]]
    return record


def test_the_module_is_built() -> None:
    assert native_available(), "ledgerstream_native is not installed: `make install` builds it (needs cargo)"


def test_it_writes_the_python_row_of_varied_events(codec: AvroCodec, writer: Any) -> None:
    rng = random.Random(20261130)
    for n in range(500):
        value = codec.encode(TOPIC, _random_record(rng))
        _accept(codec, writer, value)
        line = writer.row(value, TOPIC, n % 12, n)
        assert line is not None
        _same(_fields(line), _python_row(codec, value, n % 12, n))


def test_it_declines_what_it_does_not_map(codec: AvroCodec, writer: Any) -> None:
    fiat = codec.encode(TOPIC, transfer_requested("acc-1", 100))
    _accept(codec, writer, fiat)
    crypto = transfer_requested("acc-1", 100)
    crypto["amount"] = {"units": Decimal(10**30), "asset": "ETH", "decimals": 18, "chain": "ethereum"}
    assert writer.row(codec.encode(TOPIC, crypto), TOPIC, 0, 1) is None
    live = transfer_requested("acc-1", 100)
    live["metadata"]["environment"] = "live"
    assert writer.row(codec.encode(TOPIC, live), TOPIC, 0, 2) is None
    nul = transfer_requested("acc-1", 100)
    nul["reference"] = "a\x00b"
    assert writer.row(codec.encode(TOPIC, nul), TOPIC, 0, 3) is None
    assert writer.row(fiat[:-1], TOPIC, 0, 4) is None  # truncated
    assert writer.row(fiat + b"\x00", TOPIC, 0, 5) is None  # trailing bytes
    assert writer.row(b"\x00\x00\x00\x7f\x7f" + fiat[5:], TOPIC, 0, 6) is None  # a header never accepted
    assert writer.row(b"", TOPIC, 0, 7) is None


def test_a_header_is_read_only_once_accepted(codec: AvroCodec) -> None:
    fresh = PLAN.native(codec.store.for_topic(TOPIC).definition, "sandbox", KEY)
    value = codec.encode(TOPIC, transfer_requested("acc-1", 100))
    assert fresh.row(value, TOPIC, 0, 0) is None
    _accept(codec, fresh, value)
    assert fresh.row(value, TOPIC, 0, 0) is not None


def test_damaged_bytes_give_the_python_row_or_nothing(codec: AvroCodec, writer: Any) -> None:
    """Flipped bytes: where the native writer still writes a row, the Python path decodes the same
    bytes to the same row; where the Python path refuses them, the native writer declined too."""
    rng = random.Random(7)
    base = codec.encode(TOPIC, _random_record(rng))
    _accept(codec, writer, base)
    written = declined = 0
    for n in range(3000):
        damaged = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(10 if damaged[0] else 5, len(damaged))
            damaged[at] = rng.randrange(256)
        value = bytes(damaged)
        line = writer.row(value, TOPIC, 0, n)
        try:
            row = _python_row(codec, value, 0, n)
        except (DecodeError, KeyError, TypeError):
            assert line is None
            declined += 1
            continue
        if line is None:
            declined += 1
        else:
            _same(_fields(line), row)
            written += 1
    assert written and declined


def test_timestamps_at_the_ends_of_the_calendar(codec: AvroCodec, writer: Any) -> None:
    for micros, expected in [
        (-62_135_596_800_000_000, datetime(1, 1, 1, tzinfo=UTC)),
        (253_402_300_799_999_999, datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)),
    ]:
        record = transfer_requested("acc-1", 100)
        record["metadata"]["occurred_at"] = micros
        value = codec.encode(TOPIC, record)
        line = writer.row(value, TOPIC, 0, 0)
        assert line is not None
        assert _fields(line)[PLAN.names.index("occurred_at")] == expected


def test_an_event_id_in_another_spelling_is_written_canonical(codec: AvroCodec, writer: Any) -> None:
    record = transfer_requested("acc-1", 100)
    event_id = uuid.uuid4()
    record["metadata"]["event_id"] = str(event_id).upper()
    line = writer.row(codec.encode(TOPIC, record), TOPIC, 0, 0)
    assert line is not None and _fields(line)[0] == event_id
