"""Provider webhooks on the real stack: contract tests per provider, the 4xx matrix,
deduplication, and a delivery arriving on its topic through the outbox relay."""

from __future__ import annotations

import json
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import psycopg
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import generate_latest

from connectors.outbox import OutboxRelay
from connectors.webhooks.app import create_app
from ops.dev import webhook_senders as send
from ops.dev.serving import serving
from tests.fixtures.database import private_database
from tests.fixtures.kafka import read_all
from topics.codec import AvroCodec
from topics.schemas import load_store
from topics.settings import REPO_ROOT

RUN = uuid.uuid4().hex[:8]
CARD, CUSTOMER, MERCHANT, WALLET, USER, ITEM = (
    f"{p}-{RUN}" for p in ("ic", "cus", "ma", "wal", "usr", "item")
)
ACCOUNT = f"acc-wh-{RUN}"
TOPICS = {
    "stripe": "cards.transaction.received.v1",
    "truelayer": "banking.transaction.received.v1",
    "circle": "banking.transaction.received.v1",
    "sumsub": "compliance.kyc.verified.v1",
}


@pytest.fixture(scope="module")
def keys():
    return send.ProviderKeys(stripe_secrets=[f"whsec_old_{RUN}", f"whsec_new_{RUN}"])


@pytest.fixture(scope="module")
def codec():
    return AvroCodec(load_store(REPO_ROOT / "avro"))


@pytest.fixture(scope="module")
def hooks(services, keys, codec, catalog):
    """A webhook service on a private database, served by uvicorn; (settings, conn, base url)."""
    with (
        private_database(services) as db,
        psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn,
    ):
        for provider, ref in (
            ("stripe", CARD),
            ("stripe", CUSTOMER),
            ("truelayer", MERCHANT),
            ("circle", WALLET),
            ("sumsub", USER),
        ):
            conn.execute(
                "INSERT INTO provider_links VALUES (%s, %s, 'tenant-1', %s)", (provider, ref, ACCOUNT)
            )
        app = create_app(
            db, keys.settings(WEBHOOK_READ_TIMEOUT_SECONDS=1.0, WEBHOOK_MAX_BODY_BYTES=4096), codec, catalog
        )
        with serving(app) as url:
            yield db, conn, url


def counts(conn) -> tuple[int, int]:
    return conn.execute(
        "SELECT (SELECT count(*) FROM webhook_inbox), (SELECT count(*) FROM outbox)"
    ).fetchone()


def post(url: str, provider: str, body: bytes, headers: dict[str, str], **kw) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/webhooks/{provider}",
        content=body,
        headers={"content-type": "application/json", **headers},
        timeout=10,
        **kw,
    )


def payload(provider: str) -> dict:
    return {
        "stripe": lambda: send.stripe_capture(CARD, 4_250),
        "truelayer": lambda: send.truelayer_payment(MERCHANT, 10_000),
        "circle": lambda: send.circle_payment(WALLET, "12.34"),
        "sumsub": lambda: send.sumsub_review(USER, "RED", "RETRY"),
        "plaid": lambda: send.plaid_sync(ITEM),
    }[provider]()


def deliver(url, keys, provider, document=None):
    body = send.encode(document if document is not None else payload(provider))
    return post(url, provider, body, keys.sign(provider, body))


def outbox_records(conn, codec, events: list[str]) -> list[dict]:
    rows = conn.execute(
        "SELECT topic, key, value FROM outbox WHERE event_id = ANY(%s::uuid[]) ORDER BY id", (events,)
    ).fetchall()
    out = []
    for topic, key, value in rows:
        record = codec.decode(bytes(value), topic=topic)
        assert bytes(key) == record["account_id"].encode()
        out.append({"topic": topic, **record})
    return out


@pytest.mark.parametrize("provider", ["stripe", "truelayer", "circle", "sumsub"])
def test_a_valid_delivery_is_kept_once_with_its_canonical_event(hooks, keys, codec, provider):
    _, conn, url = hooks
    response = deliver(url, keys, provider)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "processed" and len(answer["events"]) == 1
    [record] = outbox_records(conn, codec, answer["events"])
    assert record["topic"] == TOPICS[provider] and record["account_id"] == ACCOUNT
    assert record["metadata"]["tenant_id"] == "tenant-1"
    assert record["inbox_id"] == answer["inbox_id"]
    if provider == "stripe":
        assert record["amount"] == {"units": 4_250, "currency": "EUR", "exponent": 2}
        assert (record["direction"], record["status"]) == ("DEBIT", "CAPTURED")
    elif provider == "truelayer":
        assert record["amount"] == {"units": 10_000, "currency": "GBP", "exponent": 2}
        assert (record["direction"], record["status"]) == ("CREDIT", "POSTED")
    elif provider == "circle":
        assert record["amount"] == {"units": 1_234, "currency": "USD", "exponent": 2}  # "12.34" exactly
    else:
        assert record["review_result"] == "RESUBMIT"
    raw, status = conn.execute(
        "SELECT raw_body, status FROM webhook_inbox WHERE id = %s", (answer["inbox_id"],)
    ).fetchone()
    assert status == "processed" and json.loads(raw)  # the raw payload is kept


def test_plaid_sync_notices_are_kept_pending_without_an_event(hooks, keys):
    _, conn, url = hooks
    item = f"item-{uuid.uuid4().hex[:8]}"
    body = send.encode(send.plaid_sync(item))
    first = post(url, "plaid", body, keys.plaid(body))
    assert first.status_code == 200 and first.json()["status"] == "pending", first.text
    assert first.json()["events"] == []
    # Plaid repeats the same body whenever the item has news: a later notice is a new delivery
    later = post(url, "plaid", body, keys.plaid(body))
    assert later.json()["status"] == "pending" and later.json()["inbox_id"] != first.json()["inbox_id"]
    rows = conn.execute("SELECT status FROM webhook_inbox WHERE external_ref = %s", (item,)).fetchall()
    assert rows == [("pending",), ("pending",)]


def test_both_stripe_secrets_verify_during_a_rotation(hooks, keys):
    _, _, url = hooks
    for secret in keys.stripe_secrets:
        body = send.encode(send.stripe_charge(CUSTOMER, 500))
        assert post(url, "stripe", body, keys.stripe(body, secret=secret)).json()["status"] == "processed"
    body = send.encode(send.stripe_charge(CUSTOMER, 500))
    old, new = (keys.stripe(body, secret=s)["Stripe-Signature"] for s in keys.stripe_secrets)
    both = f"{old},v1={new.split('v1=')[1]}"  # one header carrying a v1 per secret
    assert post(url, "stripe", body, {"Stripe-Signature": both}).status_code == 200


def forgeries(keys: send.ProviderKeys):
    """(provider, make(body) -> headers, expected status, what is wrong)."""
    now = int(time.time())
    other_p256 = ec.generate_private_key(ec.SECP256R1())
    hs256 = lambda body: {  # noqa: E731
        "Plaid-Verification": jwt.encode(
            {"iat": now, "request_body_sha256": __import__("hashlib").sha256(body).hexdigest()},
            "k" * 32,
            algorithm="HS256",
            headers={"kid": keys.plaid_kid},
        )
    }
    return [
        ("stripe", lambda b: {}, 400, "no signature"),
        ("stripe", lambda b: {"Stripe-Signature": "garbage"}, 400, "unreadable header"),
        ("stripe", lambda b: keys.stripe(b, secret="whsec_wrong"), 401, "wrong secret"),
        ("stripe", lambda b: keys.stripe(b, at=now - 301), 401, "too old"),
        ("stripe", lambda b: keys.stripe(b, at=now + 310), 401, "from the future"),
        ("stripe", lambda b: keys.stripe(b + b" "), 401, "body changed after signing"),
        ("plaid", lambda b: {}, 400, "no token"),
        ("plaid", lambda b: keys.plaid(b, iat=now - 301), 401, "iat over five minutes"),
        ("plaid", lambda b: keys.plaid(b, kid="unknown"), 401, "unknown kid"),
        ("plaid", lambda b: keys.plaid(b, key=other_p256), 401, "signed by another key"),
        ("plaid", lambda b: keys.plaid(b + b"x"), 401, "body hash differs"),
        ("plaid", hs256, 401, "HS256 instead of ES256"),
        ("truelayer", lambda b: {}, 400, "no signature"),
        ("truelayer", lambda b: keys.truelayer(b + b" ", "/v1/webhooks/truelayer"), 401, "body changed"),
        ("truelayer", lambda b: keys.truelayer(b, "/v1/webhooks/other"), 401, "another path signed"),
        (
            "truelayer",
            lambda b: keys.truelayer(
                b, "/v1/webhooks/truelayer", at=datetime.now(UTC) - timedelta(seconds=301)
            ),
            401,
            "too old",
        ),
        ("circle", lambda b: {}, 400, "no signature"),
        ("circle", lambda b: keys.circle(b, key=other_p256), 401, "signed by another key"),
        ("circle", lambda b: {**keys.circle(b), "X-Circle-Key-Id": "nope"}, 401, "unknown key id"),
        ("circle", lambda b: {**keys.circle(b), "X-Circle-Signature": "%%%"}, 401, "not base64"),
        ("sumsub", lambda b: {}, 400, "no digest"),
        ("sumsub", lambda b: keys.sumsub(b + b" "), 401, "body changed"),
        ("sumsub", lambda b: keys.sumsub(b, algorithm="HMAC_SHA1_HEX"), 401, "SHA-1 refused"),
    ]


@pytest.mark.parametrize("case", range(23))
def test_each_forgery_is_refused_and_writes_nothing(hooks, keys, case):
    _, conn, url = hooks
    provider, make, status, what = forgeries(keys)[case]
    body = send.encode(payload(provider))
    before = counts(conn)
    response = post(url, provider, body, make(body))
    assert response.status_code == status, f"{what}: {response.status_code} {response.text}"
    assert counts(conn) == before, what


def test_forgery_count_matches_the_parametrization(keys):
    assert len(forgeries(keys)) == 23


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        (b'{"id": NaN}', "NaN"),
        (b'{"id": "evt_1", "id": "evt_2"}', "duplicate keys"),
        (b'{"amount": ' + b"9" * 50 + b"}", "a huge number"),
        (b'{"amount": 1e999}', "an infinite decimal"),
        (b"[" * 100 + b"]" * 100, "deep nesting"),
        (b"[" * 1500 + b"]" * 1500, "very deep nesting"),
        (b'{"id": "evt_1"', "truncated"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[]", "not an object"),
        (b'{"type": "charge.succeeded"}', "not a Stripe event"),
    ],
)
def test_malformed_json_is_refused_even_when_signed(hooks, keys, raw, what):
    _, conn, url = hooks
    before = counts(conn)
    response = post(url, "stripe", raw, keys.stripe(raw))
    assert response.status_code == 400, f"{what}: {response.text}"
    assert counts(conn) == before


def test_transport_errors_write_nothing(hooks, keys):
    _, conn, url = hooks
    before = counts(conn)
    body = send.encode(payload("stripe"))
    signed = keys.stripe(body)
    assert post(url, "stripe", body, {**signed, "content-type": "text/plain"}).status_code == 415
    big = b'{"pad": "' + b"x" * 5000 + b'"}'
    assert post(url, "stripe", big, keys.stripe(big)).status_code == 413

    def chunks():
        for _ in range(10):
            yield b" " * 1000

    chunked = httpx.post(
        f"{url}/v1/webhooks/stripe",
        content=chunks(),
        headers={"content-type": "application/json", **signed},
        timeout=10,
    )
    assert chunked.status_code == 413  # no Content-Length: counted while reading
    assert httpx.get(f"{url}/v1/webhooks/stripe", timeout=10).status_code == 405
    assert post(url, "paypal", body, signed).status_code == 404
    assert counts(conn) == before
    metrics = generate_latest().decode()  # this process's registry: the service runs in it here
    assert 'ledgerstream_webhook_deliveries_total{outcome="415",provider="stripe"}' in metrics
    assert 'ledgerstream_webhook_deliveries_total{outcome="404",provider="unknown"}' in metrics
    # the public port serves deliveries only
    assert [
        httpx.get(f"{url}{path}", timeout=10).status_code for path in ("/metrics/", "/docs", "/openapi.json")
    ] == [404, 404, 404]


def test_a_slow_client_is_cut_off(hooks, keys):
    _, conn, url = hooks
    before = counts(conn)
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b"POST /v1/webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Stripe-Signature: t=1,v1=00\r\nContent-Length: 100\r\n\r\n{"id":'
        )
        started = time.monotonic()
        answer = s.recv(4096)  # blocks until the server's read timeout (1 s) answers
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert time.monotonic() - started < 5
    assert counts(conn) == before


def test_over_the_rate_limit_is_429(services, keys, codec, catalog):
    with private_database(services) as db:
        app = create_app(
            db.as_database_role("webhooks"),
            keys.settings(WEBHOOK_RATE_PER_SECOND=0.001, WEBHOOK_BURST=2),
            codec,
            catalog,
        )
        with serving(app) as url:
            statuses = [deliver(url, keys, "sumsub").status_code for _ in range(4)]
    assert statuses[:2] == [200, 200] and statuses[2:] == [429, 429]


@pytest.mark.parametrize("provider", ["stripe", "truelayer", "circle", "sumsub", "plaid"])
def test_ten_concurrent_copies_of_a_delivery_give_one_event(hooks, keys, services, provider):
    _, conn, url = hooks
    body = send.encode(payload(provider))
    signed = keys.sign(provider, body)
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: post(url, provider, body, signed), range(10)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    statuses = sorted(a.json()["status"] for a in answers)
    first = "pending" if provider == "plaid" else "processed"
    assert sorted(statuses) == sorted(["duplicate"] * 9 + [first])
    inbox = answers[0].json()["inbox_id"]
    assert {a.json()["inbox_id"] for a in answers} == {inbox}
    assert conn.execute("SELECT count(*) FROM webhook_inbox WHERE id = %s", (inbox,)).fetchone()[0] == 1
    events = conn.execute("SELECT result FROM webhook_inbox WHERE id = %s", (inbox,)).fetchone()[0]
    assert len(events) == (0 if provider == "plaid" else 1)
    assert conn.execute("SELECT count(*) FROM outbox WHERE event_id = ANY(%s::uuid[])", (events,)).fetchone()[
        0
    ] == len(events)
    # Redis answers the next copy; without it the inbox row still does
    r = redis.Redis.from_url(services.redis_url)
    event_id = conn.execute("SELECT event_id FROM webhook_inbox WHERE id = %s", (inbox,)).fetchone()[0]
    key = f"webhook:sandbox:{provider}:{event_id}"
    assert r.get(key) == inbox.encode()
    r.delete(key)
    before = counts(conn)
    assert post(url, provider, body, signed).json()["status"] == "duplicate"
    assert counts(conn) == before


def test_an_unlinked_account_or_inexact_money_is_kept_as_failed_without_an_event(hooks, keys):
    _, conn, url = hooks
    before_outbox = counts(conn)[1]
    unlinked = deliver(url, keys, "stripe", send.stripe_capture("ic_nobody", 100))
    inexact = deliver(url, keys, "circle", send.circle_payment(WALLET, "1.005"))
    assert unlinked.json()["status"] == "failed" and "no account is linked" in unlinked.json()["detail"]
    assert inexact.json()["status"] == "failed" and "more decimals than USD" in inexact.json()["detail"]
    assert counts(conn)[1] == before_outbox


def test_a_delivery_arrives_on_its_topic_as_avro_keyed_by_account(services, hooks, keys, codec, catalog):
    db, _, url = hooks
    answer = deliver(url, keys, "truelayer").json()
    OutboxRelay(db.as_database_role("outbox_relay"), codec, catalog).run(idle_exit=1)
    topic = TOPICS["truelayer"]
    mine = [m for m in read_all(services, topic) if m.key() == ACCOUNT.encode()]
    records = [codec.decode(m.value(), topic=topic) for m in mine]
    assert answer["events"][0] in {str(r["metadata"]["event_id"]) for r in records}


@pytest.mark.parametrize("workers", [1, 2])
def test_the_service_process_takes_its_keys_from_the_environment(services, keys, workers):
    """`ledgerstream connect webhooks` as operators run it: keys only in environment variables."""
    import os
    import subprocess
    import sys

    from ops.dev.serving import free_port
    from tests.fixtures.waiting import wait_for
    from topics.settings import REPO_ROOT

    with private_database(services) as db:
        with psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn:
            conn.execute("INSERT INTO provider_links VALUES ('sumsub', %s, 'tenant-1', %s)", (USER, ACCOUNT))
        port, admin = free_port(), free_port()
        env = {
            **os.environ,
            **keys.environment(),
            "DATABASE_URL": db.database_url.get_secret_value(),
            "SCHEMA_REGISTRY_URL": "",
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ops.cli",
                "connect",
                "webhooks",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--admin-port",
                str(admin),
            ],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            url = f"http://127.0.0.1:{port}"

            def up() -> bool:
                try:
                    return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                    return False

            wait_for(up, 60, what="connect webhooks to serve")
            for provider in ("stripe", "plaid", "truelayer", "circle", "sumsub"):
                body = send.encode(payload(provider))
                answer = post(url, provider, body, keys.sign(provider, body))
                assert answer.status_code == 200, f"{provider}: {answer.text}"
            metrics = httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=5).text
            assert 'ledgerstream_webhook_deliveries_total{outcome="processed",provider="sumsub"}' in metrics
            assert httpx.get(f"{url}/metrics", timeout=5).status_code == 404
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=30)
    for secret in (keys.sumsub_secret, *keys.stripe_secrets):
        assert secret.encode() not in stderr  # secrets are never logged


def test_an_unsigned_flood_does_not_spend_the_providers_rate(services, keys, codec, catalog):
    """Regression (issue 12): the provider's rate was taken before the signature check."""
    with private_database(services) as db:
        app = create_app(
            db.as_database_role("webhooks"),
            keys.settings(WEBHOOK_RATE_PER_SECOND=0.001, WEBHOOK_BURST=2),
            codec,
            catalog,
        )
        with serving(app) as url:
            body = send.encode(payload("sumsub"))
            flood = [
                post(url, "sumsub", body, {"X-Payload-Digest": "00" * 32}).status_code for _ in range(10)
            ]
            signed = [deliver(url, keys, "sumsub").status_code for _ in range(3)]
    assert flood == [401] * 10
    assert signed == [200, 200, 429]


def test_one_client_over_its_own_rate_is_refused_before_its_body_is_read(services, keys, codec, catalog):
    with private_database(services) as db:
        settings = keys.settings(WEBHOOK_CLIENT_RATE_PER_SECOND=0.001, WEBHOOK_CLIENT_BURST=3)
        with serving(create_app(db.as_database_role("webhooks"), settings, codec, catalog)) as url:
            statuses = [post(url, "stripe", b"{}", {}).status_code for _ in range(3)]
            statuses.append(deliver(url, keys, "stripe").status_code)
    assert statuses == [400, 400, 400, 429]


SIGNATURE_HEADERS = {
    "stripe": ["Stripe-Signature"],
    "plaid": ["Plaid-Verification"],
    "truelayer": ["Tl-Signature", "X-Tl-Webhook-Timestamp"],
    "circle": ["X-Circle-Signature", "X-Circle-Key-Id"],
    "sumsub": ["X-Payload-Digest", "X-Payload-Digest-Alg"],
}
ODD = [
    b"t=\xc2\xb2,v1=ab",
    "t=²".encode("latin-1", "replace"),
    b"\xff\xfe",
    b"t=1e3,v1=",
    b"t=-1,v1=zz",
    b"kid=\x80",
    b"..",
    b"a.b.c",
    b"sha512",
    b"HMAC_SHA1_HEX",
    b"9" * 300,
    b"\xe2\x80\x8b",
]


@pytest.mark.parametrize("provider", sorted(SIGNATURE_HEADERS))
def test_no_header_or_body_gets_a_server_error(hooks, keys, provider):
    """A seeded fuzz over signature headers (odd bytes, non-ASCII, non-ASCII digits) and bodies."""
    import random

    _, _, url = hooks
    rng = random.Random(f"{provider}-20261129")
    statuses = []
    for n in range(60):
        body = send.encode(payload(provider))
        headers: dict[str, bytes] = {k: v.encode() for k, v in keys.sign(provider, body).items()}
        name = rng.choice(SIGNATURE_HEADERS[provider])
        value = bytearray(headers.get(name, b"x"))
        if n % 3 == 0:
            value = bytearray(rng.choice(ODD))
        else:
            for _ in range(rng.randrange(1, 4)):
                value[rng.randrange(len(value) or 1) if value else 0 : 0] = bytes(
                    [rng.randrange(0x80, 0x100)]
                )
        headers[name] = bytes(value)
        if n % 5 == 0:
            body = body[: rng.randrange(len(body))] + bytes([rng.randrange(256)])
        response = httpx.post(
            f"{url}/v1/webhooks/{provider}",
            content=body,
            headers={"content-type": "application/json", **headers},
            timeout=10,
        )
        statuses.append(response.status_code)
    assert max(statuses) < 500, statuses
    assert set(statuses) <= {400, 401}  # nothing forged got in


def test_the_inbox_keeps_no_readable_card_or_account_number(hooks, keys):
    """Regression (issue 12): webhook_inbox.raw_body was the delivery as it arrived."""
    _, conn, url = hooks
    document = send.truelayer_payment(MERCHANT, 7_000)
    document["remitter"] = {
        "account_holder_name": "A. Customer",
        "iban": "GB33BUKB20201555555555",
        "reference": "paid with card 4111 1111 1111 1111",
    }
    answer = deliver(url, keys, "truelayer", document)
    assert answer.status_code == 200, answer.text
    raw = conn.execute(
        "SELECT raw_body FROM webhook_inbox WHERE id = %s", (answer.json()["inbox_id"],)
    ).fetchone()[0]
    kept = json.loads(raw)
    assert "4111" not in raw and "[PAN REDACTED]" in kept["remitter"]["reference"]
    assert kept["remitter"]["iban"] == "****5555" and "GB33BUKB" not in raw
    assert kept["amount_in_minor"] == 7_000  # everything else as delivered


@pytest.mark.parametrize("provider", ["circle", "sumsub"])
def test_a_delivery_replayed_after_its_inbox_row_was_purged_is_still_a_duplicate(
    hooks, keys, services, provider
):
    """Regression (issue 12): Circle and Sumsub deliveries carry no signed timestamp; a captured one was
    accepted again once the purge had deleted its inbox row (30 days)."""
    from connectors.retention import purge

    db, conn, url = hooks
    body = send.encode(payload(provider))
    signed = keys.sign(provider, body)
    first = post(url, provider, body, signed)
    assert first.status_code == 200 and first.json()["status"] == "processed", first.text
    with psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as admin:
        assert purge(admin, inbox_days=0).inbox_rows >= 1
    assert conn.execute(
        "SELECT count(*) FROM webhook_inbox WHERE id = %s", (first.json()["inbox_id"],)
    ).fetchone() == (0,)
    redis.Redis.from_url(services.redis_url).flushdb()  # the dedupe cache is gone too
    before = counts(conn)
    replayed = post(url, provider, body, signed)
    assert replayed.status_code == 200 and replayed.json()["status"] == "duplicate"
    assert counts(conn) == before


def test_plaid_keys_unknown_to_the_service_are_fetched_from_plaid_cached_and_refused_once_expired(
    services, keys, codec, catalog
):
    """Issue 12: a Plaid key rotation meant 401 for every delivery until someone edited the configuration."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from fastapi import FastAPI

    from ops.dev.webhook_senders import _jwk

    rotated, old = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    served = {
        "plaid-rotated": _jwk(rotated, "plaid-rotated"),
        "plaid-old": {**_jwk(old, "plaid-old"), "expired_at": int(time.time()) - 60},
    }
    asked: list[str] = []
    key_server = FastAPI()

    @key_server.post("/webhook_verification_key/get")
    def get_key(body: dict) -> dict:
        asked.append(body["key_id"])
        assert (body["client_id"], body["secret"]) == ("client-1", "plaid-secret")
        if body["key_id"] not in served:
            return {"error_code": "INVALID_WEBHOOK_VERIFICATION_KEY_ID"}
        return {"key": served[body["key_id"]], "request_id": "r1"}

    with private_database(services) as db, serving(key_server) as plaid_api:
        settings = keys.settings(
            PLAID_WEBHOOK_JWKS={"keys": []},
            PLAID_API_URL=plaid_api,
            PLAID_CLIENT_ID="client-1",
            PLAID_SECRET="plaid-secret",
        )
        with serving(create_app(db.as_database_role("webhooks"), settings, codec, catalog)) as url:

            def deliver_with(kid: str, key) -> int:
                body = send.encode(send.plaid_sync(f"item-{uuid.uuid4().hex[:8]}"))
                return post(url, "plaid", body, keys.plaid(body, kid=kid, key=key)).status_code

            assert [deliver_with("plaid-rotated", rotated) for _ in range(3)] == [200, 200, 200]
            assert asked == ["plaid-rotated"]  # fetched once, then cached
            assert deliver_with("plaid-old", old) == 401  # Plaid says it expired
            assert [deliver_with("forged", rotated) for _ in range(3)] == [401, 401, 401]
    assert asked.count("forged") == 1  # an unknown id is remembered, not asked for per delivery


def test_truelayer_keys_are_fetched_from_an_allow_listed_jku_when_a_new_key_signs(
    services, keys, codec, catalog
):
    """Issue 12: a TrueLayer key rotation meant 401 for every delivery until someone edited the configuration."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from fastapi import FastAPI
    from truelayer_signing import HttpMethod, sign_with_pem

    from ops.dev.webhook_senders import _jwk

    rotated = ec.generate_private_key(ec.SECP521R1())
    fetches: list[str] = []
    jwks_server = FastAPI()

    @jwks_server.get("/.well-known/jwks")
    def jwks() -> dict:
        fetches.append("jwks")
        return {"keys": [_jwk(rotated, "tl-rotated")]}

    def signed(body: bytes, jku: str) -> dict[str, str]:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        pem = rotated.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        signature = (
            sign_with_pem("tl-rotated", pem)
            .set_method(HttpMethod.POST)
            .set_path("/v1/webhooks/truelayer")
            .add_header("X-Tl-Webhook-Timestamp", stamp)
            .set_body(body.decode())
            .set_jku(jku)
            .sign()
        )
        return {"Tl-Signature": signature, "X-Tl-Webhook-Timestamp": stamp}

    with private_database(services) as db, serving(jwks_server) as key_host:
        with psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO provider_links VALUES ('truelayer', %s, 'tenant-1', %s)", (MERCHANT, ACCOUNT)
            )
        allowed = f"{key_host}/.well-known/jwks"
        settings = keys.settings(TRUELAYER_JKU_ALLOWED=allowed)
        with serving(create_app(db.as_database_role("webhooks"), settings, codec, catalog)) as url:

            def deliver_with(jku: str) -> int:
                body = send.encode(send.truelayer_payment(MERCHANT, 1_000))
                return post(url, "truelayer", body, signed(body, jku)).status_code

            assert (
                deliver_with(f"{key_host}/elsewhere/jwks") == 401
            )  # a jku off the allow-list is never fetched
            assert fetches == []
            assert [deliver_with(allowed) for _ in range(3)] == [200, 200, 200]
            assert fetches == ["jwks"]  # fetched once, then known
