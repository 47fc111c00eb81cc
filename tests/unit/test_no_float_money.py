"""No float on any money path: code, Avro schemas and tables.

Each check also runs on a planted float, so it is shown to catch one.
"""

from __future__ import annotations

import ast
import json
import re

from topics.settings import REPO_ROOT

MONEY = re.compile(
    r"amount|units|fee|price|rate|total|balance|bps|markup|bonus|debit|credit|threshold|gas|cost",
    re.IGNORECASE,
)
CODE = ("streams", "sinks", "topics", "connectors", "ops")
MONEY_PACKAGES = (
    "streams/fees",
    "streams/fx",
    "streams/billing",
    "streams/ledger",
    "sinks",
    "topics/money.py",
)
FLOAT_COLUMN = re.compile(r"^\s*(\w+)\s+(real|double precision|float\d*)\b", re.IGNORECASE | re.MULTILINE)


def _names_float(annotation: ast.expr | None) -> bool:
    return (
        annotation is not None
        and any(isinstance(n, ast.Name) and n.id == "float" for n in ast.walk(annotation))
    ) or (isinstance(annotation, ast.Constant) and "float" in str(annotation.value))


def float_money_in_code(source: str, money_package: bool) -> list[str]:
    """Money-named variables, fields and arguments annotated float; any float() in a money package."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.AnnAssign) and _names_float(node.annotation):
            name = ast.unparse(node.target)
            if MONEY.search(name):
                found.append(f"line {node.lineno}: {name} is typed float")
        elif isinstance(node, ast.arg) and _names_float(node.annotation) and MONEY.search(node.arg):
            found.append(f"line {node.lineno}: argument {node.arg} is typed float")
        elif (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and MONEY.search(node.name)
            and (_names_float(node.returns))
        ):
            found.append(f"line {node.lineno}: {node.name}() returns float")
        elif money_package and isinstance(node, ast.Call) and getattr(node.func, "id", None) == "float":
            found.append(f"line {node.lineno}: float() in a money package")
    return found


def float_money_in_schema(schema: object, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(schema, dict):
        if schema.get("type") in ("float", "double"):
            found.append(path)
        for field in schema.get("fields", []):
            types = field["type"] if isinstance(field["type"], list) else [field["type"]]
            if any(t in ("float", "double") for t in types) and MONEY.search(field["name"]):
                found.append(f"{path}.{field['name']}")
            for t in types:
                found += float_money_in_schema(t, f"{path}.{field['name']}")
        if "items" in schema:
            found += float_money_in_schema(schema["items"], path + "[]")
    return found


def test_no_money_name_is_typed_float_in_code():
    problems = []
    for package in CODE:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            rel = path.relative_to(REPO_ROOT).as_posix()
            money_package = rel.startswith(MONEY_PACKAGES)
            problems += [f"{rel} {p}" for p in float_money_in_code(path.read_text(), money_package)]
    assert problems == []


def test_no_money_field_is_float_in_any_schema():
    problems = []
    for path in sorted((REPO_ROOT / "avro").glob("*.avsc")):
        problems += [f"{path.name}{p}" for p in float_money_in_schema(json.loads(path.read_text()))]
    assert problems == []


def test_no_column_is_real_or_double_in_any_migration():
    problems = []
    for path in sorted((REPO_ROOT / "sinks" / "migrations").glob("*.sql")):
        problems += [
            f"{path.name}: {m.group(1)} {m.group(2)}" for m in FLOAT_COLUMN.finditer(path.read_text())
        ]
    assert problems == []


def test_the_checks_catch_a_planted_float():
    code = (
        "class Fee:\n    amount: float = 0.0\n\ndef price(rate: float) -> int:\n    return int(float(rate))\n"
    )
    assert len(float_money_in_code(code, money_package=True)) == 3
    schema = {"type": "record", "name": "X", "fields": [{"name": "fee_amount", "type": ["null", "double"]}]}
    assert float_money_in_schema(schema) == [".fee_amount"]
    assert FLOAT_COLUMN.findall("CREATE TABLE t (\n    total double precision NOT NULL\n);")
