"""Webhook settings: provider keys and secrets from the environment, limits with working defaults.

A provider without keys is not served (its path answers 404). Secrets are
SecretStr and never appear in logs or reprs.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.webhooks.circle import Circle
from connectors.webhooks.common import Provider
from connectors.webhooks.plaid import Plaid, PlaidKeys
from connectors.webhooks.stripe import Stripe
from connectors.webhooks.sumsub import Sumsub
from connectors.webhooks.truelayer import JKU_ALLOWED, TrueLayer, TrueLayerKeys


class WebhookSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    stripe_secrets: SecretStr | None = Field(None, validation_alias="STRIPE_WEBHOOK_SECRETS")
    """Comma-separated endpoint secrets; during a rotation both the old and the new one."""
    sumsub_secret: SecretStr | None = Field(None, validation_alias="SUMSUB_WEBHOOK_SECRET")
    plaid_jwks: dict[str, Any] | None = Field(None, validation_alias="PLAID_WEBHOOK_JWKS")
    """Plaid's verification keys as a JSON Web Key Set (may be empty when Plaid's API is configured)."""
    plaid_api_url: str | None = Field(None, validation_alias="PLAID_API_URL")
    """e.g. https://production.plaid.com: unknown key ids are fetched from it."""
    plaid_client_id: str | None = Field(None, validation_alias="PLAID_CLIENT_ID")
    plaid_secret: SecretStr | None = Field(None, validation_alias="PLAID_SECRET")
    truelayer_jwks: dict[str, Any] | None = Field(None, validation_alias="TRUELAYER_WEBHOOK_JWKS")
    truelayer_jku_allowed: str = Field(",".join(JKU_ALLOWED), validation_alias="TRUELAYER_JKU_ALLOWED")
    """Comma-separated key-set URLs a signature's `jku` may name; a new key id is fetched from there."""
    circle_keys: dict[str, str] | None = Field(None, validation_alias="CIRCLE_WEBHOOK_KEYS")
    """Circle's notification public keys: {key id: base64 DER}."""
    max_body_bytes: int = Field(256 * 1024, gt=0, validation_alias="WEBHOOK_MAX_BODY_BYTES")
    read_timeout_seconds: float = Field(10.0, gt=0, validation_alias="WEBHOOK_READ_TIMEOUT_SECONDS")
    requests_per_second: float = Field(500.0, gt=0, validation_alias="WEBHOOK_RATE_PER_SECOND")
    """Sustained requests per second accepted per provider and process."""
    burst: int = Field(1000, gt=0, validation_alias="WEBHOOK_BURST")
    client_requests_per_second: float = Field(200.0, gt=0, validation_alias="WEBHOOK_CLIENT_RATE_PER_SECOND")
    """Requests per second accepted from one client address, signed or not, before anything is read."""
    client_burst: int = Field(400, gt=0, validation_alias="WEBHOOK_CLIENT_BURST")
    dedupe_ttl_seconds: int = Field(7 * 86_400, gt=0, validation_alias="WEBHOOK_DEDUPE_TTL_SECONDS")
    pool_size: int = Field(8, gt=0, validation_alias="WEBHOOK_DB_POOL_SIZE")

    def providers(self) -> dict[str, Provider]:
        out: dict[str, Provider] = {}
        if self.stripe_secrets is not None:
            given = self.stripe_secrets.get_secret_value().split(",")
            secrets = [SecretStr(s.strip()) for s in given if s.strip()]
            out["stripe"] = Stripe(secrets)
        if self.sumsub_secret is not None:
            out["sumsub"] = Sumsub(self.sumsub_secret)
        fetcher = None
        if self.plaid_api_url and self.plaid_client_id and self.plaid_secret is not None:
            fetcher = PlaidKeys(self.plaid_api_url, self.plaid_client_id, self.plaid_secret)
        if self.plaid_jwks is not None or fetcher is not None:
            out["plaid"] = Plaid(self.plaid_jwks or {}, fetcher=fetcher)
        if self.truelayer_jwks is not None:
            allowed = tuple(u.strip() for u in self.truelayer_jku_allowed.split(",") if u.strip())
            out["truelayer"] = TrueLayer(self.truelayer_jwks, fetcher=TrueLayerKeys(allowed))
        if self.circle_keys is not None:
            out["circle"] = Circle(self.circle_keys)
        return out
