"""Card authorizations decided against the ledger while the cardholder waits (Stripe's real-time
authorization): approved only when a hold fits the linked account's available balance, once per
delivery, and the hold is the one the card's later capture completes."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from connectors.webhooks.app import create_app
from connectors.webhooks.stripe import API_VERSION
from ops.dev import webhook_senders as send
from ops.dev.serving import serving
from tests.fixtures.database import private_database
from tests.fixtures.ledger import TENANT, open_accounts
from topics.codec import AvroCodec
from topics.journals import card_hold_id
from topics.schemas import load_store
from topics.settings import REPO_ROOT

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
CARD, CARD_2, STRANGER = f"ic-auth-{RUN}", f"ic-auth2-{RUN}", f"ic-nobody-{RUN}"
ACCOUNT, ACCOUNT_2 = f"acc-auth-{RUN}", f"acc-auth2-{RUN}"
LIMIT = 10_000
"""Each account may spend this much: an overdraft limit, nothing posted yet."""


@pytest.fixture(scope="module")
def codec():
    return AvroCodec(load_store(REPO_ROOT / "avro"))


@pytest.fixture(scope="module")
def keys():
    return send.ProviderKeys(stripe_secrets=[f"whsec_auth_{RUN}"])


@pytest.fixture(scope="module")
def hooks(services, keys, codec, catalog):
    """The webhook service on a private database with two cards linked to open accounts."""
    with private_database(services) as db:
        open_accounts(db, [ACCOUNT, ACCOUNT_2], overdraft=LIMIT)
        with psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn:
            for card, account in ((CARD, ACCOUNT), (CARD_2, ACCOUNT_2)):
                conn.execute(
                    "INSERT INTO provider_links VALUES ('stripe', %s, %s, %s)", (card, TENANT, account)
                )
            with serving(create_app(db.as_database_role("webhooks"), keys.settings(), codec, catalog)) as url:
                yield conn, url


def ask(url: str, keys, document: dict) -> httpx.Response:
    body = send.encode(document)
    headers = {"content-type": "application/json", **keys.sign("stripe", body)}
    return httpx.post(f"{url}/v1/webhooks/stripe", content=body, headers=headers, timeout=10)


def held(conn, account: str) -> list[tuple[str, int, str]]:
    return conn.execute(
        "SELECT hold_id, amount, status FROM holds WHERE account_id = %s ORDER BY hold_id", (account,)
    ).fetchall()


def test_an_authorization_that_fits_is_approved_with_a_hold_and_one_that_does_not_is_declined(
    hooks, keys, codec
):
    conn, url = hooks
    first = send.stripe_authorization_request(CARD, 6_000)
    answer = ask(url, keys, first)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"approved": True}
    assert answer.headers["stripe-version"] == API_VERSION
    auth_id = first["data"]["object"]["id"]
    assert held(conn, ACCOUNT) == [(card_hold_id(TENANT, auth_id), 6_000, "ACTIVE")]
    balance = conn.execute(
        "SELECT value FROM outbox WHERE topic = 'accounts.balance.updated.v1' AND key = %s ORDER BY id DESC",
        (ACCOUNT.encode(),),
    ).fetchone()
    assert balance is not None, "the hold's balance change is announced"
    announced = codec.decode(bytes(balance[0]), topic="accounts.balance.updated.v1")
    assert (announced["reserved"]["units"], announced["available"]["units"]) == (6_000, LIMIT - 6_000)
    assert announced["metadata"]["correlation_id"] == answer.headers["x-correlation-id"]  # the request's

    too_much = ask(url, keys, send.stripe_authorization_request(CARD, LIMIT - 6_000 + 1))
    assert too_much.status_code == 200
    assert too_much.json() == {"approved": False, "metadata": {"decision": "INSUFFICIENT_FUNDS"}}
    assert len(held(conn, ACCOUNT)) == 1, "a declined authorization holds nothing"

    again = ask(url, keys, first)
    assert again.json() == {"approved": True}, "a redelivery gets the decision already taken"
    assert len(held(conn, ACCOUNT)) == 1
    kept = conn.execute(
        "SELECT count(*), min(status) FROM webhook_inbox WHERE event_id = %s", (first["id"],)
    ).fetchone()
    assert kept == (1, "processed")


def test_concurrent_authorizations_never_hold_more_than_is_available(hooks, keys):
    conn, url = hooks
    asks = [send.stripe_authorization_request(CARD_2, 1_500) for _ in range(12)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda document: ask(url, keys, document), asks))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    approved = sum(a.json()["approved"] for a in answers)
    assert approved == LIMIT // 1_500, "exactly as many as the available balance holds"
    holds = held(conn, ACCOUNT_2)
    assert len(holds) == approved
    assert sum(amount for _, amount, _ in holds) <= LIMIT


def test_an_unlinked_card_or_an_unreadable_amount_is_declined_and_kept(hooks, keys):
    conn, url = hooks
    stranger = send.stripe_authorization_request(STRANGER, 100)
    answer = ask(url, keys, stranger)
    assert answer.status_code == 200
    assert answer.json() == {"approved": False, "metadata": {"decision": "NO_LINKED_ACCOUNT"}}
    row = conn.execute(
        "SELECT status, error FROM webhook_inbox WHERE event_id = %s", (stranger["id"],)
    ).fetchone()
    assert row[0] == "failed" and STRANGER in row[1]

    odd = send.stripe_authorization_request(CARD, 100, currency="xyz")
    answer = ask(url, keys, odd)
    assert answer.json() == {"approved": False, "metadata": {"decision": "UNREADABLE_AMOUNT"}}
    assert all(amount != 100 for _, amount, _ in held(conn, ACCOUNT))


def test_a_forged_authorization_request_is_refused_and_decides_nothing(hooks, keys):
    conn, url = hooks
    body = send.encode(send.stripe_authorization_request(CARD, 1))
    forged = send.ProviderKeys(stripe_secrets=["whsec_not_ours"]).sign("stripe", body)
    answer = httpx.post(
        f"{url}/v1/webhooks/stripe",
        content=body,
        headers={"content-type": "application/json", **forged},
        timeout=10,
    )
    assert answer.status_code == 401
    assert all(amount != 1 for _, amount, _ in held(conn, ACCOUNT))
