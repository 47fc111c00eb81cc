"""Bank account details at rest: sealed field by field, under a key of their own.

A beneficiary's reference (an IBAN, a sort code and account number, a wallet address) is
kept in PostgreSQL only sealed, never as text: AES-256-GCM under the bank-details key
(`Settings.field_key`, apart from the dead-letter key and from anything the database
holds), with the table and column it belongs to as associated data, so a sealed value
copied into another column does not open. A sealed value is

    version (1 byte) || key id (8 bytes) || nonce (12 bytes) || ciphertext and tag

The key id (the first 8 bytes of the key's SHA-256) says which key sealed it. A reader opens
with whichever of its keys has that id (the current one, and during a rotation the previous
ones), and refuses a value of any other key by name; `ledgerstream db seal` re-seals under the
current key what a previous key sealed (`sinks.sealing`).
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from topics.errors import LedgerstreamError

VERSION = b"\x01"
TRANSFER_REQUESTS_BENEFICIARY = "transfer_requests.beneficiary_sealed"
TRANSACTIONS_BENEFICIARY = "transactions.beneficiary_sealed"
TRANSACTIONS_TRAVEL_RULE = "transactions.travel_rule_sealed"
"""The sealed columns (`table.column`, each value's associated data); the Travel Rule's as JSON."""
KEY_ID_BYTES, NONCE_BYTES = 8, 12


class FieldSealError(LedgerstreamError):
    """A sealed field that does not open: another key, another column, or altered."""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:KEY_ID_BYTES]


@functools.lru_cache(maxsize=4)
def _cipher(key: bytes) -> tuple[AESGCM, bytes]:
    """The key's cipher and id, made once per key (making them took two thirds of a seal's time)."""
    return AESGCM(key), VERSION + key_id(key)


def sealing_header(key: bytes) -> bytes:
    """What every value sealed under `key` starts with: the version and the key's id."""
    return _cipher(key)[1]


def seal_field(key: bytes, value: str | None, where: str) -> bytes | None:
    """`value` sealed for the column `where` (`table.column`); None stays None."""
    if value is None:
        return None
    cipher, header = _cipher(key)
    nonce = secrets.token_bytes(NONCE_BYTES)
    return header + nonce + cipher.encrypt(nonce, value.encode(), where.encode())


def sealed_under(sealed: bytes) -> bytes:
    """The id of the key that sealed a value."""
    return bytes(sealed[len(VERSION) : len(VERSION) + KEY_ID_BYTES])


def open_field(keys: bytes | Sequence[bytes], sealed: bytes | None, where: str) -> str | None:
    """The value sealed for the column `where`, opened with whichever of `keys` sealed it (a key,
    or the current key and the previous ones); None stays None."""
    if sealed is None:
        return None
    sealed = bytes(sealed)
    start = len(VERSION) + KEY_ID_BYTES
    if sealed[:1] != VERSION or len(sealed) < start + NONCE_BYTES:
        raise FieldSealError(f"{where}: not a sealed value of version {VERSION.hex()}")
    ring = [keys] if isinstance(keys, bytes) else keys
    header = sealed[:start]
    cipher = next((c for c, h in map(_cipher, ring) if h == header), None)
    if cipher is None:
        known = ", ".join(key_id(k).hex() for k in ring)
        raise FieldSealError(
            f"{where}: sealed under key {sealed_under(sealed).hex()}, not one of these ({known})"
        )
    nonce, body = sealed[start : start + NONCE_BYTES], sealed[start + NONCE_BYTES :]
    try:
        return cipher.decrypt(nonce, body, where.encode()).decode()
    except InvalidTag:
        raise FieldSealError(
            f"{where}: the sealed value does not open (altered, or of another column)"
        ) from None
