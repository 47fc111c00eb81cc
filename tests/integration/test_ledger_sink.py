"""The ledger sink on real Kafka and PostgreSQL: balanced, idempotent, poison to the DLQ."""

from __future__ import annotations

import random
import uuid

import psycopg
import pytest

from sinks.base import SinkRunner
from sinks.ledger import TOPIC, LedgerSink
from streams.ledger.postings import fee_assessed, transaction_completed
from tests.fixtures.database import private_database
from tests.fixtures.events import metadata
from tests.fixtures.kafka import fresh_topic, produce_raw, read_all
from topics.codec import AvroCodec
from topics.deadletter import (
    ERROR_CLASS,
    ERROR_MESSAGE,
    ORIGIN_OFFSET,
    ORIGIN_PARTITION,
    ORIGIN_TOPIC,
    open_value,
)
from topics.journals import Journal, Line, account, holder_of, journal_entry_id, journal_record
from topics.schemas import load_store
from topics.settings import REPO_ROOT

ACCOUNTS = [f"acc-{i}" for i in range(40)]


@pytest.fixture(scope="module")
def db(services):
    with private_database(services) as settings:
        yield settings


@pytest.fixture(scope="module")
def codec():
    return AvroCodec(load_store(REPO_ROOT / "avro"))


def journals(n: int, seed: int) -> list[tuple[str, Journal]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        account = rng.choice(ACCOUNTS)
        if i % 3 == 2:
            out.append(
                (
                    account,
                    fee_assessed(
                        tenant="tenant-1",
                        fee_id=f"{seed}-{i}",
                        account_id=account,
                        units=rng.randint(1, 500),
                        currency="EUR",
                        exponent=2,
                    ),
                )
            )
        elif i % 3 == 1:
            wei = rng.randint(1, 2**200)
            out.append(
                (
                    account,
                    transaction_completed(
                        tenant="tenant-1",
                        transaction_id=f"{seed}-{i}",
                        account_id=account,
                        direction="CREDIT",
                        units=wei,
                        currency="ETH",
                        exponent=18,
                        rail="ethereum",
                    ),
                )
            )
        else:
            currency, exponent = rng.choice([("EUR", 2), ("USD", 2), ("JPY", 0)])
            out.append(
                (
                    account,
                    transaction_completed(
                        tenant="tenant-1",
                        transaction_id=f"{seed}-{i}",
                        account_id=account,
                        direction=rng.choice(["DEBIT", "CREDIT"]),
                        units=rng.randint(1, 10**9),
                        currency=currency,
                        exponent=exponent,
                        rail="sepa",
                    ),
                )
            )
    return out


def encode(codec: AvroCodec, account: str, journal: Journal) -> tuple[bytes, bytes]:
    meta = metadata("ledger.journal.posted")
    record = journal_record(
        journal,
        journal_entry_id=journal_entry_id(journal.reference_id),
        account_id=account,
        metadata=meta,
    )
    return account.encode(), codec.encode(TOPIC, record)


class TopicLedgerSink(LedgerSink):
    def __init__(self, topic: str) -> None:
        self.topics = (topic,)


def run_sink(db, codec, topic: str, group: str | None = None):
    runner = SinkRunner(
        db.as_database_role("ledger_sink"),
        TopicLedgerSink(topic),
        codec,
        batch_size=500,
        linger=0.1,
        group_id=group or str(uuid.uuid4()),
    )
    return runner.run(idle_exit=2.0)


def snapshot(db) -> tuple:
    with psycopg.connect(db.database_url.get_secret_value()) as conn:
        return conn.execute(
            """SELECT (SELECT count(*) FROM journal_entries), (SELECT count(*) FROM entries),
                      (SELECT count(*) FROM ledger_accounts),
                      (SELECT md5(string_agg(ledger_account || ':' || debits || ':' || credits, ',' ORDER BY ledger_account)) FROM balances),
                      (SELECT md5(string_agg(journal_entry_id::text || line_no || side || amount, ',' ORDER BY journal_entry_id, line_no)) FROM entries)"""
        ).fetchone()


@pytest.fixture(scope="module")
def posted(services, db, codec):
    topic = fresh_topic(services, "ledger")
    batch = journals(900, seed=1)
    poison = [
        (b"acc-1", b"\xc3\x01not avro at all"),
        encode(
            codec,
            "acc-2",
            Journal(
                "bad:1",
                "unbalanced",
                (
                    Line("customer:tenant-1/acc-2:EUR", "DEBIT", 10, "EUR", 2),
                    Line("clearing:tenant-1/x:EUR", "CREDIT", 9, "EUR", 2),
                ),
            ),
        ),
        encode(
            codec,
            "acc-3",
            Journal(
                "bad:2",
                "another tenant's books",
                (
                    Line("customer:tenant-2/acc-3:EUR", "DEBIT", 10, "EUR", 2),
                    Line("clearing:tenant-2/x:EUR", "CREDIT", 10, "EUR", 2),
                ),
            ),
        ),
        encode(
            codec,
            "acc-4",
            Journal(
                "bad:3",
                "a client's exponent",
                (
                    Line("customer:tenant-1/acc-4:EUR", "DEBIT", 10, "EUR", 18),
                    Line("clearing:tenant-1/x:EUR", "CREDIT", 10, "EUR", 18),
                ),
            ),
        ),
    ]
    messages = (
        [encode(codec, a, j) for a, j in batch[:450]] + poison + [encode(codec, a, j) for a, j in batch[450:]]
    )
    produce_raw(services, topic, messages)
    stats = run_sink(db, codec, topic)
    return topic, batch, stats


def test_every_journal_is_stored_once_and_balances(db, posted):
    _, _, stats = posted
    assert stats.written == 900
    assert stats.dead_lettered == 4
    with psycopg.connect(db.database_url.get_secret_value()) as conn:
        assert conn.execute("SELECT count(*) FROM journal_entries").fetchone()[0] == 900
        unbalanced = conn.execute(
            """SELECT journal_entry_id FROM entries GROUP BY journal_entry_id, currency
               HAVING sum(CASE WHEN side = 'DEBIT' THEN amount ELSE -amount END) <> 0"""
        ).fetchall()
        assert unbalanced == []


def test_all_accounts_sum_to_zero_per_currency_and_balances_match_entries(db, posted):
    _, batch, _ = posted
    with psycopg.connect(db.database_url.get_secret_value()) as conn:
        trial = dict(
            conn.execute("SELECT currency, sum(debits - credits) FROM balances GROUP BY currency").fetchall()
        )
        assert trial and all(v == 0 for v in trial.values()), trial
        mismatched = conn.execute(
            """SELECT b.ledger_account FROM balances b
                 JOIN (SELECT ledger_account,
                              sum(CASE WHEN side = 'DEBIT' THEN amount ELSE 0 END) d,
                              sum(CASE WHEN side = 'CREDIT' THEN amount ELSE 0 END) c
                         FROM entries GROUP BY ledger_account) e USING (ledger_account)
                WHERE b.debits <> e.d OR b.credits <> e.c"""
        ).fetchall()
        assert mismatched == []
        # exactness: fee revenue equals the independent sum of the fees posted
        fees = sum(j.lines[0].units for _, j in batch if j.reference_id.startswith("fee:"))
        revenue = conn.execute(
            "SELECT credits FROM balances WHERE ledger_account = 'fee_revenue:tenant-1/platform:EUR'"
        ).fetchone()[0]
        assert revenue == fees
        wei = sum(j.lines[0].units for _, j in batch if j.lines[0].currency == "ETH")
        assert (
            conn.execute(
                "SELECT debits FROM balances WHERE ledger_account = 'clearing:tenant-1/ethereum:ETH'"
            ).fetchone()[0]
            == wei
        )


def test_poison_goes_to_the_dead_letter_topic_with_its_origin(services, posted):
    topic, _, _ = posted
    dlq = "dlq.ledger_sink.dead_lettered.v1"
    mine = [m for m in read_all(services, dlq) if dict(m.headers() or [])[ORIGIN_TOPIC] == topic.encode()]
    assert len(mine) == 4
    classes = sorted(dict(m.headers())[ERROR_CLASS].decode() for m in mine)
    assert classes == ["CheckViolation", "DecodeError", "PoisonEvent", "PoisonEvent"]
    messages = " ".join(dict(m.headers())[ERROR_MESSAGE].decode() for m in mine)
    assert "not in tenant 'tenant-1'" in messages and "EUR has exponent 2, not 18" in messages
    for m in mine:
        headers = dict(m.headers())
        assert int(headers[ORIGIN_PARTITION]) >= 0 and int(headers[ORIGIN_OFFSET]) >= 0
    # the value is sealed on the topic, and opens to the exact original bytes for a redrive
    assert not any(b"not avro at all" in (m.value() or b"") for m in mine)
    assert any(open_value(services.dead_letter_key(), m) == b"\xc3\x01not avro at all" for m in mine)


def test_replaying_the_topic_changes_nothing(db, codec, posted):
    topic, _, _ = posted
    before = snapshot(db)
    stats = run_sink(db, codec, topic)  # a new consumer group reads everything again
    assert stats.consumed == 904
    assert snapshot(db) == before


def test_the_database_refuses_unbalanced_or_edited_entries(db):
    with psycopg.connect(db.database_url.get_secret_value()) as conn:
        conn.execute(
            "INSERT INTO ledger_accounts VALUES ('customer:t/z:EUR','liability','CREDIT','EUR',2,now(),'t') ON CONFLICT DO NOTHING"
        )
        conn.execute(
            "INSERT INTO ledger_accounts VALUES ('clearing:t/z:EUR','asset','DEBIT','EUR',2,now(),'t') ON CONFLICT DO NOTHING"
        )
        conn.commit()
        jid = uuid.uuid4()
        with pytest.raises(psycopg.errors.CheckViolation, match="does not balance"):
            with conn.transaction():
                conn.execute(
                    "INSERT INTO journal_entries VALUES (%s,'r-bad','x','t','sandbox','c',%s,NULL,now())",
                    (jid, jid),
                )
                conn.execute(
                    "INSERT INTO entries VALUES (%s,1,'customer:t/z:EUR','DEBIT',10,'EUR',2),(%s,2,'clearing:t/z:EUR','CREDIT',9,'EUR',2)",
                    (jid, jid),
                )
        with pytest.raises(psycopg.errors.CheckViolation, match="no entries"), conn.transaction():
            conn.execute(
                "INSERT INTO journal_entries VALUES (%s,'r-empty','x','t','sandbox','c',%s,NULL,now())",
                (jid, jid),
            )
        edited = uuid.uuid4()  # a journal of this test's own, so the edit below has a row to refuse
        with conn.transaction():
            conn.execute(
                "INSERT INTO journal_entries VALUES (%s,%s,'x','t','sandbox','c',%s,NULL,now())",
                (edited, f"r-edit-{edited}", edited),
            )
            conn.execute(
                "INSERT INTO entries VALUES (%s,1,'customer:t/z:EUR','DEBIT',10,'EUR',2),(%s,2,'clearing:t/z:EUR','CREDIT',10,'EUR',2)",
                (edited, edited),
            )
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="append-only"):
            with conn.transaction():
                conn.execute("UPDATE entries SET amount = amount + 1 WHERE journal_entry_id = %s", (edited,))
        with pytest.raises(psycopg.errors.CheckViolation, match="does not balance"):
            with conn.transaction():  # a line added later to a balanced journal must balance by itself
                conn.execute(
                    "INSERT INTO entries VALUES (%s,3,'customer:t/z:EUR','DEBIT',5,'EUR',2)", (edited,)
                )


def test_entries_must_name_a_journal_and_an_account_that_exist(db):
    """Checked once per statement (no per-row foreign keys), and refused as a foreign key would."""
    with psycopg.connect(db.database_url.get_secret_value()) as conn:
        for code, kind, side in [
            ("customer:t/k:EUR", "liability", "CREDIT"),
            ("clearing:t/k:EUR", "asset", "DEBIT"),
        ]:
            conn.execute(
                "INSERT INTO ledger_accounts VALUES (%s,%s,%s,'EUR',2,now(),'t') ON CONFLICT DO NOTHING",
                (code, kind, side),
            )
        conn.commit()
        lines = "INSERT INTO entries VALUES (%s,1,%s,'DEBIT',10,'EUR',%s),(%s,2,'clearing:t/k:EUR','CREDIT',10,'EUR',2)"
        orphan = uuid.uuid4()
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match=r"journal entry .* does not exist"):
            with conn.transaction():
                conn.execute(lines, (orphan, "customer:t/k:EUR", 2, orphan))
        jid = uuid.uuid4()
        journal = "INSERT INTO journal_entries VALUES (%s,%s,'x','t','sandbox','c',%s,NULL,now())"
        for account, exponent in [("customer:t/nobody:EUR", 2), ("customer:t/k:EUR", 3)]:
            with pytest.raises(psycopg.errors.ForeignKeyViolation, match=r"ledger account .* does not exist"):
                with conn.transaction():
                    conn.execute(journal, (jid, f"r-{account}-{exponent}", jid))
                    conn.execute(lines, (jid, account, exponent, jid))
        with conn.transaction():  # the same lines, well formed, are taken
            conn.execute(journal, (jid, "r-good", jid))
            conn.execute(lines, (jid, "customer:t/k:EUR", 2, jid))
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="never deleted"):
            with conn.transaction():
                conn.execute("DELETE FROM ledger_accounts WHERE code = 'customer:t/k:EUR'")
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="keeps its code"):
            with conn.transaction():
                conn.execute("UPDATE ledger_accounts SET exponent = 3 WHERE code = 'customer:t/k:EUR'")


def test_a_ledger_account_finds_its_registry_row_by_the_registrys_key(db):
    """`ledger_account_holder` takes a customer ledger account's code back to the account id it
    was made from, whatever that id holds, so the balance reads reach the registry by its key."""
    ids = ["acc-1", "a:b/c", "ünï-42", "x:" * 20, "/lead", "trail:"]
    codes = [(account("customer", "tenant-9", i, cur), cur) for i in ids for cur in ("EUR", "USDC")]
    with psycopg.connect(db.database_url.get_secret_value()) as conn:
        found = [conn.execute("SELECT ledger_account_holder(%s, %s)", c).fetchone()[0] for c in codes]
    assert found == [holder_of(code) for code, _ in codes] == [i for i in ids for _ in ("EUR", "USDC")]
