"""The AML agent on the real stack: Redis windows, flags in PostgreSQL, a sanctions block."""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial

import psycopg
import pytest
import redis

from ops.cli import main
from sinks.aml import AmlSink
from sinks.base import SinkRunner
from streams.aml.agent import AmlHandler
from streams.aml.rules import load_rules
from streams.aml.windows import Windows
from streams.runtime import AgentRuntime, run_agent
from streams.status.agent import StatusHandler
from tests.fixtures.database import private_database
from tests.fixtures.events import TRAVEL_RULE, metadata, transfer_requested
from tests.fixtures.ledger import open_accounts
from tests.fixtures.running import running
from tests.fixtures.waiting import wait_for
from topics.codec import AvroCodec
from topics.producer import EventProducer
from topics.schemas import load_store
from topics.settings import REPO_ROOT

RUN = uuid.uuid4().hex[:8]
NOW = datetime.now(UTC).replace(microsecond=0)
RULES = load_rules(REPO_ROOT / "streams" / "aml" / "rules.yaml")
SANCTIONED = "0x722122dF12D4e14e13Ac3b6895a86e84145b6967"


def at(minutes_ago: float) -> int:
    return int(
        (NOW - timedelta(minutes=minutes_ago) - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)
    )


def acct(name: str) -> str:
    return f"aml-{RUN}-{name}"


def transfer(
    name: str,
    n: int,
    units: int,
    minutes_ago: float,
    beneficiary: str = "GB33BUKB20201555555555",
    **overrides,
) -> dict:
    record = transfer_requested(
        account=acct(name),
        units=units,
        transfer_id=f"tr-{RUN}-{name}-{n}",
        beneficiary_reference=beneficiary,
        **overrides,
    )
    record["metadata"]["occurred_at"] = at(minutes_ago)
    return record


def credit(name: str, n: int, units: int, minutes_ago: float) -> dict:
    return {
        "metadata": metadata("banking.transaction.received", occurred_at=at(minutes_ago)),
        "account_id": acct(name),
        "transaction_id": f"bk-{RUN}-{name}-{n}",
        "amount": {"units": units, "currency": "EUR", "exponent": 2},
        "direction": "CREDIT",
        "status": "POSTED",
        "counterparty_reference": "DE89370400440532013000",
        "booking_date": None,
        "value_date": None,
        "provider": "truelayer",
        "provider_reference": f"tl-{RUN}-{n}",
        "inbox_id": None,
    }


# (topic, record) in order, and the flags they must raise: (account, transfer/transaction id, rule)
SCRIPT = (
    # eleven small transfers in an hour to one payee: only the eleventh trips the count rule
    [("payments.transfer.requested.v1", transfer("burst", n, 10_000, 50 - n)) for n in range(11)]
    # three just under EUR 10,000 within a day: amount over 15,000 from the second, structuring on the third
    + [("payments.transfer.requested.v1", transfer("smurf", n, 950_000, 600 - 60 * n)) for n in range(3)]
    # five new payees in an hour
    + [
        ("payments.transfer.requested.v1", transfer("fanout", n, 5_000, 30 - n, beneficiary=f"PAYEE-{n}"))
        for n in range(5)
    ]
)
EXPECTED = {
    (acct("burst"), f"tr-{RUN}-burst-10", "eu-count-1h"),
    (acct("smurf"), f"tr-{RUN}-smurf-1", "eu-amount-24h"),
    (acct("smurf"), f"tr-{RUN}-smurf-2", "eu-amount-24h"),
    (acct("smurf"), f"tr-{RUN}-smurf-2", "eu-structuring-24h"),
    (acct("mule"), f"tr-{RUN}-mule-1", "eu-rapid-in-out-30m"),
    (acct("fanout"), f"tr-{RUN}-fanout-4", "eu-new-counterparties-1h"),
    (acct("crypto"), f"tr-{RUN}-crypto-0", "sanctioned-address"),
}


@pytest.fixture(scope="module")
def codec():
    return AvroCodec(load_store(REPO_ROOT / "avro"))


def flags(conn) -> set[tuple[str, str, str]]:
    rows = conn.execute(
        """SELECT f.account_id, t.transfer_id, f.rule_id FROM aml_flags f
           LEFT JOIN aml_trigger_ids t ON t.event_id = f.trigger_event_id WHERE f.account_id LIKE %s""",
        (f"aml-{RUN}-%",),
    ).fetchall()
    return {(a, t, r) for a, t, r in rows}


def snapshot(conn) -> tuple:
    return conn.execute(
        "SELECT count(*), md5(string_agg(flag_id::text || rule_id || evidence::text, ',' ORDER BY flag_id)) "
        "FROM aml_flags WHERE account_id LIKE %s",
        (f"aml-{RUN}-%",),
    ).fetchone()


def workers(db, codec, catalog, group):
    return [
        partial(
            run_agent,
            AgentRuntime(
                db,
                AmlHandler(db.as_database_role("aml_agent"), RULES),
                codec,
                catalog,
                batch_size=300,
                linger=0.05,
                group_id=f"{group}.aml",
            ),
        ),
        SinkRunner(
            db.as_database_role("aml_sink"),
            AmlSink(),
            codec,
            batch_size=300,
            linger=0.05,
            group_id=f"{group}.aml-sink",
        ).run,
    ]


@pytest.fixture(scope="module")
def aml(services, codec, catalog):
    with (
        private_database(services) as db,
        psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn,
        ExitStack() as stack,
    ):
        # which transfer each trigger event was, to name flags by transfer in assertions
        conn.execute("CREATE TABLE aml_trigger_ids (event_id uuid PRIMARY KEY, transfer_id text)")
        group = f"aml-{RUN}"
        for work in workers(db, codec, catalog, group):
            stack.enter_context(running(work))
        stack.enter_context(
            running(
                run_agent,
                AgentRuntime(
                    db,
                    StatusHandler(db.as_database_role("status_agent"), codec),
                    codec,
                    catalog,
                    linger=0.05,
                    group_id=f"{group}.status",
                ),
            )
        )
        producer = EventProducer(db, codec, catalog)
        open_accounts(db, [acct("crypto")], "ETH", overdraft=10 * 10**18)
        crypto = transfer(
            "crypto", 0, 0, 1, beneficiary=SANCTIONED.lower(), rail="CRYPTO", travel_rule=TRAVEL_RULE
        )
        crypto["amount"] = {"units": Decimal(3 * 10**18), "asset": "ETH", "decimals": 18, "chain": "ethereum"}
        inflow = credit("mule", 0, 600_000, 20)
        outflow = transfer("mule", 1, 510_000, 10)  # 85% of it out ten minutes later

        def send(topic: str, record: dict) -> None:
            conn.execute(
                "INSERT INTO aml_trigger_ids VALUES (%s, %s)",
                (record["metadata"]["event_id"], record.get("transfer_id") or record.get("transaction_id")),
            )
            producer.produce(topic, record)

        # the inflow is seen before the outflow, as it happened (two topics have no order between them)
        send("banking.transaction.received.v1", inflow)
        producer.flush()
        client = redis.Redis.from_url(db.redis_url)
        mule = Windows(client, db.environment, RULES.horizon_ms).keys(acct("mule"), "EUR")[0]
        wait_for(lambda: client.zcard(mule) == 1, 60, what="the inflow in its window")
        client.close()
        for topic, record in [
            *SCRIPT,
            ("payments.transfer.requested.v1", outflow),
            ("payments.transfer.requested.v1", crypto),
        ]:
            send(topic, record)
        producer.flush()
        wait_for(lambda: len(flags(conn)) >= len(EXPECTED), 60, what="the flags")
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT status FROM transactions WHERE transaction_id = %s", (f"tr-{RUN}-crypto-0",)
                ).fetchone()
                == ("COMPENSATING",)
            ),
            60,
            what="the sanctioned transfer to be compensated",
        )
        yield db, conn, group


def test_a_scripted_burst_trips_exactly_the_expected_flags(aml):
    _, conn, _ = aml
    assert flags(conn) == EXPECTED


def test_flags_carry_rule_version_score_and_window_evidence(aml):
    _, conn, _ = aml
    row = conn.execute(
        "SELECT rule_version, risk_score, time_window, evidence, case_status FROM aml_flags "
        "WHERE account_id = %s AND rule_id = 'eu-structuring-24h'",
        (acct("smurf"),),
    ).fetchone()
    version, score, window, evidence, status = row
    assert (version, score, window, status) == ("eu-retail@v1", 70, "24h", "open")
    assert (
        evidence["just_under"] == "3" and evidence["threshold"] == "1000000" and evidence["currency"] == "EUR"
    )


def test_a_sanctioned_address_blocks_the_transfer(aml):
    _, conn, _ = aml
    history = conn.execute(
        "SELECT to_status, reason FROM transaction_status_history WHERE transaction_id = %s ORDER BY version",
        (f"tr-{RUN}-crypto-0",),
    ).fetchall()
    # reserved before the screening answered, so the block compensates: the hold is released
    assert [h[0] for h in history] == ["INITIATED", "VALIDATING", "BALANCE_RESERVED", "COMPENSATING"]
    assert SANCTIONED.lower() in history[-1][1]
    hold = conn.execute("SELECT status FROM holds WHERE hold_id = %s", (f"txn:tr-{RUN}-crypto-0",)).fetchone()
    assert hold == ("RELEASED",)


def test_the_window_script_counts_a_redelivered_event_once(services):
    client = redis.Redis.from_url(services.redis_url)
    windows = Windows(client, services.environment, 3_600_000)
    account, t0 = f"lua-{RUN}", 1_800_000_000_000
    first = windows.observe_many([(account, "EUR", "e1", t0, 700, "OUT", "p1")])[0]
    again = windows.observe_many([(account, "EUR", "e1", t0, 700, "OUT", "p1")])[0]
    more = windows.observe_many([(account, "EUR", "e2", t0 + 1000, 2**70, "IN", "p1")])[0]
    late = windows.observe_many([(account, "EUR", "e3", t0 + 3_600_000 + 1001, 5, "OUT", "p2")])[0]
    assert first.added and not again.added
    assert [m.units for m in again.movements] == [700]
    assert sorted(m.units for m in more.movements) == [700, 2**70]  # exact beyond a double's precision
    assert more.counterparties_first_seen == [t0]  # p1 seen once, at its first time
    assert [m.event_id for m in late.movements] == ["e3"]  # e1 and e2 trimmed out of the hour
    assert client.zcard(windows.keys(account, "EUR")[0]) == 1
    assert client.hlen(windows.keys(account, "EUR")[1]) == 1
    client.delete(*windows.keys(account, "EUR"))
    client.close()


def test_replaying_the_topics_neither_double_counts_windows_nor_duplicates_flags(
    services, codec, catalog, aml
):
    db, conn, _ = aml
    before = snapshot(conn)
    client = redis.Redis.from_url(services.redis_url)
    windows = Windows(client, services.environment, RULES.horizon_ms)
    sizes = {name: client.zcard(windows.keys(acct(name), "EUR")[0]) for name in ("burst", "smurf", "mule")}
    assert sizes == {"burst": 11, "smurf": 3, "mule": 2}
    consumed = [
        work(idle_exit=3).consumed for work in workers(db, codec, catalog, f"replay-{uuid.uuid4().hex[:6]}")
    ]
    assert all(n > 0 for n in consumed), consumed  # each stage replayed something
    assert snapshot(conn) == before
    assert {name: client.zcard(windows.keys(acct(name), "EUR")[0]) for name in sizes} == sizes
    client.close()


def test_flags_are_queryable_by_account_and_case_status(aml, monkeypatch, capsys):
    db, conn, _ = aml
    monkeypatch.setenv("DATABASE_URL", db.database_url.get_secret_value())
    flag = conn.execute(
        "SELECT flag_id::text FROM aml_flags WHERE account_id = %s", (acct("mule"),)
    ).fetchone()[0]
    assert main(["aml", "case", flag, "--status", "escalated"]) == 0
    assert main(["aml", "flags", "--account", acct("mule"), "--status", "escalated"]) == 0
    printed = capsys.readouterr().out
    assert "eu-rapid-in-out-30m" in printed and "escalated" in printed
    assert main(["aml", "case", str(uuid.uuid4()), "--status", "dismissed"]) == 1
    assert main(["aml", "case", "not-a-flag-id", "--status", "dismissed"]) == 1
    assert "flag not-a-flag-id" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:
        main(["aml", "case", flag, "--status", "closed"])
    assert bad.value.code == 2


def test_a_deposit_reorged_off_the_chain_after_its_confirmation_is_flagged(services, codec):
    """Issue 11: a reorg after a confirmation posts a reversing entry (the ledger agent) and raises a flag."""
    from streams.aml.agent import REORG_RULE, REORGED
    from tests.fixtures.events import transfer_confirmed
    from topics.events import Event

    deposit = transfer_confirmed(5 * 10**18, account=acct("reorged"))
    events = []
    for n, was_confirmed in enumerate((True, False)):
        record = {
            "metadata": metadata("crypto.wallet.transfer.reorged"),
            "account_id": acct("reorged"),
            "transfer": deposit["transfer"],
            "replaced_by_block_hash": "0x" + "ef" * 32,
            "was_confirmed": was_confirmed,
        }
        events.append(Event(codec.decode(codec.encode(REORGED, record)), REORGED, 0, n, None, b""))
    handler = AmlHandler(services, RULES)
    try:
        result = handler.handle(events)
    finally:
        handler.close()
    [flag] = [o.record for o in result.outputs]  # only the one that had been confirmed
    assert flag["rule_id"] == REORG_RULE and flag["account_id"] == acct("reorged")
    assert flag["evidence"]["tx_hash"] == deposit["transfer"]["tx_hash"]
    assert flag["evidence"]["units"] == str(5 * 10**18)
