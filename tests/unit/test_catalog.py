from __future__ import annotations

import copy
import tomllib

import pytest

from topics.catalog import CATALOG_FILE, TOPIC_NAME, parse_catalog
from topics.errors import CatalogError


def test_every_topic_name_follows_the_convention(catalog):
    bad = [name for name in catalog.topics if not TOPIC_NAME.match(name)]
    assert bad == []


@pytest.mark.parametrize(
    "name",
    ["payments.transfer.requested", "Payments.transfer.requested.v1", "payments.requested.v1", "a.b.c.v0"],
)
def test_malformed_names_are_rejected(name):
    assert not TOPIC_NAME.match(name)


def test_money_topics_are_keyed_by_account_and_co_partitioned(catalog):
    money = [t for t in catalog.topics.values() if t.money]
    assert len(money) >= 20
    assert {t.key_field for t in money} == {"account_id"}
    assert {t.partitions for t in money} == {catalog.money_partitions}


def test_every_schema_topic_has_a_schema_and_every_schema_a_topic(catalog, store):
    assert set(catalog.schema_topics()) == set(store.topics())


def test_every_consumer_has_its_own_dead_letter_topic(catalog):
    dlqs = {c.dlq for c in catalog.consumers.values()}
    assert len(dlqs) == len(catalog.consumers)
    for dlq in dlqs:
        assert catalog.topic(dlq).value_schema == "raw"
        assert catalog.topic(dlq).kind == "dlq"


def test_profiles_dev_and_prod(catalog):
    assert (catalog.profile("dev").replication_factor, catalog.profile("dev").min_insync_replicas) == (1, 1)
    assert (catalog.profile("prod").replication_factor, catalog.profile("prod").min_insync_replicas) == (3, 2)
    with pytest.raises(CatalogError, match="unknown topic profile"):
        catalog.profile("staging")


def test_the_mission_is_covered(catalog):
    names = set(catalog.topics)
    for required in [
        "banking.transaction.received.v1",
        "cards.transaction.received.v1",
        "crypto.wallet.transfer.detected.v1",
        "crypto.wallet.transfer.confirmed.v1",
        "crypto.wallet.transfer.reorged.v1",
        "payments.transfer.requested.v1",
        "fx.rate.updated.v1",
        "billing.fee.assessed.v1",
        "fx.conversion.executed.v1",
        "payments.transaction.status_changed.v1",
        "payments.transaction.completed.v1",
        "payments.transaction.failed.v1",
        "compliance.aml.flagged.v1",
        "billing.invoice.line_item_added.v1",
        "ledger.journal.posted.v1",
        "audit.events.log.v1",
    ]:
        assert required in names


def _doc():
    return tomllib.loads(CATALOG_FILE.read_text())


def test_a_money_topic_with_another_partition_count_is_refused():
    doc = copy.deepcopy(_doc())
    doc["topic"][0]["partitions"] = 5
    with pytest.raises(CatalogError, match="keyed by account_id"):
        parse_catalog(doc)


def test_a_badly_named_topic_is_refused():
    doc = copy.deepcopy(_doc())
    doc["topic"][0]["name"] = "BankTransactions"
    with pytest.raises(CatalogError, match="name must be"):
        parse_catalog(doc)


def test_a_consumer_of_an_unknown_topic_is_refused():
    doc = copy.deepcopy(_doc())
    doc["consumer"][0]["inputs"].append("payments.nothing.happened.v1")
    with pytest.raises(CatalogError, match="not in the catalog"):
        parse_catalog(doc)


def test_key_of_follows_a_dotted_path(catalog):
    audit = catalog.topic("audit.events.log.v1")
    assert audit.key_of({"metadata": {"correlation_id": "c-9"}}) == "c-9"
    assert catalog.topic("payments.transfer.requested.v1").key_of({"account_id": "acc-7"}) == "acc-7"
