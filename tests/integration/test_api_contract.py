"""Schemathesis against the command API's own OpenAPI document, on a real server and database:
generated requests, valid and invalid, must never get a 500 or a response outside the schema."""

from __future__ import annotations

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from connectors.admin import admin_app
from connectors.api import create_app
from connectors.auth import SCOPES, create_tenant, issue_key
from ops.dev.serving import serving
from tests.fixtures.database import private_database
from tests.fixtures.ledger import open_accounts
from topics.codec import AvroCodec
from topics.schemas import load_store
from topics.settings import REPO_ROOT

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
REGISTERED = [("EUR", 2), ("JPY", 0), ("KWD", 3), ("ETH", 18), ("USDC", 6)]
"""Currencies and exponents the registry has: a schema cannot say which pairs are real (the asset table
is data), so positive cases draw their money from these and everything else from the schema."""


def registered_money(body: object) -> None:
    """Give a generated valid command a currency and exponent the registry knows, and an account of
    the caller's tenant."""
    if not isinstance(body, dict):
        return
    if "account_id" in body and "holder" not in body:
        body["account_id"] = ACCOUNT
    if body.get("destination_account_id") is not None:
        body["destination_account_id"] = ACCOUNT
    for field in ("amount", "sell"):
        money = body.get(field)
        if isinstance(money, dict) and "currency" in money:
            money["currency"], money["exponent"] = REGISTERED[len(str(money)) % len(REGISTERED)]
    if "currency" in body and "holder" in body:  # opening an account
        body["currency"] = REGISTERED[len(str(body)) % len(REGISTERED)][0]
    if "buy_currency" in body:
        sold = body.get("sell", {}).get("currency") if isinstance(body.get("sell"), dict) else None
        body["buy_currency"], exponent = next((c, e) for c, e in REGISTERED if c != sold)
        if body.get("buy_exponent") is not None:
            body["buy_exponent"] = exponent


TOKEN: list[str] = []
ACCOUNT = "acc-contract"


@pytest.fixture(scope="module")
def served(services, catalog):
    with private_database(services) as db:
        with psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn:
            create_tenant(conn, "tenant-1", "Tenant One")
            TOKEN.append(issue_key(conn, "tenant-1", "contract", list(SCOPES))[1])
        for currency, _ in REGISTERED:
            open_accounts(db, [ACCOUNT], currency)
        app = create_app(db.as_database_role("api"), AvroCodec(load_store(REPO_ROOT / "avro")), catalog)
        with serving(app) as url, serving(admin_app(app)) as admin_url:
            yield db, url, admin_url


@pytest.fixture(scope="module")
def api_schema(served):
    _, url, admin_url = served
    schema = schemathesis.openapi.from_url(f"{admin_url}/openapi.json")  # documents are on the admin port
    schema.config.update(base_url=url)
    return schema


def test_documents_and_metrics_are_on_the_admin_port_only(served):
    _, url, admin_url = served
    for path in ("/docs", "/openapi.json", "/metrics"):
        assert httpx.get(f"{url}{path}").status_code == 404, path
        assert httpx.get(f"{admin_url}{path}", follow_redirects=True).status_code == 200, path


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(
    "path",
    [
        "/v1/transfers",
        "/v1/fx/orders",
        "/v1/fx/orders/{order_id}/approval",
        "/v1/accounts",
        "/v1/accounts/{account_id}/status",
    ],
)
def test_the_api_answers_within_its_schema(api_schema, path, mode):
    operation = api_schema[path]["POST"]
    statuses: list[int] = []
    accepted: list[str] = []

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(case):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN[0]}"}
        if mode == GenerationMode.POSITIVE:
            registered_money(case.body)
        response = case.call()
        case.validate_response(response, checks=CHECKS)
        statuses.append(response.status_code)
        if response.status_code == 201:
            accepted.append(f"{case.path_parameters} {case.headers} {case.body!r}")

    check()
    assert statuses and max(statuses) < 500
    if mode == GenerationMode.POSITIVE:
        # valid commands are accepted, not only refused (a generated account id names no account: 404)
        assert 201 in statuses or (path.endswith(("/status", "/approval")) and 404 in statuses), statuses
    else:
        assert not accepted, accepted  # data outside the schema is never accepted
        assert 422 in statuses
