"""The payout dispatcher: reserved transfers go to their rail's provider.

A transfer whose funds are reserved (BALANCE_RESERVED) on a bank rail is claimed in
`payouts`, and in the same transaction its SENT_TO_PROVIDER report and the link from the
transfer id to its tenant and account are written (the report through the outbox, so it is
published before anything the provider says about it). Only then is the provider called,
with the transfer id as the idempotency key: a dispatcher that dies between the two
resends the same request, and the provider answers with the same payout. The provider's
webhooks (connectors/webhooks/truelayer.py) then move the transfer on.

`PayoutClient` is the seam: `TrueLayerPayouts` speaks to TrueLayer's Payouts API shape and
`CirclePayouts` to Circle's, here pointed at the project's own provider sandbox; a real
client replaces either. The dispatcher routes each rail to one client (by default
SEPA and Faster Payments to TrueLayer, ACH to Circle).

Each client authenticates as the provider asks (`PayoutCredentials`, from the environment):
- TrueLayer: an access token from its auth server (OAuth client credentials, `scope=payments`),
  kept until shortly before it expires and fetched again after a 401; and each payout request
  signed with the merchant's registered EC key (`Tl-Signature`, by the truelayer-signing
  library, over the method, the path, the `Idempotency-Key` header and the exact body sent);
- Circle: its API key as a bearer token.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, Self

import httpx
import psycopg
from psycopg.rows import dict_row
from truelayer_signing import HttpMethod, sign_with_pem
from truelayer_signing.errors import TlSigningException

from connectors.polling import step_until_idle
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.errors import LedgerstreamError
from topics.events import LEDGERSTREAM_NAMESPACE, derived_event_id, new_metadata
from topics.health import LoopProbe
from topics.names import PAYMENTS_TRANSACTION_STATUS_REPORTED_V1
from topics.outbox import enqueue
from topics.settings import Settings

log = logging.getLogger(__name__)

RAILS = ("SEPA", "FASTER_PAYMENTS", "ACH")
"""Rails paid out through a bank payout provider (BOOK never leaves the ledger; CRYPTO goes on chain)."""
REPORTED = PAYMENTS_TRANSACTION_STATUS_REPORTED_V1
CLAIM = """
WITH ready AS (
    SELECT t.transaction_id, t.tenant_id, t.account_id FROM transactions t
     WHERE t.status = 'BALANCE_RESERVED' AND t.rail = ANY(%(rails)s) AND t.environment = %(environment)s
       AND NOT EXISTS (SELECT 1 FROM payouts p WHERE p.transaction_id = t.transaction_id)
     ORDER BY t.created_at LIMIT %(limit)s
)
INSERT INTO payouts (transaction_id, tenant_id, account_id, provider, status)
SELECT transaction_id, tenant_id, account_id, %(provider)s, 'sending' FROM ready
ON CONFLICT (transaction_id) DO NOTHING
RETURNING transaction_id
"""
LINK = """
INSERT INTO provider_links (provider, external_ref, tenant_id, account_id) VALUES (%s, %s, %s, %s)
ON CONFLICT (provider, external_ref) DO NOTHING
"""
SENDING = """
SELECT p.transaction_id, p.provider, p.tenant_id, p.account_id, t.amount_units, t.currency, t.exponent,
       t.rail, t.correlation_id, t.counterparty_account_id
  FROM payouts p JOIN transactions t USING (transaction_id)
 WHERE p.status = 'sending' ORDER BY p.created_at LIMIT %s FOR UPDATE OF p SKIP LOCKED
"""
SENT = (
    "UPDATE payouts SET status = 'sent', payout_id = %s, attempts = attempts + 1, updated_at = now() "
    "WHERE transaction_id = %s"
)
RETRY = (
    "UPDATE payouts SET attempts = attempts + 1, last_error = %s, updated_at = now() "
    "WHERE transaction_id = %s"
)


class PayoutError(LedgerstreamError):
    """The provider did not take a payout (it is retried with the same idempotency key)."""


@dataclass(frozen=True)
class Payout:
    transaction_id: str
    tenant_id: str
    account_id: str
    units: int
    currency: str
    exponent: int
    rail: str


class PayoutClient(Protocol):
    name: str

    def create_payout(self, payout: Payout) -> str:
        """Ask the provider to pay out; the provider's payout id. Idempotent by transaction id."""


TOKEN_MARGIN_SECONDS = 60
"""An access token is fetched again this long before the provider says it expires."""
TRUELAYER_VARIABLES = (
    "TRUELAYER_CLIENT_ID",
    "TRUELAYER_CLIENT_SECRET",
    "TRUELAYER_SIGNING_KEY_ID",
    "TRUELAYER_SIGNING_KEY",
)


@dataclass(frozen=True)
class TrueLayerClient:
    """What TrueLayer gives a merchant for its API: OAuth client credentials, and the request
    signing key registered in its console (its key id and the private key, PEM)."""

    client_id: str
    client_secret: str = field(repr=False)
    signing_key_id: str
    signing_key_pem: str = field(repr=False)
    auth_url: str | None = None
    """TrueLayer's auth server (`https://auth.truelayer.com`); None: the payouts API's own host."""


@dataclass(frozen=True)
class PayoutCredentials:
    """How the dispatcher authenticates to each provider."""

    truelayer: TrueLayerClient
    circle_api_key: str = field(repr=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> PayoutCredentials:
        """TRUELAYER_CLIENT_ID, TRUELAYER_CLIENT_SECRET, TRUELAYER_SIGNING_KEY_ID, TRUELAYER_SIGNING_KEY
        (PEM), TRUELAYER_AUTH_URL (optional) and CIRCLE_API_KEY; PayoutError names what is missing."""
        missing = [v for v in (*TRUELAYER_VARIABLES, "CIRCLE_API_KEY") if not environ.get(v)]
        if missing:
            raise PayoutError(f"no payout credentials: set {', '.join(missing)}")
        client_id, secret, key_id, key = (environ[v] for v in TRUELAYER_VARIABLES)
        truelayer = TrueLayerClient(client_id, secret, key_id, key, environ.get("TRUELAYER_AUTH_URL") or None)
        return cls(truelayer, environ["CIRCLE_API_KEY"])


class _HttpPayouts:
    """What a provider's HTTP payout client shares: the client, one POST of exact bytes with its
    refusals as PayoutError, the payout id of the answer, and closing."""

    name: str

    def __init__(self, base_url: str, timeout: float) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=timeout)

    def _send(self, path: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        try:
            return self.http.post(path, content=body, headers={"content-type": "application/json", **headers})
        except httpx.HTTPError as e:
            raise PayoutError(f"{self.name}: {type(e).__name__}: {e}") from e

    def _answer(self, response: httpx.Response, ok: tuple[int, ...]) -> Any:
        """The answer's JSON body; PayoutError when the provider refused."""
        if response.status_code not in ok:
            raise PayoutError(f"{self.name} answered {response.status_code}: {response.text[:200]}")
        return response.json()

    def _payout_id(self, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise PayoutError(f"{self.name} answered without a payout id")
        return value

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class TrueLayerPayouts(_HttpPayouts):
    """TrueLayer's `POST /v3/payouts` shape (amount in minor units, `Idempotency-Key`, metadata
    echoed on the payout's webhooks), with a bearer token and a signed request."""

    name = "truelayer"
    PATH = "/v3/payouts"

    def __init__(
        self, base_url: str, merchant_account_id: str, client: TrueLayerClient, timeout: float = 10.0
    ) -> None:
        super().__init__(base_url, timeout)
        self.merchant_account_id, self.client = merchant_account_id, client
        self.auth = httpx.Client(base_url=client.auth_url or base_url, timeout=timeout)
        self._token: tuple[str, float] | None = None

    def close(self) -> None:
        self.auth.close()
        super().close()

    def access_token(self) -> str:
        """A current access token: the one kept, or a new one (client credentials grant)."""
        if self._token is not None and time.monotonic() < self._token[1]:
            return self._token[0]
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client.client_id,
            "client_secret": self.client.client_secret,
            "scope": "payments",
        }
        try:
            response = self.auth.post("/connect/token", data=form)
        except httpx.HTTPError as e:
            raise PayoutError(f"truelayer auth: {type(e).__name__}: {e}") from e
        if response.status_code != 200:
            raise PayoutError(f"truelayer auth answered {response.status_code}: {response.text[:200]}")
        answer = response.json()
        token, lifetime = answer.get("access_token"), answer.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(lifetime, int):
            raise PayoutError("truelayer auth answered without an access token and its lifetime")
        self._token = (token, time.monotonic() + max(lifetime - TOKEN_MARGIN_SECONDS, 0))
        return token

    def _signature(self, body: bytes, idempotency_key: str) -> str:
        try:
            return (
                sign_with_pem(self.client.signing_key_id, self.client.signing_key_pem)
                .set_method(HttpMethod.POST)
                .set_path(self.PATH)
                .add_header("Idempotency-Key", idempotency_key)
                .set_body(body.decode())
                .sign()
            )
        except (TlSigningException, ValueError) as e:
            raise PayoutError(f"truelayer: the request signing key cannot sign: {e}") from e

    def create_payout(self, payout: Payout) -> str:
        body = _json(
            {
                "merchant_account_id": self.merchant_account_id,
                "amount_in_minor": payout.units,
                "currency": payout.currency,
                "beneficiary": {"type": "external_account", "reference": payout.transaction_id},
                "metadata": {"transaction_id": payout.transaction_id},
            }
        )
        headers = {
            "Idempotency-Key": payout.transaction_id,
            "Tl-Signature": self._signature(body, payout.transaction_id),
        }
        response = self._send(self.PATH, body, {**headers, "Authorization": f"Bearer {self.access_token()}"})
        if response.status_code == 401:  # revoked or expired early: one new token, the same request
            self._token = None
            response = self._send(
                self.PATH, body, {**headers, "Authorization": f"Bearer {self.access_token()}"}
            )
        return self._payout_id(self._answer(response, (200, 201, 202)).get("id"))


class CirclePayouts(_HttpPayouts):
    """Circle's `POST /v1/payouts` shape: the amount as a decimal string, an idempotency key that
    must be a UUID (derived from the transfer id, so a resend is the same payout), and the
    wallet paid from and the bank account paid to as Circle ids; its API key as bearer token."""

    name = "circle"

    def __init__(
        self, base_url: str, wallet_id: str, destination_id: str, api_key: str, timeout: float = 10.0
    ) -> None:
        super().__init__(base_url, timeout)
        self.wallet_id, self.destination_id, self.api_key = wallet_id, destination_id, api_key

    def create_payout(self, payout: Payout) -> str:
        amount = Decimal(payout.units).scaleb(-payout.exponent)
        body = _json(
            {
                "idempotencyKey": str(uuid.uuid5(LEDGERSTREAM_NAMESPACE, f"payout:{payout.transaction_id}")),
                "source": {"type": "wallet", "id": self.wallet_id},
                "destination": {"type": "wire", "id": self.destination_id},
                "amount": {"amount": f"{amount:f}", "currency": payout.currency},
            }
        )
        answer = self._answer(
            self._send("/v1/payouts", body, {"Authorization": f"Bearer {self.api_key}"}), (200, 201)
        )
        data = answer.get("data")
        return self._payout_id(data.get("id") if isinstance(data, dict) else None)


class PayoutDispatcher:
    """Args:
    settings: PostgreSQL and the environment.
    codec, catalog: for the SENT_TO_PROVIDER reports written to the outbox.
    clients: the provider of every rail (`RAILS`), or one provider for all of them.
    """

    def __init__(
        self,
        settings: Settings,
        codec: AvroCodec,
        catalog: Catalog,
        clients: PayoutClient | Mapping[str, PayoutClient],
    ) -> None:
        self.settings, self.codec, self.catalog = settings, codec, catalog
        routes = clients if isinstance(clients, Mapping) else dict.fromkeys(RAILS, clients)
        unknown = set(routes) - set(RAILS)
        if unknown:
            raise PayoutError(f"rails {sorted(unknown)} are not paid out by a bank provider")
        self.rails: dict[str, list[str]] = {}
        self.clients: dict[str, PayoutClient] = {}
        for rail, client in routes.items():
            self.rails.setdefault(client.name, []).append(rail)
            self.clients[client.name] = client
        self.sent = 0
        self.probe = LoopProbe("payout dispatcher")

    def claim(self, conn: psycopg.Connection[Any], limit: int = 100) -> int:
        """Claim reserved transfers: payout row, link and SENT_TO_PROVIDER report in one transaction."""
        return sum(self._claim(conn, name, limit) for name in self.clients)

    def _claim(self, conn: psycopg.Connection[Any], provider: str, limit: int) -> int:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            claimed = [
                r["transaction_id"]
                for r in cur.execute(
                    CLAIM,
                    {
                        "rails": self.rails[provider],
                        "environment": self.settings.environment,
                        "limit": limit,
                        "provider": provider,
                    },
                ).fetchall()
            ]
            if not claimed:
                return 0
            rows = cur.execute(
                "SELECT transaction_id, tenant_id, account_id, correlation_id FROM transactions "
                "WHERE transaction_id = ANY(%s) ORDER BY created_at",
                (claimed,),
            ).fetchall()
            for row in rows:
                cur.execute(LINK, (provider, row["transaction_id"], row["tenant_id"], row["account_id"]))
                source = f"payout:{row['transaction_id']}"
                enqueue(
                    conn,
                    self.codec,
                    self.catalog,
                    REPORTED,
                    {
                        "metadata": new_metadata(
                            "payments.transaction.status_reported",
                            tenant_id=row["tenant_id"],
                            environment=self.settings.environment,
                            source="connectors.payouts",
                            correlation_id=row["correlation_id"],
                            event_id=derived_event_id(source, "payout_dispatcher", "sent"),
                        ),
                        "account_id": row["account_id"],
                        "transaction_id": row["transaction_id"],
                        "status": "SENT_TO_PROVIDER",
                        "reason": f"payout requested from {provider}",
                        "provider": provider,
                        "provider_update_id": None,
                        "expected_version": None,
                    },
                )
        return len(claimed)

    def send(self, conn: psycopg.Connection[Any], limit: int = 100) -> int:
        """Call the provider for every claimed payout not yet sent (again, after a crash)."""
        sent = 0
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            for row in cur.execute(SENDING, (limit,)).fetchall():
                payout = Payout(
                    row["transaction_id"],
                    row["tenant_id"],
                    row["account_id"],
                    int(row["amount_units"]),
                    row["currency"],
                    int(row["exponent"]),
                    row["rail"],
                )
                client = self.clients.get(row["provider"])
                if client is None:
                    log.warning(
                        "payout of %s waits for its provider %s", payout.transaction_id, row["provider"]
                    )
                    continue
                try:
                    payout_id = client.create_payout(payout)
                except PayoutError as e:
                    log.warning("payout of %s not taken, retried later: %s", payout.transaction_id, e)
                    cur.execute(RETRY, (str(e)[:500], payout.transaction_id))
                    continue
                cur.execute(SENT, (payout_id, payout.transaction_id))
                sent += 1
        self.sent += sent
        return sent

    def run(
        self, *, stop: threading.Event | None = None, poll: float = 0.2, idle_exit: float | None = None
    ) -> int:
        """Claim and send until stopped (or idle for `idle_exit` seconds); the payouts sent."""
        step_until_idle(
            self.settings,
            lambda conn: self.claim(conn) + self.send(conn),
            stop=stop,
            poll=poll,
            idle_exit=idle_exit,
            probe=self.probe,
        )
        return self.sent
