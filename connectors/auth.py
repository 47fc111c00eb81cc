"""API keys: who is calling the command API, for which tenant, with which scopes.

A key is `lsk_<key id>_<secret>`: the id finds its row, and only a SHA-256 of the secret is
stored (the secret is 32 random bytes, so a fast hash is enough; the table alone cannot be
replayed as a credential). The tenant comes from the key, never from a header the caller
sets. Keys are issued and revoked with `ledgerstream keys ...`; a revoked key stays, for the
audit trail.

Why keys and not OAuth2 client-credentials JWTs: the callers are tenants' backends, one
service each, and a key checked against this database is revoked the moment its row says
so, with no token lifetime to wait out and no signing keys to rotate per tenant.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg

from topics.errors import LedgerstreamError

SCOPES = ("transfers:write", "fx:write", "fx:approve", "accounts:write")
TOKEN = re.compile(r"lsk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
TENANT = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


class AuthError(LedgerstreamError, ValueError):
    """A tenant or key command that cannot be done (unknown tenant, unknown scope, unknown key)."""


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    tenant: str
    name: str
    scopes: frozenset[str]
    key_id: str


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def create_tenant(conn: psycopg.Connection[Any], tenant: str, name: str) -> bool:
    """Create a tenant; False if it exists."""
    if not TENANT.fullmatch(tenant):
        raise AuthError(f"tenant id {tenant!r} must be 1-64 of A-Z a-z 0-9 _ . @ -")
    row = conn.execute(
        "INSERT INTO tenants (tenant_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING tenant_id",
        (tenant, name),
    ).fetchone()
    return row is not None


def issue_key(
    conn: psycopg.Connection[Any], tenant: str, principal: str, scopes: list[str]
) -> tuple[str, str]:
    """A new key for `principal` of `tenant`: (key id, the token, shown once)."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise AuthError(f"unknown scopes {unknown or scopes}: choose from {', '.join(SCOPES)}")
    if conn.execute("SELECT 1 FROM tenants WHERE tenant_id = %s", (tenant,)).fetchone() is None:
        raise AuthError(f"no tenant {tenant!r}: create it with `ledgerstream tenants create`")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO api_keys (key_id, tenant_id, principal, scopes, secret_hash) "
        "VALUES (%s, %s, %s, %s, %s)",
        (key_id, tenant, principal, sorted(set(scopes)), _hash(secret)),
    )
    return key_id, f"lsk_{key_id}_{secret}"


def revoke_key(conn: psycopg.Connection[Any], key_id: str) -> bool:
    """Revoke a key at once; False if it is unknown or already revoked."""
    cur = conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL", (key_id,)
    )
    return cur.rowcount == 1


def list_keys(conn: psycopg.Connection[Any], tenant: str | None = None) -> list[tuple[Any, ...]]:
    """(key id, tenant, principal, scopes, created, revoked) per key, never a secret."""
    return conn.execute(
        "SELECT key_id, tenant_id, principal, scopes, created_at, revoked_at FROM api_keys "
        "WHERE %s::text IS NULL OR tenant_id = %s ORDER BY tenant_id, created_at",
        (tenant, tenant),
    ).fetchall()


def authenticate(conn: psycopg.Connection[Any], token: str) -> Principal | None:
    """The principal a token stands for, or None (malformed, unknown, revoked or wrong secret)."""
    match = TOKEN.fullmatch(token)
    if match is None:
        return None
    key_id, secret = match.groups()
    row = conn.execute(
        "SELECT tenant_id, principal, scopes, secret_hash FROM api_keys "
        "WHERE key_id = %s AND revoked_at IS NULL",
        (key_id,),
    ).fetchone()
    if row is None:
        _hash(secret)  # the same work whether or not the key exists
        return None
    tenant, principal, scopes, stored = row[0], row[1], row[2], bytes(row[3])
    if not hmac.compare_digest(_hash(secret), stored):
        return None
    return Principal(tenant, principal, frozenset(scopes), key_id)
