"""0016 moves every ledger account into its tenant's books, with the entries' exponents."""

from __future__ import annotations

import shutil
import uuid

import psycopg
import pytest
from psycopg import sql

from sinks.migrate import MIGRATIONS, migrate


@pytest.fixture
def empty_database(services):
    base, _, _ = services.database_url.get_secret_value().rpartition("/")
    name = f"ledgerstream_test_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def post(conn, tenant: str, ref: str, debit: str, credit: str, units: int) -> None:
    jid = uuid.uuid4()
    conn.execute(
        "INSERT INTO journal_entries (journal_entry_id, reference_id, description, tenant_id, environment, "
        "correlation_id, source_event_id, posted_at) VALUES (%s, %s, 'x', %s, 'sandbox', 'c', %s, now())",
        (jid, ref, tenant, uuid.uuid4()),
    )
    conn.execute(
        "INSERT INTO entries (journal_entry_id, line_no, ledger_account, side, amount, currency) "
        "VALUES (%s, 1, %s, 'DEBIT', %s, 'EUR'), (%s, 2, %s, 'CREDIT', %s, 'EUR')",
        (jid, debit, units, jid, credit, units),
    )
    for code in (debit, credit):
        conn.execute(
            "INSERT INTO balances (ledger_account, currency, debits, credits) VALUES (%s, 'EUR', 0, 0) "
            "ON CONFLICT DO NOTHING",
            (code,),
        )


def test_two_tenants_sharing_an_account_id_get_a_balance_each(empty_database, tmp_path):
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.name < "0016":
            shutil.copy(path, before / path.name)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        migrate(conn, before)
        for code, kind, side in (
            ("customer:acc-1:EUR", "liability", "CREDIT"),
            ("clearing:sepa:EUR", "asset", "DEBIT"),
        ):
            conn.execute("INSERT INTO ledger_accounts VALUES (%s, %s, %s, 'EUR', 2)", (code, kind, side))
        with conn.transaction():
            post(conn, "t1", "txn:a", "clearing:sepa:EUR", "customer:acc-1:EUR", 700)
            post(conn, "t2", "txn:b", "clearing:sepa:EUR", "customer:acc-1:EUR", 50)
            post(conn, "t1", "txn:c", "customer:acc-1:EUR", "clearing:sepa:EUR", 200)

        assert next(m.name for m in migrate(conn)) == "accounts_holds_currencies"

        balances = dict(
            conn.execute(
                "SELECT b.ledger_account, b.credits - b.debits FROM balances b ORDER BY 1"
            ).fetchall()
        )
        assert balances == {
            "clearing:t1/sepa:EUR": -500,
            "clearing:t2/sepa:EUR": -50,
            "customer:t1/acc-1:EUR": 500,
            "customer:t2/acc-1:EUR": 50,
        }
        tenants = dict(conn.execute("SELECT code, tenant_id FROM ledger_accounts").fetchall())
        assert tenants["customer:t2/acc-1:EUR"] == "t2" and "customer:acc-1:EUR" not in tenants
        assert conn.execute("SELECT DISTINCT exponent FROM entries").fetchall() == [(2,)]
        # entries stay append-only after the move
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="append-only"):
            conn.execute("UPDATE entries SET amount = 1")
        # an entry whose exponent is not its account's is refused by the database
        with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():
            jid = uuid.uuid4()
            conn.execute(
                "INSERT INTO journal_entries (journal_entry_id, reference_id, description, tenant_id, "
                "environment, correlation_id, source_event_id, posted_at) "
                "VALUES (%s, 'bad', 'x', 't1', 'sandbox', 'c', %s, now())",
                (jid, uuid.uuid4()),
            )
            conn.execute(
                "INSERT INTO entries VALUES (%s, 1, 'customer:t1/acc-1:EUR', 'DEBIT', 5, 'EUR', 18), "
                "(%s, 2, 'clearing:t1/sepa:EUR', 'CREDIT', 5, 'EUR', 18)",
                (jid, jid),
            )
