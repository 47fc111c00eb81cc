"""The command API and the outbox relay on the real stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from fastapi.testclient import TestClient

from connectors.api import create_app
from connectors.auth import SCOPES, create_tenant, issue_key, revoke_key
from connectors.outbox import OutboxRelay
from sinks.base import SinkRunner
from sinks.transfers import TransferRequestSink
from tests.fixtures.database import private_database
from tests.fixtures.events import TRAVEL_RULE
from tests.fixtures.kafka import read_all
from tests.fixtures.ledger import open_accounts
from tests.fixtures.waiting import wait_for
from topics.codec import AvroCodec, codec_from_settings
from topics.schemas import load_store
from topics.settings import REPO_ROOT

RUN = uuid.uuid4().hex[:8]
TOPIC = "payments.transfer.requested.v1"


@pytest.fixture(scope="module")
def codec():
    return AvroCodec(load_store(REPO_ROOT / "avro"))


@pytest.fixture(scope="module")
def api(services, codec, catalog):
    with (
        private_database(services) as db,
        psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn,
        TestClient(create_app(db.as_database_role("api"), codec, catalog)) as client,
    ):
        create_tenant(conn, "tenant-1", "Tenant One")
        create_tenant(conn, "tenant-2", "Tenant Two")
        for user, tenant, scopes in (
            ("alice", "tenant-1", SCOPES),
            ("bob", "tenant-1", SCOPES),
            ("reader", "tenant-1", ["accounts:write"]),
            ("eve", "tenant-2", SCOPES),
        ):
            TOKENS[user] = issue_key(conn, tenant, user, list(scopes))[1]
        open_accounts(db, ACCOUNTS)
        open_accounts(db, [f"acc-api-{RUN}-other"], tenant="tenant-2")
        yield db, conn, client


def body(account: str = f"acc-api-{RUN}", units: int = 12_345, **overrides) -> dict:
    return {
        "account_id": account,
        "amount": {"units": units, "currency": "EUR", "exponent": 2},
        "rail": "SEPA",
        "beneficiary_reference": "GB33BUKB20201555555555",
        **overrides,
    }


TOKENS: dict[str, str] = {}
"""API keys of tenant-1's principals, issued by the `api` fixture."""
ACCOUNTS = [
    f"acc-api-{RUN}{suffix}"
    for suffix in (
        "",
        "-fx",
        "-concurrent",
        "-relay",
        *(f"-k{i}" for i in range(8)),
        *(f"-ret{i}" for i in range(2)),
        *(f"-two{i}" for i in range(4)),
    )
]


def auth(user: str = "alice") -> dict:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


def headers(key: str, user: str = "alice", **extra: str) -> dict:
    return {**auth(user), "x-environment": "sandbox", "Idempotency-Key": key, **extra}


def count(conn, table: str, key: str) -> int:
    column = "idempotency_key" if table == "transfer_commands" else "key"
    return int(conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = %s", (key,)).fetchone()[0])


def outbox_rows(conn, account: str) -> int:
    return int(
        conn.execute(
            "SELECT count(*) FROM outbox WHERE aggregate_id = %s AND topic = %s", (account, TOPIC)
        ).fetchone()[0]
    )


def test_a_transfer_is_accepted_with_its_outbox_row_and_replayed_by_key(api):
    _, conn, client = api
    key = f"key-{RUN}-1"
    first = client.post(
        "/v1/transfers", json=body(), headers=headers(key, **{"x-correlation-id": f"c-{RUN}"})
    )
    assert first.status_code == 201, first.text
    assert first.json()["correlation_id"] == f"c-{RUN}" and first.headers["x-correlation-id"] == f"c-{RUN}"
    again = client.post("/v1/transfers", json=body(), headers=headers(key))
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert count(conn, "transfer_commands", key) == 1
    assert (
        conn.execute(
            "SELECT count(*) FROM outbox WHERE event_id = %s", (first.json()["event_id"],)
        ).fetchone()[0]
        == 1
    )


def test_the_same_key_with_another_body_is_refused_and_changes_nothing(api):
    _, conn, client = api
    key = f"key-{RUN}-2"
    assert client.post("/v1/transfers", json=body(units=100), headers=headers(key)).status_code == 201
    other = client.post("/v1/transfers", json=body(units=101), headers=headers(key))
    assert other.status_code == 422 and "different request body" in other.json()["detail"]
    assert count(conn, "transfer_commands", key) == 1


@pytest.mark.parametrize(
    ("payload", "hdrs", "status"),
    [
        (body(units=12.5), None, 422),  # a float amount
        (body(units=100.0), None, 422),  # even a whole float: money is an integer of minor units
        (body(units=0), None, 422),
        (body(rail="CARRIER_PIGEON"), None, 422),
        ({**body(), "surprise": 1}, None, 422),
        (body(), {"x-environment": "sandbox"}, 400),  # no Idempotency-Key
        (body(), {"x-environment": "sandbox", "Idempotency-Key": "short"}, 400),  # a malformed one
        (body(), {"x-environment": "live", "Idempotency-Key": "k" * 10}, 400),
    ],
)
def test_bad_requests_get_a_client_error_and_write_nothing(api, payload, hdrs, status):
    _, conn, client = api
    before = conn.execute(
        "SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM api_idempotency)"
    ).fetchone()
    hdrs = {**auth(), **hdrs} if hdrs else headers(f"key-{uuid.uuid4().hex}")
    response = client.post("/v1/transfers", json=payload, headers=hdrs)
    assert response.status_code == status, response.text
    assert (
        conn.execute(
            "SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM api_idempotency)"
        ).fetchone()
        == before
    )


def fx_order(account: str = f"acc-api-{RUN}-fx", units: int = 250_000, **overrides) -> dict:
    return {
        "account_id": account,
        "sell": {"units": units, "currency": "EUR", "exponent": 2},
        "buy_currency": "USD",
        "buy_exponent": 2,
        "order_type": "MARKET",
        **overrides,
    }


def test_an_fx_order_is_accepted_with_its_outbox_event(api, codec):
    _, conn, client = api
    key = f"key-{RUN}-fx1"
    first = client.post("/v1/fx/orders", json=fx_order(), headers=headers(key))
    assert first.status_code == 201, first.text
    again = client.post("/v1/fx/orders", json=fx_order(), headers=headers(key))
    assert again.status_code == 201 and again.json() == first.json()
    topic, value = conn.execute(
        "SELECT topic, value FROM outbox WHERE event_id = %s", (first.json()["event_id"],)
    ).fetchone()
    record = codec.decode(bytes(value), topic=topic)
    assert topic == "fx.order.requested.v1" and record["order_id"] == first.json()["order_id"]
    assert record["sell"] == {"units": 250_000, "currency": "EUR", "exponent": 2}
    assert (record["buy_currency"], record["order_type"]) == ("USD", "MARKET")
    assert (
        conn.execute("SELECT count(*) FROM fx_order_commands WHERE idempotency_key = %s", (key,)).fetchone()[
            0
        ]
        == 1
    )


@pytest.mark.parametrize(
    "order",
    [
        fx_order(buy_currency="EUR"),
        fx_order(units=1.5),
        fx_order(order_type="LIMIT"),
        fx_order(buy_exponent=19),
    ],
)
def test_bad_fx_orders_are_refused_and_write_nothing(api, order):
    _, conn, client = api
    before = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    response = client.post("/v1/fx/orders", json=order, headers=headers(f"key-{uuid.uuid4().hex}"))
    assert response.status_code == 422, response.text
    assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == before


HOSTILE_AMOUNTS = [
    (
        "/v1/transfers",
        body(amount={"units": 100, "currency": "USD", "exponent": 0}),
        "USD has exponent 2, not 0",
    ),
    (
        "/v1/transfers",
        body(amount={"units": 100, "currency": "EUR", "exponent": 18}),
        "EUR has exponent 2, not 18",
    ),
    ("/v1/transfers", body(amount={"units": 100, "currency": "ZZZ", "exponent": 2}), "neither an ISO 4217"),
    (
        "/v1/transfers",
        body(
            amount={"units": 10**18, "currency": "ETH", "exponent": 6}, rail="CRYPTO", travel_rule=TRAVEL_RULE
        ),
        "ETH has decimals 18, not 6",
    ),
    ("/v1/fx/orders", fx_order(buy_exponent=18), "USD has exponent 2, not 18"),
    ("/v1/fx/orders", fx_order(buy_currency="QQQ"), "neither an ISO 4217"),
    ("/v1/fx/orders", fx_order(sell={"units": 100, "currency": "JPY", "exponent": 2}), "JPY has exponent 0"),
]


def test_a_crypto_transfer_carries_its_travel_rule_data_and_is_refused_without_it(api, codec):
    _, conn, client = api
    crypto = body(
        amount={"units": 10**15, "currency": "ETH", "exponent": 18},
        rail="CRYPTO",
        beneficiary_reference="0x" + "ab" * 20,
    )
    before = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    missing = client.post("/v1/transfers", json=crypto, headers=headers(f"key-{RUN}-travel0"))
    assert missing.status_code == 422 and "must carry travel_rule" in missing.text
    stray = client.post(
        "/v1/transfers", json=body(travel_rule=TRAVEL_RULE), headers=headers(f"key-{RUN}-travel1")
    )
    assert stray.status_code == 422 and "travel_rule is for CRYPTO transfers, not SEPA" in stray.text
    unnamed = {**crypto, "travel_rule": {**TRAVEL_RULE, "beneficiary_name": ""}}
    assert (
        client.post("/v1/transfers", json=unnamed, headers=headers(f"key-{RUN}-travel2")).status_code == 422
    )
    assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == before  # nothing written
    carried = client.post(
        "/v1/transfers", json={**crypto, "travel_rule": TRAVEL_RULE}, headers=headers(f"key-{RUN}-travel3")
    )
    assert carried.status_code == 201, carried.text
    [value] = conn.execute(
        "SELECT value FROM outbox WHERE event_id = %s", (carried.json()["event_id"],)
    ).fetchone()
    assert codec.decode(bytes(value), topic=TOPIC)["travel_rule"] == TRAVEL_RULE


@pytest.mark.parametrize(("path", "command", "reason"), HOSTILE_AMOUNTS)
def test_an_exponent_the_currency_registry_does_not_have_is_refused_and_writes_nothing(
    api, path, command, reason
):
    _, conn, client = api
    key = f"key-{uuid.uuid4().hex}"
    before = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    response = client.post(path, json=command, headers=headers(key))
    assert response.status_code == 422, response.text
    assert reason in response.json()["detail"]
    assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == before
    assert count(conn, "api_idempotency", key) == 0


def test_an_fx_order_takes_the_bought_currencys_exponent_from_the_registry(api, codec):
    _, conn, client = api
    order = {k: v for k, v in fx_order(buy_currency="JPY").items() if k != "buy_exponent"}
    answer = client.post("/v1/fx/orders", json=order, headers=headers(f"key-{RUN}-jpy"))
    assert answer.status_code == 201, answer.text
    topic, value = conn.execute(
        "SELECT topic, value FROM outbox WHERE event_id = %s", (answer.json()["event_id"],)
    ).fetchone()
    assert codec.decode(bytes(value), topic=topic)["buy_exponent"] == 0


def test_an_otc_decision_is_accepted_with_the_approver_and_scoped_to_its_order(api, codec):
    _, conn, client = api
    order = client.post(
        "/v1/fx/orders", json=fx_order(order_type="OTC", units=5_000_000), headers=headers(f"key-{RUN}-otc")
    ).json()["order_id"]
    decision = {"account_id": f"acc-api-{RUN}-fx", "decision": "APPROVED", "reason": "desk limit checked"}
    key = f"key-{RUN}-otc-approval"
    approver = headers(key, user="bob")
    answer = client.post(f"/v1/fx/orders/{order}/approval", json=decision, headers=approver)
    assert answer.status_code == 201, answer.text
    topic, value = conn.execute(
        "SELECT topic, value FROM outbox WHERE event_id = %s", (answer.json()["event_id"],)
    ).fetchone()
    record = codec.decode(bytes(value), topic=topic)
    assert topic == "fx.order.approved.v1"
    assert (record["order_id"], record["approved_by"], record["decision"]) == (order, "bob", "APPROVED")
    # the same key for another order is not a replay
    other = client.post("/v1/fx/orders/another-order/approval", json=decision, headers=approver)
    assert other.status_code == 422
    # four eyes: the requester cannot approve its own order
    own = client.post(f"/v1/fx/orders/{order}/approval", json=decision, headers=headers(f"key-{RUN}-own"))
    assert own.status_code == 403 and "four eyes" in own.json()["detail"]
    # another tenant's approver does not see the order at all
    foreign = client.post(
        f"/v1/fx/orders/{order}/approval", json=decision, headers=headers(f"key-{RUN}-eve", user="eve")
    )
    assert foreign.status_code == 404


def test_a_key_used_for_a_transfer_cannot_be_reused_for_an_fx_order(api):
    _, _, client = api
    key = f"key-{RUN}-cross"
    assert client.post("/v1/transfers", json=body(), headers=headers(key)).status_code == 201
    assert client.post("/v1/fx/orders", json=fx_order(), headers=headers(key)).status_code == 422


def test_concurrent_requests_with_one_key_have_one_effect(api):
    _, conn, client = api
    key = f"key-{RUN}-concurrent"
    account = f"acc-api-{RUN}-concurrent"
    with ThreadPoolExecutor(10) as pool:
        responses = list(
            pool.map(
                lambda _: client.post("/v1/transfers", json=body(account), headers=headers(key)), range(10)
            )
        )
    first = [r for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r.headers]
    assert len(first) == 1
    # the others were told the key is in flight (409, at once), or got the stored answer
    assert {r.status_code for r in responses if r is not first[0]} <= {201, 409}
    replays = [r for r in responses if r.headers.get("Idempotent-Replayed") == "true"]
    assert {r.json()["transfer_id"] for r in replays} <= {first[0].json()["transfer_id"]}
    assert count(conn, "transfer_commands", key) == 1 and outbox_rows(conn, account) == 1


def test_the_relay_publishes_decodable_events_keyed_by_account(services, codec, catalog, api):
    db, conn, client = api
    account = f"acc-api-{RUN}-relay"
    ids = [
        client.post(
            "/v1/transfers", json=body(account, units=n + 1), headers=headers(f"key-{RUN}-r{n}")
        ).json()
        for n in range(5)
    ]
    OutboxRelay(db.as_database_role("outbox_relay"), codec, catalog).run(idle_exit=1)
    assert conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0] == 0
    mine = [m for m in read_all(services, TOPIC) if m.key() == account.encode()]
    records = [codec.decode(m.value(), topic=TOPIC) for m in mine]
    assert [r["transfer_id"] for r in records] == [i["transfer_id"] for i in ids]  # in order, per account
    assert [r["amount"]["units"] for r in records] == [1, 2, 3, 4, 5]
    assert {r["metadata"]["idempotency_key"] for r in records} == {f"key-{RUN}-r{n}" for n in range(5)}


def test_two_relays_at_once_keep_each_account_in_order_and_publish_once(services, codec, catalog, api):
    db, conn, client = api
    accounts = [f"acc-api-{RUN}-two{i}" for i in range(4)]
    sent: dict[str, list[str]] = {a: [] for a in accounts}
    for n in range(120):
        account = accounts[n % 4]
        answer = client.post(
            "/v1/transfers", json=body(account, units=n + 1), headers=headers(f"key-{RUN}-two{n}")
        )
        sent[account].append(answer.json()["transfer_id"])
    relays = [
        OutboxRelay(db.as_database_role("outbox_relay"), codec, catalog, batch_size=7) for _ in range(2)
    ]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda relay: relay.run(idle_exit=1, poll=0.01), relays))
    assert conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0] == 0
    on_topic = [m for m in read_all(services, TOPIC) if (m.key() or b"").decode() in sent]
    got: dict[str, list[str]] = {a: [] for a in accounts}
    for m in on_topic:
        got[m.key().decode()].append(codec.decode(m.value(), topic=TOPIC)["transfer_id"])
    assert got == sent  # each account in order, each event once


def test_killing_the_relay_mid_batch_loses_and_duplicates_nothing_downstream(services, codec, catalog, api):
    db, conn, client = api
    accounts = [f"acc-api-{RUN}-k{i}" for i in range(8)]
    expected = set()
    with ThreadPoolExecutor(4) as pool:
        for r in pool.map(
            lambda n: client.post(
                "/v1/transfers", json=body(accounts[n % 8], units=n + 1), headers=headers(f"key-{RUN}-k{n}")
            ),
            range(200),
        ):
            assert r.status_code == 201
            expected.add(r.json()["transfer_id"])
    env = {**os.environ, "DATABASE_URL": db.database_url.get_secret_value(), "SCHEMA_REGISTRY_URL": ""}
    relay = [sys.executable, "-m", "ops.cli", "connect", "outbox-relay", "--batch-size", "50"]
    with psycopg.connect(db.database_url.get_secret_value()) as blocker:
        # SHARE mode lets the relay claim rows (FOR UPDATE takes ROW SHARE) but not update them
        # (ROW EXCLUSIVE): it publishes its first batch, then waits to mark it published
        blocker.execute("LOCK TABLE outbox IN SHARE MODE")
        proc = subprocess.Popen(
            relay, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        stuck = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE outbox%%'"
        wait_for(
            lambda: conn.execute(stuck).fetchone()[0] == 1, 60, what="the relay to publish and wait to mark"
        )
        proc.send_signal(signal.SIGKILL)  # after Kafka acknowledged the batch, before it was marked
        proc.wait(30)
        blocker.rollback()
    assert (
        conn.execute(
            "SELECT count(*) FROM outbox WHERE status = 'published' AND aggregate_id LIKE %s AND topic = %s",
            (f"acc-api-{RUN}-k%", TOPIC),
        ).fetchone()[0]
        == 0
    )
    OutboxRelay(db.as_database_role("outbox_relay"), codec, catalog).run(
        idle_exit=1
    )  # a fresh relay publishes everything, the batch again
    assert conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0] == 0
    on_topic = [
        m for m in read_all(services, TOPIC) if (m.key() or b"").startswith(f"acc-api-{RUN}-k".encode())
    ]
    assert len(on_topic) > len(expected)  # the killed batch is on the topic twice
    # a new group reads the topic from its start, other tests' registry-framed events too
    reader = codec_from_settings(db)
    try:
        SinkRunner(
            db.as_database_role("transfers_sink"),
            TransferRequestSink(),
            reader,
            linger=0.05,
            group_id=f"api-{RUN}",
        ).run(idle_exit=3)
    finally:
        reader.close()
    stored = conn.execute(
        "SELECT transfer_id, count(*) FROM transfer_requests WHERE account_id LIKE %s GROUP BY transfer_id",
        (f"acc-api-{RUN}-k%",),
    ).fetchall()
    assert {t for t, _ in stored} == expected  # nothing lost
    assert all(n == 1 for _, n in stored)  # the repeats absorbed by event id


def test_retention_deletes_only_what_has_served_its_purpose(api):
    from connectors.retention import purge

    _, conn, client = api
    keys = [f"key-{RUN}-old", f"key-{RUN}-fresh"]
    for n, key in enumerate(keys):
        assert (
            client.post("/v1/transfers", json=body(f"acc-api-{RUN}-ret{n}"), headers=headers(key)).status_code
            == 201
        )
    conn.execute(
        "UPDATE api_idempotency SET expires_at = now() - interval '1 second' WHERE key = %s", (keys[0],)
    )
    conn.execute(
        "UPDATE outbox SET status = 'published', published_at = now() - interval '8 days'"
        " WHERE aggregate_id = %s",
        (f"acc-api-{RUN}-ret0",),
    )
    counted = purge(conn, dry_run=True)
    assert counted.idempotency_keys >= 1 and counted.outbox_rows >= 1
    assert purge(conn) == counted  # the dry run counted exactly what the purge deletes
    assert count(conn, "api_idempotency", keys[0]) == 0 and count(conn, "api_idempotency", keys[1]) == 1
    assert outbox_rows(conn, f"acc-api-{RUN}-ret0") == 0 and outbox_rows(conn, f"acc-api-{RUN}-ret1") == 1
    # an expired key is a new command
    assert (
        client.post("/v1/transfers", json=body(f"acc-api-{RUN}-ret0"), headers=headers(keys[0])).status_code
        == 201
    )


def test_accounts_are_opened_and_frozen_through_the_api_with_their_events(api, codec):
    _, conn, client = api
    account = f"acc-api-{RUN}-reg"
    opening = {"account_id": account, "currency": "KWD", "holder": "A. Customer", "overdraft_limit": 5_000}
    first = client.post("/v1/accounts", json=opening, headers=headers(f"key-{RUN}-open"))
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "opened"
    again = client.post("/v1/accounts", json=opening, headers=headers(f"key-{RUN}-open"))
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    row = conn.execute(
        "SELECT exponent, status, overdraft_limit FROM accounts WHERE tenant_id = 'tenant-1' AND account_id = %s",
        (account,),
    ).fetchone()
    assert row == (3, "active", 5_000)  # KWD's exponent from ISO 4217, not from the caller
    freeze = {"status": "frozen", "reason": "chargeback review"}
    frozen = client.post(f"/v1/accounts/{account}/status", json=freeze, headers=headers(f"key-{RUN}-freeze"))
    assert frozen.status_code == 201 and frozen.json() == {
        "status": "changed",
        "account_id": account,
        "correlation_id": frozen.json()["correlation_id"],
        "currencies": ["KWD"],
    }
    events = [
        codec.decode(bytes(value), topic=topic)
        for topic, value in conn.execute(
            "SELECT topic, value FROM outbox WHERE aggregate_id = %s ORDER BY id", (account,)
        ).fetchall()
    ]
    assert [e["metadata"]["event_type"] for e in events] == [
        "accounts.account.opened",
        "accounts.account.status_changed",
    ]
    assert events[0]["overdraft_limit"] == {"units": 5_000, "currency": "KWD", "exponent": 3}
    assert (events[1]["from_status"], events[1]["to_status"]) == ("active", "frozen")


@pytest.mark.parametrize(
    ("path", "command", "status"),
    [
        ("/v1/accounts", {"account_id": "a", "currency": "ZZZ", "holder": "h"}, 422),
        ("/v1/accounts", {"account_id": "a", "currency": "EUR", "holder": "h", "overdraft_limit": 1.5}, 422),
        ("/v1/accounts", {"account_id": "a", "currency": "EUR", "holder": "h", "overdraft_limit": -1}, 422),
        (f"/v1/accounts/nobody-{RUN}/status", {"status": "frozen"}, 404),
    ],
)
def test_bad_account_commands_are_refused_and_write_nothing(api, path, command, status):
    _, conn, client = api
    before = conn.execute("SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM accounts)").fetchone()
    key = f"key-{uuid.uuid4().hex}"
    response = client.post(path, json=command, headers=headers(key))
    assert response.status_code == status, response.text
    assert (
        conn.execute("SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM accounts)").fetchone()
        == before
    )
    assert count(conn, "api_idempotency", key) == 0


def test_a_key_in_flight_answers_409_at_once_and_the_same_key_from_another_caller_is_another_request(api):
    db, conn, client = api
    key = f"key-{RUN}-inflight"
    with psycopg.connect(db.database_url.get_secret_value()) as holder:
        holder.execute(
            "SELECT pg_advisory_xact_lock(hashtext('tenant-1'), hashtext(%s))", (key,)
        )  # in flight
        started = time.monotonic()
        busy = client.post("/v1/transfers", json=body(), headers=headers(key))
        assert busy.status_code == 409 and time.monotonic() - started < 2
        holder.rollback()
    assert count(conn, "api_idempotency", key) == 0
    mine = client.post("/v1/transfers", json=body(), headers=headers(key, user="alice"))
    assert mine.status_code == 201
    theirs = client.post("/v1/transfers", json=body(), headers=headers(key, user="bob"))
    assert theirs.status_code == 422  # not alice's stored answer


def test_who_may_call_decides_what_is_written(api):
    """The matrix: no key, a bad key, a revoked key, a missing scope, another tenant's account, a
    tenant header the caller sets. Each is refused, with nothing written."""
    db, conn, client = api
    with psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as admin:
        revoked_id, revoked = issue_key(admin, "tenant-1", "leaver", list(SCOPES))
        assert revoke_key(admin, revoked_id)
    forged = TOKENS["alice"][:-4] + "AAAA"
    cases = [
        ("/v1/transfers", body(), {}, 401),  # no credential
        ("/v1/transfers", body(), {"Authorization": "Bearer nonsense"}, 401),
        ("/v1/transfers", body(), {"Authorization": f"Bearer {forged}"}, 401),  # right id, wrong secret
        ("/v1/transfers", body(), {"Authorization": f"Bearer {revoked}"}, 401),
        ("/v1/transfers", body(), {"Authorization": f"Basic {TOKENS['alice']}"}, 401),
        ("/v1/transfers", body(), auth("reader"), 403),  # no transfers:write
        ("/v1/fx/orders", fx_order(), auth("reader"), 403),  # no fx:write
        ("/v1/transfers", body(f"acc-api-{RUN}-other"), auth("alice"), 403),  # tenant-2's account
        ("/v1/transfers", body(destination_account_id=f"acc-api-{RUN}-other"), auth("alice"), 403),
        ("/v1/transfers", body(), auth("eve"), 403),  # tenant-2's key, tenant-1's account
        (
            "/v1/transfers",
            body(),
            {**auth("eve"), "x-tenant-id": "tenant-1"},
            403,
        ),  # the header changes nothing
        ("/v1/fx/orders", fx_order(account=f"acc-api-{RUN}-other"), auth("alice"), 403),
    ]
    statuses = []
    for path, command, credentials, _ in cases:
        before = conn.execute("SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM api_idempotency)")
        key = f"key-{uuid.uuid4().hex}"
        response = client.post(
            path, json=command, headers={"x-environment": "sandbox", "Idempotency-Key": key, **credentials}
        )
        statuses.append(response.status_code)
        after = conn.execute("SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM api_idempotency)")
        assert after.fetchone() == before.fetchone(), (path, credentials)
        if response.status_code == 401:
            assert response.headers["WWW-Authenticate"] == "Bearer"
    assert statuses == [c[3] for c in cases]


def test_the_audit_actor_is_the_authenticated_principal(api, codec):
    _, conn, client = api
    answer = client.post("/v1/transfers", json=body(), headers=headers(f"key-{RUN}-actor", user="bob"))
    assert answer.status_code == 201
    topic, value = conn.execute(
        "SELECT topic, value FROM outbox WHERE event_id = %s", (answer.json()["event_id"],)
    ).fetchone()
    meta = codec.decode(bytes(value), topic=topic)["metadata"]
    assert (meta["tenant_id"], meta["user_id"]) == ("tenant-1", "bob")
