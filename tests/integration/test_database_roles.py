"""Each component's PostgreSQL role may touch only the tables sinks/roles.toml gives it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from sinks.base import SinkRunner
from sinks.migrate import connect, migrate
from sinks.roles import load_roles, undecided_tables
from sinks.transfers import TransferRequestSink
from tests.fixtures.database import private_database
from tests.fixtures.events import transfer_requested
from tests.fixtures.kafka import fresh_topic, produce_raw
from topics.codec import AvroCodec
from topics.errors import LedgerstreamError
from topics.names import PAYMENTS_TRANSFER_REQUESTED_V1
from topics.schemas import load_store
from topics.settings import REPO_ROOT, Settings, database_role

ROLES = load_roles()


@pytest.fixture(scope="module")
def db(services: Settings) -> Iterator[Settings]:
    with private_database(services) as settings:
        yield settings


def as_component(db: Settings, name: str) -> psycopg.Connection[Any]:
    """A connection as `name`'s role, with its password where the credentials file has one."""
    own = db.as_principal(name).database_url.get_secret_value()
    if own == db.database_url.get_secret_value():  # no credentials file: the role, by name
        own = make_conninfo(own, user=database_role(name))
    return psycopg.connect(own, autocommit=True, connect_timeout=10)


def test_every_table_of_the_schema_is_decided(db: Settings) -> None:
    with psycopg.connect(db.database_url.get_secret_value()) as conn:
        assert undecided_tables(conn, ROLES) == []


def test_each_role_holds_exactly_the_declared_privileges(db: Settings) -> None:
    with psycopg.connect(db.database_url.get_secret_value()) as conn:
        for spec in ROLES.roles.values():
            held = {
                (t, p.lower())
                for t, p in conn.execute(
                    "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                    "WHERE grantee = %s",
                    (spec.role,),
                ).fetchall()
            }
            declared = {(t, p.name) for t, ps in spec.tables.items() for p in ps if not p.columns}
            assert held == declared, spec.name
            for table, privileges in spec.tables.items():
                for p in privileges:
                    for column in p.columns:
                        row = conn.execute(
                            "SELECT 1 FROM information_schema.column_privileges WHERE grantee = %s "
                            "AND table_name = %s AND column_name = %s AND privilege_type = %s",
                            (spec.role, table, column, p.name.upper()),
                        ).fetchone()
                        assert row is not None, (spec.name, table, column)


@pytest.mark.parametrize(
    ("component", "statement"),
    [
        ("fees_sink", "INSERT INTO journal_entries (journal_entry_id) VALUES (gen_random_uuid())"),
        ("fees_sink", "SELECT * FROM balances"),
        ("api", "UPDATE balances SET credits = credits + 1"),
        ("api", "SELECT * FROM tenants"),
        ("api", "UPDATE accounts SET overdraft_limit = 1000000"),
        ("webhooks", "DELETE FROM holds"),
        ("webhooks", "UPDATE accounts SET overdraft_limit = 1000000"),
        ("status_agent", "UPDATE accounts SET status = 'ACTIVE'"),
        ("outbox_relay", "SELECT * FROM accounts"),
        ("outbox_relay", "DELETE FROM outbox"),
        ("webhooks", "SELECT value FROM outbox"),
        ("ledger_agent", "SELECT * FROM entries"),
        ("ledger_sink", "DELETE FROM balances"),
        ("chain_listener", "UPDATE transactions SET status = 'COMPLETED'"),
        ("payout_dispatcher", "SELECT * FROM api_keys"),
        ("audit_sink", "SELECT * FROM journal_entries"),
        ("transfers_sink", "CREATE TABLE taken (a int)"),
    ],
)
def test_a_component_is_refused_what_it_does_not_need(db: Settings, component: str, statement: str) -> None:
    with as_component(db, component) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


def test_a_component_may_lock_an_account_it_may_not_change(db: Settings) -> None:
    with as_component(db, "status_agent") as conn, conn.transaction():
        conn.execute("SELECT * FROM accounts WHERE false FOR UPDATE")
        assert conn.execute("SELECT count(*) FROM holds").fetchone() == (0,)


def test_the_audit_sink_writes_the_audit_log_through_its_writer_role(db: Settings) -> None:
    with as_component(db, "audit_sink") as conn:
        conn.execute("SET ROLE ledgerstream_audit_writer")
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)


def test_migrating_again_takes_back_a_grant_nobody_declared(db: Settings) -> None:
    url = db.database_url.get_secret_value()
    with psycopg.connect(url, autocommit=True) as owner:
        owner.execute(f"GRANT SELECT ON tenants TO {database_role('api')}")
    with as_component(db, "api") as conn:
        conn.execute("SELECT count(*) FROM tenants")  # the stray grant works
    with connect(url) as conn:
        migrate(conn)
    with as_component(db, "api") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT count(*) FROM tenants")


class _TransfersOn(TransferRequestSink):
    def __init__(self, topic: str) -> None:
        self.topics = (topic,)


def test_a_worker_whose_role_lacks_a_grant_stops_in_one_line(db: Settings, services: Settings) -> None:
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    topic = fresh_topic(services, "roles", partitions=1)
    record = transfer_requested(account="acc-roles")
    produce_raw(services, topic, [(b"acc-roles", codec.encode(PAYMENTS_TRANSFER_REQUESTED_V1, record))])
    # the transfers sink's work under the fees sink's role, which may not write transfer_requests
    runner = SinkRunner(
        db.as_database_role("fees_sink"), _TransfersOn(topic), codec, linger=0.05, group_id=f"roles-{topic}"
    )
    with pytest.raises(
        LedgerstreamError, match="refused the work: permission denied for table transfer_requests"
    ):
        runner.run(idle_exit=10)
    with psycopg.connect(db.database_url.get_secret_value()) as conn:
        assert conn.execute("SELECT count(*) FROM transfer_requests").fetchone() == (0,)


def test_a_component_role_proves_its_password(db: Settings) -> None:
    own = db.as_principal("fees_sink").database_url.get_secret_value()
    if own == db.database_url.get_secret_value():
        pytest.skip("no database credentials file: the roles have no passwords here")
    with as_component(db, "fees_sink") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("ledgerstream_fees_sink",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(make_conninfo(own, password="guess"), connect_timeout=10).close()
