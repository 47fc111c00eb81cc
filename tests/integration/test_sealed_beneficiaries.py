"""Bank account details at rest (DOMAIN: encrypted field by field, with a key of their own): the
transfers sink keeps a beneficiary only sealed, the database refuses one written as text, and
`db seal` seals what was written as text before."""

from __future__ import annotations

import base64
import secrets
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
from topics.fields import (
    TRANSACTIONS_TRAVEL_RULE,
    TRANSFER_REQUESTS_BENEFICIARY,
    key_id,
    open_field,
    seal_field,
)
from topics.names import PAYMENTS_TRANSFER_REQUESTED_V1
from topics.schemas import load_store
from topics.settings import REPO_ROOT

RUN = uuid.uuid4().hex[:8]
IBAN = "GB33BUKB20201555555555"
TRAVEL = '{"beneficiary_name":"Charles Babbage","originator_name":"Ada Lovelace"}'


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
    assert again.returncode == 0 and "sealed: transfer_requests 0, transactions 0" in again.stdout


def test_db_seal_moves_every_value_to_a_new_key_and_then_the_old_one_can_go(db):
    url = db.database_url.get_secret_value()
    old, new = db.field_key(), secrets.token_bytes(32)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO transfer_requests (event_id, transfer_id, account_id, tenant_id, environment,"
            " amount_units, currency, exponent, rail, beneficiary_sealed, correlation_id, occurred_at,"
            " kafka_topic, kafka_partition, kafka_offset)"
            " VALUES (%s, %s, %s, 'tenant-1', %s, 100, 'EUR', 2, 'SEPA', %s, 'c', now(), 't', 0, 0)",
            (
                str(uuid.uuid4()),
                f"tr-{RUN}-rot",
                f"acc-rotated-{RUN}",
                db.environment,
                seal_field(old, IBAN, TRANSFER_REQUESTS_BENEFICIARY),
            ),
        )
        under_old = conn.execute(
            "SELECT count(*) FROM transfer_requests WHERE substring(beneficiary_sealed from 2 for 8) = %s",
            (key_id(old),),
        ).fetchone()[0]
        conn.execute(  # a crypto transfer's Travel Rule record, kept sealed under the old key too
            "INSERT INTO transactions (transaction_id, account_id, tenant_id, environment, transaction_type,"
            " direction, amount_units, currency, exponent, status, version, correlation_id, created_at,"
            " updated_at, rail, travel_rule_sealed)"
            " VALUES (%s, %s, 'tenant-1', %s, 'TRANSFER', 'DEBIT', 1, 'ETH', 18, 'INITIATED', 1, 'c', now(),"
            " now(), 'CRYPTO', %s)",
            (
                f"tx-{RUN}-rot",
                f"acc-rotated-{RUN}",
                db.environment,
                seal_field(old, TRAVEL, TRANSACTIONS_TRAVEL_RULE),
            ),
        )
    rotated = {
        **service_environment(db),
        "LEDGERSTREAM_FIELD_KEY": base64.b64encode(new).decode(),
        "LEDGERSTREAM_FIELD_KEY_PREVIOUS": base64.b64encode(old).decode(),
    }
    done = seal_command(rotated)
    assert done.returncode == 0, done.stderr
    assert f"re-sealed under the current key: transfer_requests {under_old:,}, transactions 1" in done.stdout
    with psycopg.connect(url, autocommit=True) as conn:
        sealed = [r[0] for r in conn.execute("SELECT beneficiary_sealed FROM transfer_requests").fetchall()]
        row = conn.execute(
            "SELECT beneficiary_sealed FROM transfer_requests WHERE account_id = %s", (f"acc-rotated-{RUN}",)
        ).fetchone()[0]
    assert all(bytes(v)[1:9] == key_id(new) for v in sealed if v is not None)
    assert open_field(new, row, TRANSFER_REQUESTS_BENEFICIARY) == IBAN
    with psycopg.connect(url, autocommit=True) as conn:
        kept = conn.execute(
            "SELECT travel_rule_sealed FROM transactions WHERE transaction_id = %s", (f"tx-{RUN}-rot",)
        ).fetchone()[0]
    assert open_field(new, kept, TRANSACTIONS_TRAVEL_RULE) == TRAVEL
    retired = {**rotated, "LEDGERSTREAM_FIELD_KEY_PREVIOUS": ""}
    assert "re-sealed under the current key: transfer_requests 0" in seal_command(retired).stdout
    unknown = {**retired, "LEDGERSTREAM_FIELD_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}
    refused = seal_command(unknown)
    assert refused.returncode == 1
    assert f"sealed under key {key_id(new).hex()}, not one of these" in refused.stderr
    assert "Traceback" not in refused.stderr


def seal_command(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", "db", "seal"], env=env, capture_output=True, text=True, timeout=120
    )
