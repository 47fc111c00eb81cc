"""The components' PostgreSQL roles as sinks/roles.toml declares them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from sinks.roles import Privilege, RolesError, load_roles, parse_privileges, parse_roles
from topics import settings as settings_module
from topics.catalog import Catalog
from topics.settings import Settings, database_role

CONNECTORS = {
    settings_module.API,
    settings_module.WEBHOOKS,
    settings_module.CHAIN_LISTENER,
    settings_module.CHAIN_SENDER,
    settings_module.PAYOUT_DISPATCHER,
}


def test_every_component_has_a_role_and_every_role_is_a_component(catalog: Catalog) -> None:
    components = set(catalog.consumers) | {p.name for p in catalog.producers.values() if not p.external}
    assert set(load_roles().names()) == components | CONNECTORS


def test_agents_without_tables_may_touch_none() -> None:
    roles = load_roles().roles
    for name in ("fees_agent", "aml_agent", "ledger_agent"):
        assert roles[name].tables == {}, name


def test_no_component_may_write_the_ledger_but_the_ledger_sink() -> None:
    writers = {
        name
        for name, role in load_roles().roles.items()
        for table in ("journal_entries", "entries", "balances", "ledger_accounts")
        if any(p.name != "select" for p in role.tables.get(table, ()))
    }
    assert writers == {"ledger_sink"}


def test_a_lock_needs_only_a_harmless_column() -> None:
    assert parse_privileges("accounts", "select, update(updated_at)") == (
        Privilege("select"),
        Privilege("update", ("updated_at",)),
    )
    webhooks = load_roles().roles["webhooks"].tables["accounts"]
    assert Privilege("update", ("updated_at",)) in webhooks  # may lock an account, not change its limit


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("select, truncate", "'truncate' is not a privilege"),
        ("insert(amount)", "only select and update may name columns"),
        ("select, select", "named twice"),
        ("update(amount; drop)", "is not a privilege"),
    ],
)
def test_a_bad_privilege_is_refused_by_name(text: str, complaint: str) -> None:
    with pytest.raises(RolesError, match=complaint):
        parse_privileges("t", text)


def test_an_owner_only_table_cannot_be_granted() -> None:
    doc = {"owner_only": ["tenants"], "role": [{"name": "api", "tables": {"tenants": "select"}}]}
    with pytest.raises(RolesError, match="tenants is owner_only"):
        parse_roles(doc)


def test_a_role_declared_twice_or_with_unknown_keys_is_refused() -> None:
    with pytest.raises(RolesError, match="declared twice"):
        parse_roles({"role": [{"name": "api"}, {"name": "api"}]})
    with pytest.raises(RolesError, match="unknown keys grants"):
        parse_roles({"role": [{"name": "api", "grants": {}}]})


def test_a_process_takes_its_database_role_from_the_credentials_file(tmp_path: Path) -> None:
    creds = tmp_path / "database.json"
    creds.write_text(json.dumps({"fees_sink": "fees-db-secret"}))
    settings = Settings(
        DATABASE_URL="postgresql://ledgerstream@db.internal:5432/ledgerstream",
        LEDGERSTREAM_DATABASE_CREDENTIALS=str(creds),
        LEDGERSTREAM_KAFKA_CREDENTIALS=str(tmp_path / "none.json"),
    )
    own = conninfo_to_dict(settings.as_principal("fees_sink").database_url.get_secret_value())
    assert own["user"] == database_role("fees_sink") == "ledgerstream_fees_sink"
    assert (own["password"], own["host"], own["dbname"]) == ("fees-db-secret", "db.internal", "ledgerstream")
    assert settings.as_principal("api") is settings  # production: DATABASE_URL names the role


def test_an_unreadable_database_credentials_file_is_a_clear_error(tmp_path: Path) -> None:
    from topics.errors import ConfigError

    creds = tmp_path / "database.json"
    creds.write_text('["not", "an", "object"]')
    settings = Settings(LEDGERSTREAM_DATABASE_CREDENTIALS=str(creds))
    with pytest.raises(ConfigError, match="expected a JSON object"):
        settings.as_principal("fees_sink")
