"""A row Kafka refuses does not stop the relay or the other accounts: it is tried again on a
schedule, then failed, and its account's later rows wait behind it until an operator puts it
back (real Kafka and PostgreSQL)."""

from __future__ import annotations

import os
import threading
import uuid

import psycopg
import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from connectors.outbox import OutboxRelay
from ops.cli import main
from ops.topic_admin import wait_for_leaders
from tests.fixtures.database import private_database
from tests.fixtures.events import transfer_requested
from tests.fixtures.kafka import read_all
from tests.fixtures.waiting import wait_for
from topics.codec import AvroCodec
from topics.outbox import outbox_row
from topics.schemas import load_store
from topics.settings import REPO_ROOT

RUN = uuid.uuid4().hex[:8]
SMALL_LIMIT = 20_000
"""The small topic's `max.message.bytes`: the broker refuses a row larger than this."""


def account(name: str) -> str:
    return f"ob-{RUN}-{name}"


@pytest.fixture(scope="module")
def codec():
    return AvroCodec(load_store(REPO_ROOT / "avro"))


@pytest.fixture(scope="module")
def relayed(services, codec, catalog):
    admin = AdminClient(services.kafka_config())
    small, plain = f"test.refusals.small{RUN}.v1", f"test.refusals.plain{RUN}.v1"
    topics = [
        NewTopic(
            small, num_partitions=1, replication_factor=1, config={"max.message.bytes": str(SMALL_LIMIT)}
        ),
        NewTopic(plain, num_partitions=1, replication_factor=1),
    ]
    for future in admin.create_topics(topics).values():
        future.result(30)
    wait_for_leaders(admin, [small, plain])
    with (
        private_database(services) as db,
        psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn,
    ):
        yield db, conn, admin, small, plain


def add(conn, codec, catalog, topic: str, name: str, value: bytes | None = None) -> int:
    """An outbox row for account `name`: a transfer request's bytes, or `value` (e.g. too large)."""
    row = list(
        outbox_row(codec, catalog, "payments.transfer.requested.v1", transfer_requested(account(name)))
    )
    row[1] = topic
    if value is not None:
        row[5] = value
    return conn.execute(
        "INSERT INTO outbox (aggregate_id, topic, event_id, event_type, key, value, headers) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        row,
    ).fetchone()[0]


def state(conn, row_id: int) -> tuple[str, int, int]:
    return conn.execute("SELECT status, refusals, attempts FROM outbox WHERE id = %s", (row_id,)).fetchone()


def on_topic(services, topic: str) -> list[str]:
    return [m.key().decode() for m in read_all(services, topic)]


def test_refused_rows_are_retried_then_failed_holding_only_their_accounts(
    relayed, services, codec, catalog, capsys
):
    db, conn, admin, small, plain = relayed
    broker_refuses = add(
        conn, codec, catalog, small, "a", os.urandom(4 * SMALL_LIMIT)
    )  # the broker says too large (compressed too)
    producer_refuses = add(
        conn, codec, catalog, plain, "c", os.urandom(2_000_000)
    )  # over the producer's limit
    behind_c = add(conn, codec, catalog, plain, "c")
    others = [add(conn, codec, catalog, plain, "b") for _ in range(2)]
    relay = OutboxRelay(db.as_database_role("outbox_relay"), codec, catalog, retry_delays=(0.3, 0.3, 0.3))

    assert relay.publish_batch(conn) == 2  # the other account's rows go on
    assert [state(conn, i)[0] for i in others] == ["published", "published"]
    assert state(conn, broker_refuses) == ("pending", 1, 1)  # refused once, to be tried again
    assert state(conn, producer_refuses) == ("pending", 1, 1)
    assert state(conn, behind_c) == ("pending", 0, 0)  # never sent: it waits behind the refused row
    behind_a = add(conn, codec, catalog, plain, "a")  # arrives while its account waits

    stop = threading.Event()
    runner = threading.Thread(target=relay.run, kwargs={"stop": stop, "poll": 0.02})
    runner.start()
    try:
        wait_for(
            lambda: state(conn, broker_refuses)[0] == state(conn, producer_refuses)[0] == "failed",
            60,
            what="both refused rows failed after their retries",
        )
        later = add(conn, codec, catalog, plain, "b")  # the relay still serves every other account
        wait_for(lambda: state(conn, later)[0] == "published", 30, what="a later row of another account")
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive()
    assert state(conn, broker_refuses)[:2] == ("failed", 4)  # the first try and three retries
    assert state(conn, producer_refuses)[:2] == ("failed", 4)
    assert state(conn, behind_a) == state(conn, behind_c) == ("pending", 0, 0)  # held, never sent
    assert on_topic(services, plain) == [account("b")] * 3
    assert on_topic(services, small) == []
    error = conn.execute("SELECT last_error FROM outbox WHERE id = %s", (broker_refuses,)).fetchone()[0]
    assert "MSG_SIZE_TOO_LARGE" in error

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", db.database_url.get_secret_value())
        assert main(["connect", "outbox-failed"]) == 1
        listed = capsys.readouterr().out
        assert str(broker_refuses) in listed and str(producer_refuses) in listed and "2 failed rows" in listed
        # the cause of account a's refusal is fixed: the topic takes larger messages
        resource = ConfigResource(
            ConfigResource.Type.TOPIC,
            small,
            incremental_configs=[
                ConfigEntry("max.message.bytes", "1000000", incremental_operation=AlterConfigOpType.SET)
            ],
        )
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(30)
        assert main(["connect", "outbox-failed", "--retry", "--account", account("a")]) == 0
        assert "1 failed rows put back" in capsys.readouterr().out

    def account_a_published() -> bool:
        return state(conn, broker_refuses)[0] == state(conn, behind_a)[0] == "published"

    wait_for(lambda: relay.publish_batch(conn) >= 0 and account_a_published(), 30, what="account a published")
    assert on_topic(services, small) == [account("a")]
    assert on_topic(services, plain)[-1] == account("a")  # its later row only after it
    assert state(conn, producer_refuses)[0] == "failed" and state(conn, behind_c)[0] == "pending"
