"""Masking for the audit trail and analysts' tools: account numbers to their last four, card
numbers never.

Every string anywhere in a payload is scanned for card numbers: 13 to 19 digits,
contiguous or in the printed groups (4-4-4-4, 4-6-5) with one space or dash
between groups, not part of a longer run of digits (but glued to words, as in
`card4111111111111111`), and not inside a hash-like hex token, that pass the Luhn
check are replaced with `[PAN REDACTED]` and the row is flagged. Values under keys that name
account numbers (IBANs, beneficiary and counterparty references) or a person's identifier keep
only their last four characters. `mask` makes a JSON-ready copy (Decimal and big integers as
strings, so no amount passes through a float); `conceal` masks the same strings and keeps
every other value as it is, for `tail` and `export`, which write exact types themselves.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

ACCOUNT_NUMBER_KEYS = frozenset(
    {
        "iban",
        "account_number",
        "beneficiary_reference",
        "counterparty_reference",
        "bank_account",
        "bban",
        "originator_identifier",
    }
)
"""Keys whose values keep only their last four characters: account numbers, and the Travel
Rule's originator identifier (a postal address, national id, or date and place of birth)."""
PAN_REDACTED = "[PAN REDACTED]"
_CANDIDATE = re.compile(
    r"(?<!\d)(?:\d{13,19}"  # contiguous, even glued to words ("card4111111111111111")
    r"|\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}"  # 4-4-4-4(-3), one separator throughout
    r"|\d{4}([ -])\d{6}\2\d{5})(?!\d)"  # Amex 4-6-5
)
_HEX_TOKEN = re.compile(r"(?:0x)?[0-9a-fA-F]{32,}")
"""Hashes and keys (transaction hashes, digests) hold long digit runs by chance: never card numbers."""
JSON_SAFE_INT = 2**53


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every card number passes."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def redact_pans(text: str) -> tuple[str, bool]:
    """`text` with every PAN-looking run redacted, and whether any was."""
    found = False

    def replace(match: re.Match[str]) -> str:
        nonlocal found
        start, end = match.span()
        while start > 0 and text[start - 1].isalnum():
            start -= 1
        while end < len(text) and text[end].isalnum():
            end += 1
        if _HEX_TOKEN.fullmatch(text, start, end):
            return match.group(0)
        digits = re.sub(r"[ -]", "", match.group(0))
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            found = True
            return PAN_REDACTED
        return match.group(0)

    return _CANDIDATE.sub(replace, text), found


def last_four(value: str) -> str:
    compact = value.replace(" ", "")
    return "****" + compact[-4:] if len(compact) > 4 else "****"


@dataclass
class Masked:
    value: Any
    pan_redacted: bool = False
    masked_keys: list[str] = field(default_factory=list)


def mask(record: Any) -> Masked:
    """A JSON-ready copy of `record` with account numbers masked and PANs redacted."""
    out = Masked(None)
    out.value = _walk(record, None, out)
    return out


def conceal(record: Any) -> Any:
    """`record` with account numbers masked and PANs redacted, and every other value as it was
    (amounts stay Decimal or int): what analysts' tools print and export."""
    return _walk(record, None, Masked(None), exact=True)


def _walk(value: Any, key: str | None, out: Masked, exact: bool = False) -> Any:
    if isinstance(value, dict):
        return {str(k): _walk(v, str(k), out, exact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(v, key, out, exact) for v in value]
    if isinstance(value, str):
        text, found = redact_pans(value)
        out.pan_redacted |= found
        if key is not None and key.lower() in ACCOUNT_NUMBER_KEYS and text != PAN_REDACTED:
            out.masked_keys.append(key)
            return last_four(text)
        return text
    if exact or isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -JSON_SAFE_INT < value < JSON_SAFE_INT else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)
