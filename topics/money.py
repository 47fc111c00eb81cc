"""Exactness checks on records before they are encoded.

fastavro turns a float written into a `long` field into an int without a word
(12.5 becomes 12). Money must never pass through a float, so every record is
checked, once per encode, on exactly the paths of its schema that hold integers
or decimals: an `int`/`long` must be a Python int (not bool, not float) and a
decimal must be a `Decimal`.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator

from topics.errors import LedgerstreamError

Check = Callable[[Any, str], None]
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


class InexactValue(LedgerstreamError, TypeError):
    """A value on an integer or decimal path is not exact."""


def _integer(value: Any, path: str) -> None:
    if type(value) is not int:
        raise InexactValue(f"{path}: expected an int, got {type(value).__name__} {value!r}")


def _decimal(value: Any, path: str) -> None:
    if not isinstance(value, Decimal):
        raise InexactValue(f"{path}: expected a Decimal, got {type(value).__name__} {value!r}")
    if not value.is_finite():
        raise InexactValue(f"{path}: {value!r} is not a finite amount")


class _Compiler:
    def __init__(self) -> None:
        self.named: dict[str, Check | None] = {}

    def compile(self, node: Any, ns: str) -> Check | None:
        if isinstance(node, str):
            if node in ("int", "long"):
                return _integer
            full = node if "." in node or not ns else f"{ns}.{node}"
            return self.named.get(full)
        if isinstance(node, list):
            return self._union(node, ns)
        kind = node["type"]
        if node.get("logicalType") == "decimal" and kind in ("bytes", "fixed"):
            return _decimal
        if kind in ("record", "error"):
            return self._record(node, ns)
        if kind in ("enum", "fixed"):
            return None
        if kind == "array":
            item = self.compile(node["items"], ns)
            return None if item is None else _each(item, lambda v: enumerate(v))
        if kind == "map":
            value = self.compile(node["values"], ns)
            return None if value is None else _each(value, lambda v: v.items())
        if isinstance(kind, str) and kind in _PRIMITIVES:
            # timestamps and dates are longs/ints with a logical type: not money
            return _integer if kind in ("int", "long") and "logicalType" not in node else None
        return self.compile(kind, ns)

    def _record(self, node: dict[str, Any], ns: str) -> Check | None:
        name = node["name"]
        own_ns = name.rpartition(".")[0] if "." in name else node.get("namespace", ns)
        full = name if "." in name or not own_ns else f"{own_ns}.{name}"
        self.named[full] = None
        checks = []
        for f in node["fields"]:
            check = self.compile(f["type"], own_ns)
            if check is not None:
                checks.append((f["name"], check))
        if not checks:
            return None
        fields = tuple(checks)

        def record(value: Any, path: str) -> None:
            if not isinstance(value, dict):
                return  # fastavro reports the wrong shape itself
            for name, check in fields:
                if name in value:
                    check(value[name], f"{path}.{name}" if path else name)

        self.named[full] = record
        return record

    def _union(self, branches: list[Any], ns: str) -> Check | None:
        named = [(_branch_name(b, ns), self.compile(b, ns)) for b in branches if b != "null"]
        if all(check is None for _, check in named):
            return None

        def union(value: Any, path: str) -> None:
            if value is None:
                return
            if isinstance(value, tuple) and len(value) == 2:
                for name, check in named:
                    if name == value[0] and check is not None:
                        check(value[1], path)
                return
            first: InexactValue | None = None
            for _, check in named:
                if check is None:
                    return
                try:
                    check(value, path)
                    return
                except InexactValue as e:
                    first = first or e
            if first is not None:
                raise first

        return union


def _branch_name(node: Any, ns: str) -> str:
    if isinstance(node, dict) and "name" in node:
        name = node["name"]
        return name if "." in name or not node.get("namespace", ns) else f"{node.get('namespace', ns)}.{name}"
    if isinstance(node, str):
        return node
    return str(node.get("type")) if isinstance(node, dict) else ""


def _each(check: Check, items: Callable[[Any], Any]) -> Check:
    def each(value: Any, path: str) -> None:
        if isinstance(value, (list, dict)):
            for key, item in items(value):
                check(item, f"{path}[{key}]")

    return each


def compile_money_check(schema: Any) -> Callable[[Any], None]:
    """Compile a schema into `check(record)`, raising InexactValue on a float or bool
    where the schema holds an integer or a decimal."""
    check = _Compiler().compile(schema, "")
    if check is None:
        return lambda record: None
    root = check
    return lambda record: root(record, "")


INT64_MAX = 2**63 - 1
FIAT_MAX_EXPONENT = 4


def money_record(
    units: int, currency: str, exponent: int, chain: str = "ledger"
) -> tuple[str, dict[str, Any]]:
    """An exact amount as the Avro union branch it belongs to: FiatMoney (minor units
    in a long) for exponents 0-4 that fit, CryptoMoney (base units as a decimal) otherwise."""
    if exponent <= FIAT_MAX_EXPONENT and -INT64_MAX <= units <= INT64_MAX:
        return "ledgerstream.common.FiatMoney", {"units": units, "currency": currency, "exponent": exponent}
    return "ledgerstream.common.CryptoMoney", {
        "units": Decimal(units),
        "asset": currency,
        "decimals": exponent,
        "chain": chain,
    }


def money_parts(amount: dict[str, Any]) -> tuple[int, str, int]:
    """(units, currency, exponent) of a decoded FiatMoney or CryptoMoney record."""
    if "asset" in amount:
        units = amount["units"]
        if units != units.to_integral_value():
            raise InexactValue(f"fractional base units {units}")
        return int(units), amount["asset"], int(amount["decimals"])
    return int(amount["units"]), amount["currency"], int(amount["exponent"])


def exact_integer(value: Any) -> Any:
    """Before-validator for amounts read from configuration: an int, or a string of digits
    (TOML integers stop at 2^63; wei do not); never a float or a bool."""
    if isinstance(value, (float, bool)):
        raise ValueError(f"{value!r} is not an exact integer amount (write minor units as an integer)")
    if isinstance(value, str):
        if not value.strip().lstrip("-").isdigit():
            raise ValueError(f"{value!r} is not an integer amount")
        return int(value)
    return value


ExactInt = Annotated[int, BeforeValidator(exact_integer)]
"""An integer amount in a pydantic model that refuses floats instead of truncating them."""
