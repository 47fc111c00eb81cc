"""The dispatcher authenticates to the payout providers as they ask, and the sandbox, like them,
lets only its merchant in: TrueLayer's access token and request signature, Circle's API key."""

from __future__ import annotations

import uuid

import httpx
import pytest

from connectors.payouts import (
    CirclePayouts,
    Payout,
    PayoutCredentials,
    PayoutError,
    TrueLayerClient,
    TrueLayerPayouts,
)
from ops.dev.provider_sandbox import create_sandbox
from ops.dev.serving import serving
from ops.dev.webhook_senders import ProviderKeys

NOWHERE = "http://127.0.0.1:9/v1/webhooks"
"""The sandbox's webhooks go nowhere here: these tests look at the payout requests only."""


def payout(units: int = 1250) -> Payout:
    return Payout(f"tx-{uuid.uuid4()}", "tenant-1", "acc-1", units, "EUR", 2, "SEPA")


@pytest.fixture(scope="module")
def keys() -> ProviderKeys:
    return ProviderKeys()


@pytest.fixture(scope="module")
def sandbox(keys):
    app = create_sandbox(
        f"{NOWHERE}/truelayer",
        keys.truelayer,
        keys.payouts(),
        circle_url=f"{NOWHERE}/circle",
        circle_sign=lambda body, path: keys.circle(body),
        attempts=1,
        delay=0.0,
    )
    with serving(app) as url:
        yield url


def test_a_signed_payout_with_a_fresh_token_is_taken_once(keys, sandbox):
    p = payout()
    with TrueLayerPayouts(sandbox, "ma-1", keys.payouts().truelayer) as client:
        first = client.create_payout(p)
        assert client.create_payout(p) == first, "the same idempotency key is the same payout"


def test_an_unknown_client_gets_no_token(keys, sandbox):
    wrong = TrueLayerClient(
        keys.truelayer_client_id, "not-the-secret", "kid", keys.payouts().truelayer.signing_key_pem
    )
    with (
        TrueLayerPayouts(sandbox, "ma-1", wrong) as client,
        pytest.raises(PayoutError, match="auth answered 401"),
    ):
        client.create_payout(payout())


def test_a_payout_without_a_token_or_signed_by_another_key_or_altered_is_refused(keys, sandbox):
    with TrueLayerPayouts(sandbox, "ma-1", keys.payouts().truelayer) as client:
        token = client.access_token()
        p = payout()
        body = (
            b'{"merchant_account_id":"ma-1","amount_in_minor":1250,"currency":"EUR",'
            b'"beneficiary":{"type":"external_account","reference":"r"},"metadata":{"transaction_id":"t"}}'
        )
        signed = client._signature(body, p.transaction_id)
        base = {"Idempotency-Key": p.transaction_id, "content-type": "application/json"}
        other = ProviderKeys().payouts().truelayer
        with TrueLayerPayouts(sandbox, "ma-1", other) as impostor:
            forged = impostor._signature(body, p.transaction_id)
        attempts = {
            "no token": ({**base, "Tl-Signature": signed}, body),
            "a token the sandbox never issued": (
                {**base, "Tl-Signature": signed, "Authorization": "Bearer made-up"},
                body,
            ),
            "no signature": ({**base, "Authorization": f"Bearer {token}"}, body),
            "another merchant's key": (
                {**base, "Tl-Signature": forged, "Authorization": f"Bearer {token}"},
                body,
            ),
            "an altered amount": (
                {**base, "Tl-Signature": signed, "Authorization": f"Bearer {token}"},
                body.replace(b"1250", b"9250"),
            ),
        }
        for what, (headers, content) in attempts.items():
            answer = httpx.post(f"{sandbox}/v3/payouts", headers=headers, content=content, timeout=10)
            assert answer.status_code == 401, what
        good = httpx.post(
            f"{sandbox}/v3/payouts",
            headers={**base, "Tl-Signature": signed, "Authorization": f"Bearer {token}"},
            content=body,
            timeout=10,
        )
        assert good.status_code == 202, good.text


def test_a_token_the_provider_no_longer_takes_is_replaced_and_the_payout_sent(keys, sandbox):
    with TrueLayerPayouts(sandbox, "ma-1", keys.payouts().truelayer) as client:
        client._token = ("revoked-by-the-provider", float("inf"))
        assert client.create_payout(payout())
        assert client._token is not None and client._token[0] != "revoked-by-the-provider"


def test_circle_takes_a_payout_only_with_the_merchants_api_key(keys, sandbox):
    with CirclePayouts(sandbox, "1000216185", str(uuid.uuid4()), keys.circle_api_key) as circle:
        assert circle.create_payout(payout())
    with (
        CirclePayouts(sandbox, "1000216185", str(uuid.uuid4()), "SAND_API_KEY:wrong") as circle,
        pytest.raises(PayoutError, match="circle answered 401"),
    ):
        circle.create_payout(payout())


def test_missing_credentials_are_named():
    with pytest.raises(PayoutError, match="TRUELAYER_SIGNING_KEY, CIRCLE_API_KEY"):
        PayoutCredentials.from_environment(
            {"TRUELAYER_CLIENT_ID": "c", "TRUELAYER_CLIENT_SECRET": "s", "TRUELAYER_SIGNING_KEY_ID": "k"}
        )
