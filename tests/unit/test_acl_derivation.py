"""The ACLs the catalog implies: least privilege per principal."""

from __future__ import annotations

from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType

from ops.kafka_acl import derived_acls
from topics.catalog import Catalog, dlq_topic
from topics.settings import Settings

STATUS_REPORTS = "payments.transaction.status_reported.v1"


def grants(catalog: Catalog, who: str, op: AclOperation) -> set[str]:
    return {
        b.name
        for b in derived_acls(catalog)
        if b.principal == f"User:{who}" and b.operation == op and b.restype == ResourceType.TOPIC
    }


def test_a_sink_writes_only_its_dead_letters(catalog: Catalog) -> None:
    for consumer in catalog.consumers.values():
        if consumer.kind == "sink":
            assert grants(catalog, consumer.name, AclOperation.WRITE) == {dlq_topic(consumer.name)}


def test_only_the_relay_writes_status_reports(catalog: Catalog) -> None:
    writers = {
        b.principal
        for b in derived_acls(catalog)
        if b.name == STATUS_REPORTS and b.operation == AclOperation.WRITE
    }
    assert writers == {"User:outbox_relay"}


def test_an_agent_reads_its_inputs_and_writes_its_outputs_and_dead_letters(catalog: Catalog) -> None:
    ledger = catalog.consumers["ledger_agent"]
    assert grants(catalog, "ledger_agent", AclOperation.READ) == set(ledger.inputs)
    assert grants(catalog, "ledger_agent", AclOperation.WRITE) == {"ledger.journal.posted.v1", ledger.dlq}


def test_analysts_read_every_event_topic_but_no_dead_letters_and_write_nothing(catalog: Catalog) -> None:
    read = grants(catalog, "analyst", AclOperation.READ)
    assert read == set(catalog.schema_topics())
    assert not any(name.startswith("dlq.") for name in read)
    assert grants(catalog, "analyst", AclOperation.WRITE) == set()


def test_groups_are_prefixed_by_the_principal_and_producers_have_none(catalog: Catalog) -> None:
    groups = {
        b.principal: (b.name, b.resource_pattern_type)
        for b in derived_acls(catalog)
        if b.restype == ResourceType.GROUP
    }
    assert groups["User:status_agent"] == ("ledgerstream.status_agent", ResourcePatternType.PREFIXED)
    assert "User:outbox_relay" not in groups and "User:upstream" not in groups


def test_a_process_takes_its_principal_from_the_credentials_file(tmp_path: object) -> None:
    from pathlib import Path

    creds = Path(str(tmp_path)) / "credentials.json"
    creds.write_text('{"admin": "op-secret", "fees_agent": "fees-secret"}')
    settings = Settings(LEDGERSTREAM_KAFKA_CREDENTIALS=str(creds), KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT")
    assert settings.kafka_config()["sasl.username"] == "admin"
    fees = settings.as_principal("fees_agent").kafka_config()
    assert (fees["sasl.username"], fees["sasl.password"]) == ("fees_agent", "fees-secret")
    assert settings.as_principal("not_in_file") is settings  # production: the env names the principal


def test_sasl_without_a_password_is_a_clear_error(tmp_path: object) -> None:
    import pytest

    from topics.errors import ConfigError

    settings = Settings(
        LEDGERSTREAM_KAFKA_CREDENTIALS=f"{tmp_path}/none.json", KAFKA_SASL_USERNAME="fees_agent"
    )
    with pytest.raises(ConfigError, match="no password is set for 'fees_agent'"):
        settings.kafka_config()


def test_the_prod_profile_requires_tls_and_acls(catalog: Catalog) -> None:
    prod = catalog.profile("prod")
    assert prod.require_acls and prod.security_protocols == ("SASL_SSL",)
    assert not catalog.profile("dev").require_acls
