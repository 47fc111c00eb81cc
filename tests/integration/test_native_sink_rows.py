"""The transfers sink stores the same rows whether the native writer (`ledgerstream_native`) made
them from the Avro bytes or the Python path made them from the decoded record: odd text, nulls,
crypto money (left to the Python path), and what must be dead-lettered (another environment,
bytes that are not an event) alike."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from sinks.base import SinkRunner
from sinks.rows import PlanMismatch
from sinks.transfers import PLAN, TransferRequestSink
from tests.fixtures.database import private_database
from tests.fixtures.events import transfer_requested
from tests.fixtures.kafka import fresh_topic, produce_raw
from topics.codec import AvroCodec
from topics.fields import TRANSFER_REQUESTS_BENEFICIARY, open_field
from topics.names import PAYMENTS_TRANSFER_REQUESTED_V1
from topics.runtime import BatchStats
from topics.schemas import load_store
from topics.settings import REPO_ROOT

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
ODD = ["plain", "tab\there", "line\nbreak", "back\\slash", "ümlaut €", "", "\\N", "cr\rlf"]


@pytest.fixture(scope="module")
def db(services):
    with private_database(services) as settings:
        yield settings


def _values(codec: AvroCodec, environment: str) -> list[tuple[bytes, bytes]]:
    out = []
    for n in range(40):
        account = f"acc-native-{RUN}-{n % 4}"
        record = transfer_requested(
            account,
            n * 1_001 - 7_000,
            reference=None if n % 5 == 0 else ODD[n % len(ODD)],
            beneficiary_reference=None if n % 7 == 0 else f"GB33 {ODD[n % len(ODD)]}",
        )
        record["metadata"]["idempotency_key"] = ODD[(n + 3) % len(ODD)] if n % 2 else None
        if n % 10 == 9:
            record["amount"] = {
                "units": Decimal(10**24 + n),
                "asset": "ETH",
                "decimals": 18,
                "chain": "ethereum",
            }
        out.append((account.encode(), codec.encode(PAYMENTS_TRANSFER_REQUESTED_V1, record)))
    other = transfer_requested(f"acc-native-{RUN}-0", 100)
    other["metadata"]["environment"] = "live" if environment == "sandbox" else "sandbox"
    out.append((b"k", codec.encode(PAYMENTS_TRANSFER_REQUESTED_V1, other)))
    out.append((b"k", b"\x00\x00\x00\x00\x01garbage"))
    return out


def _sink(db: Any, codec: AvroCodec, topic: str, native: bool) -> BatchStats:
    runner = SinkRunner(
        db.as_database_role("transfers_sink"),
        TransferRequestSink(),
        codec,
        linger=0.05,
        group_id=f"native-{native}-{RUN}",
        topics=[topic],
        input_aliases={topic: PAYMENTS_TRANSFER_REQUESTED_V1},
    )
    assert bool(runner.fast_rows) is True  # built by `make install`
    if not native:
        runner.fast_rows = {}
    return runner.run(idle_exit=2)


def _rows(db: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT event_id, transfer_id, account_id, tenant_id, environment, amount_units, currency,"
            " exponent, rail, destination_account_id, beneficiary_sealed, reference, correlation_id,"
            " idempotency_key, occurred_at, kafka_topic, kafka_partition, kafka_offset"
            " FROM transfer_requests WHERE account_id LIKE %s ORDER BY kafka_offset",
            (f"acc-native-{RUN}-%",),
        ).fetchall()
        conn.execute("DELETE FROM transfer_requests WHERE account_id LIKE %s", (f"acc-native-{RUN}-%",))
    key = db.field_key()
    return [(*r[:10], open_field(key, r[10], TRANSFER_REQUESTS_BENEFICIARY), *r[11:]) for r in rows]


def test_native_and_python_rows_are_the_same(db, services):
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    topic = fresh_topic(services, "native-rows", partitions=1)
    produce_raw(services, topic, _values(codec, db.environment))

    native = _sink(db, codec, topic, native=True)
    native_rows = _rows(db)
    python = _sink(db, codec, topic, native=False)
    python_rows = _rows(db)

    assert len(native_rows) == 40 and native_rows == python_rows
    assert native.dead_lettered == python.dead_lettered == 2
    # the first value of the schema is decoded (and vouches for its header); crypto money is too
    assert native.fast == 40 - 1 - 4 and python.fast == 0
    assert {r[4] for r in native_rows} == {db.environment}
    assert [r[11] for r in native_rows[:8]] == [None, *ODD[1:5], None, *ODD[6:8]]


def test_a_column_of_another_type_stops_the_plan_before_it_writes(db):
    with psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn:
        PLAN.check_types(conn, "transfer_requests")
        with conn.transaction(force_rollback=True):
            conn.execute("ALTER TABLE transfer_requests ALTER COLUMN kafka_partition TYPE bigint")
            with pytest.raises(PlanMismatch, match="kafka_partition is bigint, not integer"):
                PLAN.check_types(conn, "transfer_requests")
