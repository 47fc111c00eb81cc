"""Bank account details at rest (DOMAIN: encrypted field by field, with a key of their own): the
transfers sink keeps a beneficiary only sealed, the database refuses one written as text, and
`db seal` seals what was written as text before."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
import pytest

from sinks.base import SinkRunner
from sinks.transfers import TransferRequestSink
from tests.fixtures.database import private_database
from tests.fixtures.events import transfer_requested
from tests.fixtures.kafka import fresh_topic, produce_raw
from tests.fixtures.services import service_environment
from topics.codec import AvroCodec
from topics.fields import TRANSFER_REQUESTS_BENEFICIARY, open_field
from topics.names import PAYMENTS_TRANSFER_REQUESTED_V1
from topics.schemas import load_store
from topics.settings import REPO_ROOT

RUN = uuid.uuid4().hex[:8]
IBAN = "GB33BUKB20201555555555"


@pytest.fixture(scope="module")
def db(services):
    with private_database(services) as settings:
        yield settings


def test_the_transfers_sink_keeps_a_beneficiary_only_sealed(db, services):
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    topic = fresh_topic(services, "sealed", partitions=1)
    account = f"acc-sealed-{RUN}"
    record = transfer_requested(account, 5_000, beneficiary_reference=IBAN)
    produce_raw(services, topic, [(account.encode(), codec.encode(PAYMENTS_TRANSFER_REQUESTED_V1, record))])
    SinkRunner(
        db.as_database_role("transfers_sink"),
        TransferRequestSink(),
        codec,
        linger=0.05,
        group_id=f"sealed-{RUN}",
        topics=[topic],
        input_aliases={topic: PAYMENTS_TRANSFER_REQUESTED_V1},
    ).run(idle_exit=2)
    with psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn:
        text, sealed = conn.execute(
            "SELECT beneficiary_reference, beneficiary_sealed FROM transfer_requests WHERE account_id = %s",
            (account,),
        ).fetchone()
        assert text is None and IBAN.encode() not in bytes(sealed)
        assert open_field(db.field_key(), sealed, TRANSFER_REQUESTS_BENEFICIARY) == IBAN
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "UPDATE transfer_requests SET beneficiary_reference = %s WHERE account_id = %s",
                (IBAN, account),
            )


def test_db_seal_seals_what_was_written_as_text_and_then_checks_none_is_left(db):
    url = db.database_url.get_secret_value()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE transfer_requests DROP CONSTRAINT transfer_requests_beneficiary_sealed")
        for n in range(3):  # rows written before the beneficiaries were sealed
            conn.execute(
                "INSERT INTO transfer_requests (event_id, transfer_id, account_id, tenant_id, environment,"
                " amount_units, currency, exponent, rail, beneficiary_reference, correlation_id, occurred_at,"
                " kafka_topic, kafka_partition, kafka_offset)"
                " VALUES (%s, %s, %s, 'tenant-1', %s, 100, 'EUR', 2, 'SEPA', %s, 'c', now(), 't', 0, %s)",
                (str(uuid.uuid4()), f"tr-{RUN}-{n}", f"acc-legacy-{RUN}", db.environment, f"{IBAN}{n}", n),
            )
        conn.execute(
            "ALTER TABLE transfer_requests ADD CONSTRAINT transfer_requests_beneficiary_sealed"
            " CHECK (beneficiary_reference IS NULL) NOT VALID"
        )
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "db", "seal", "--batch-size", "2"],
        env=service_environment(db),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "transfer_requests 3" in done.stdout
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT transfer_id, beneficiary_reference, beneficiary_sealed FROM transfer_requests"
            " WHERE account_id = %s ORDER BY transfer_id",
            (f"acc-legacy-{RUN}",),
        ).fetchall()
        assert [r[1] for r in rows] == [None, None, None]
        opened = [open_field(db.field_key(), r[2], TRANSFER_REQUESTS_BENEFICIARY) for r in rows]
        assert opened == [f"{IBAN}{n}" for n in range(3)]
        validated = conn.execute(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'transfer_requests_beneficiary_sealed'"
        ).fetchone()
        assert validated == (True,)
    again = subprocess.run(
        [sys.executable, "-m", "ops.cli", "db", "seal"],
        env=service_environment(db),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "transfer_requests 0, transactions 0" in again.stdout
