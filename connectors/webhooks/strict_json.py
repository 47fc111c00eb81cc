"""A JSON parser for untrusted webhook bodies: exact, unambiguous and bounded.

The standard library accepts NaN and Infinity, keeps the last of duplicate keys,
turns 1e400 into inf, reads decimals as binary floats and recurses until
RecursionError (or, with a raised recursion limit, crashes). Here every one of those
is refused, nesting is measured before parsing, and decimals are Decimal.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from topics.errors import LedgerstreamError

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 40
"""Longest number literal accepted (an 18-decimal amount of 10^21 units fits)."""


class MalformedJson(LedgerstreamError, ValueError):
    """The body is not a JSON document this service accepts."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MalformedJson(f"duplicate key {key!r}")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise MalformedJson(f"{name} is not a JSON number")


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise MalformedJson(f"number with {len(text)} digits is too long")
    return int(text)


def _decimal(text: str) -> Decimal:
    if len(text) > MAX_NUMBER_CHARS:
        raise MalformedJson(f"number with {len(text)} characters is too long")
    value = Decimal(text)
    if not value.is_finite() or abs(value.adjusted()) > MAX_NUMBER_CHARS:
        raise MalformedJson(f"number {text} is out of range")
    return value


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')
"""A string (an unterminated one runs to the end in the same match, so every character is
scanned once: linear), or a bracket."""


def _too_deep(text: str) -> bool:
    """Whether brackets outside strings nest deeper than MAX_DEPTH, found before parsing:
    the C parser's recursion guard depends on the interpreter's recursion limit, which
    libraries raise, and past the C stack the process crashes instead of raising."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    depth = 0
    for token in _TOKENS.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif char in "]}":
            depth -= 1
    return False


def loads(raw: bytes) -> Any:
    """The document in `raw` (UTF-8 JSON), or MalformedJson saying why not."""
    try:
        text = raw.decode("utf-8")
        if _too_deep(text):
            raise MalformedJson(f"nesting deeper than {MAX_DEPTH} levels")
        document = json.loads(
            text, object_pairs_hook=_pairs, parse_constant=_constant, parse_int=_int, parse_float=_decimal
        )
    except MalformedJson:
        raise
    except (UnicodeDecodeError, ValueError) as e:
        raise MalformedJson(f"not valid JSON: {e}") from None
    return document
