"""The broker enforces the catalog's ACLs: each principal does only what the catalog names."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from ops.kafka_acl import apply_acls
from topics.catalog import Catalog
from topics.settings import Settings

STATUS_REPORTS = "payments.transaction.status_reported.v1"


@pytest.fixture(scope="module")
def enforced(services: Settings, catalog: Catalog) -> Settings:
    if not apply_acls(services, catalog).enforced:
        pytest.skip("this broker runs without an authorizer (a test container); the local stack has one")
    return services


def produce_error(settings: Settings, topic: str) -> KafkaError | None:
    """Produce one record and return the broker's answer (None: acknowledged)."""
    answers: list[KafkaError | None] = []
    producer = Producer(settings.kafka_config(**{"acks": "all", "message.timeout.ms": 15000}))
    producer.produce(
        topic, value=b"not a real report", key=b"acc-acl", on_delivery=lambda e, m: answers.append(e)
    )
    assert producer.flush(20) == 0, "the broker never answered"
    return answers[0]


def test_a_sink_cannot_produce_a_status_report(enforced: Settings) -> None:
    error = produce_error(enforced.as_principal("ledger_sink"), STATUS_REPORTS)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_an_agent_cannot_produce_outside_its_outputs(enforced: Settings) -> None:
    fees = enforced.as_principal("fees_agent")
    refused = produce_error(fees, "ledger.journal.posted.v1")
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_an_upstream_publisher_writes_rates_but_not_reports(enforced: Settings) -> None:
    upstream = enforced.as_principal("upstream")
    refused = produce_error(upstream, STATUS_REPORTS)
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def read_error(settings: Settings, topic: str, group: str) -> KafkaError | None:
    """Join `group` on `topic` and fetch: the first error, or None once it was assigned and read."""
    assigned: list[TopicPartition] = []
    consumer = Consumer(
        settings.kafka_config(
            **{"group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
        )
    )
    try:
        consumer.subscribe([topic], on_assign=lambda c, parts: assigned.extend(parts))
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is not None:
                error: KafkaError = msg.error()
                return error
            if msg is not None or assigned:
                return None
        raise AssertionError(f"neither an assignment nor an error for {group} on {topic} in 30s")
    finally:
        consumer.close()


def test_an_analyst_reads_events_but_not_dead_letters_or_foreign_groups(enforced: Settings) -> None:
    analyst = enforced.as_principal("analyst")
    assert read_error(analyst, "ledger.journal.posted.v1", f"ledgerstream.analyst.{uuid.uuid4()}") is None
    refused = read_error(analyst, "dlq.ledger_sink.dead_lettered.v1", f"ledgerstream.analyst.{uuid.uuid4()}")
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    foreign = read_error(analyst, "ledger.journal.posted.v1", f"ledgerstream.ledger_sink.{uuid.uuid4()}")
    assert foreign is not None and foreign.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    assert produce_error(analyst, "ledger.journal.posted.v1") is not None


def test_a_wrong_password_is_refused(enforced: Settings) -> None:
    from pydantic import SecretStr

    wrong = enforced.as_principal("fees_agent").model_copy(update={"kafka_sasl_password": SecretStr("guess")})
    errors: list[KafkaError] = []
    admin = AdminClient(
        wrong.kafka_config(**{"socket.timeout.ms": 2000, "error_cb": errors.append, "log_level": 0})
    )
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=2)
    admin.poll(1)  # serves the error callback
    assert KafkaError._AUTHENTICATION in {e.code() for e in errors}


def test_the_cli_refuses_a_group_outside_the_principal_in_one_line(enforced: Settings) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "agent", "fees", "--group", "someone-else", "--idle-exit", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "may only use groups starting 'ledgerstream.fees_agent'" in done.stderr
    assert "Traceback" not in done.stderr


class _Nothing:
    """A work that is never handed a batch: the group is refused before any arrives."""

    name = "transfers_sink"
    topics = ("payments.transfer.requested.v1",)
    transient = ()
    overlap = 1

    def prepare(self, events):
        return [None] * len(events)

    def start(self):
        pass

    def work(self, events, prepared):
        raise AssertionError("no batch may reach a worker its group refuses")

    def close(self):
        pass


def test_a_worker_refused_its_group_stops_with_what_to_fix(enforced: Settings) -> None:
    from topics.codec import codec_from_settings
    from topics.runtime import BatchRuntime, WorkerStopped

    codec = codec_from_settings(enforced)
    try:
        # the upstream publisher may use no consumer group at all
        runtime = BatchRuntime(enforced.as_principal("upstream"), _Nothing(), codec)
        with pytest.raises(WorkerStopped, match=r"principal upstream.*ledgerstream topics apply") as stopped:
            runtime.run(idle_exit=60)
    finally:
        codec.close()
    assert "AUTHORIZATION" in str(stopped.value).upper()
