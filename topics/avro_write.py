"""A compiled Avro writer for the common case, with fastavro for everything else.

fastavro's writer chooses a union's branch by validating the value against each branch in
turn; three money unions made encoding a balance event cost about 20 us. The compiled
writer is straight-line Python per schema that writes the same bytes as
`fastavro.schemaless_writer(..., strict_allow_default=True)` for the values ledgerstream
builds: records given as dicts with exactly their fields, ints, strs, bytes, None, bools,
enum symbols, lists and dicts, and the logical types through fastavro's own
`LOGICAL_WRITERS`.

Anything else makes it give up (`NotCompiled`) and the caller hands the record to fastavro,
which writes it or raises its own error: a missing field with a default, a float, a value
of another type than expected. A `(name, value)` tuple names its union branch, as in
fastavro. Otherwise a union's branch is chosen only where fastavro's choice is certain:
every earlier branch that fastavro could accept the value for (by Python type) must be one
the compiled writer accepts too, and a record branch is taken only when no later branch of
another kind could take the value (fastavro would prefer it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastavro.write import LOGICAL_WRITERS

from topics.errors import LedgerstreamError
from topics.guard import INT_RANGE, LONG_RANGE, _fullname


class NotCompiled(LedgerstreamError):
    """The compiled writer does not take this value: fastavro writes it (or refuses it)."""


def _long(z: int) -> bytes:
    """The varint bytes of a zigzag-encoded value (the multi-byte path)."""
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


# What fastavro's validation could accept, by Python type (a superset: a branch whose test
# fails is one fastavro cannot choose).
_MIGHT = {
    "null": "{v} is None",
    "boolean": "isinstance({v}, bool)",
    "int": "isinstance({v}, (_Integral, _date, _time))",
    "long": "isinstance({v}, (_Integral, _datetime, _time))",
    "float": "isinstance({v}, _Real)",
    "double": "isinstance({v}, _Real)",
    "string": "isinstance({v}, (str, _UUID))",
    "bytes": "isinstance({v}, (bytes, bytearray, _Decimal))",
    "enum": "isinstance({v}, str)",
    "fixed": "isinstance({v}, (bytes, bytearray, _Decimal))",
    "array": "isinstance({v}, _Sequence) and not isinstance({v}, (str, bytes, bytearray))",
    "map": "isinstance({v}, _Mapping)",
    "record": "isinstance({v}, _Mapping)",
}


class _WriterGenerator:
    def __init__(self) -> None:
        self.named: dict[str, tuple[Any, str]] = {}
        self.functions: list[list[str]] = []
        self.fns: dict[str, str] = {}
        self.constants: dict[str, Any] = {}
        self.ids = itertools.count()

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids)}"

    def constant(self, prefix: str, value: Any) -> str:
        name = self.fresh(prefix)
        self.constants[name] = value
        return name

    def resolve(self, node: Any, ns: str) -> tuple[Any, str]:
        """A named reference's definition (other nodes are returned as they are)."""
        if isinstance(node, str) and node not in _MIGHT:
            full = node if "." in node or not ns else f"{ns}.{node}"
            if full not in self.named:
                raise NotCompiled(f"schema names unknown type {node}")
            return self.named[full]
        if isinstance(node, dict) and not isinstance(node.get("type"), str | list):
            return self.resolve(node["type"], ns)
        if isinstance(node, dict) and isinstance(node["type"], str) and node["type"] not in _MIGHT:
            return self.resolve(node["type"], ns)
        return node, ns

    def kind(self, node: Any, ns: str) -> str:
        node, _ = self.resolve(node, ns)
        if isinstance(node, list):
            return "union"
        return node if isinstance(node, str) else str(node["type"])

    def register(self, node: Any, ns: str) -> None:
        """Record the named types a schema defines, in order, as fastavro's parser does."""
        if isinstance(node, list):
            for branch in node:
                self.register(branch, ns)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in ("record", "error", "enum", "fixed"):
                full, own_ns = _fullname(node, ns)
                self.named[full] = (node, ns)
                if kind in ("record", "error"):
                    for f in node["fields"]:
                        self.register(f["type"], own_ns)
            elif kind == "array":
                self.register(node["items"], ns)
            elif kind == "map":
                self.register(node["values"], ns)
            elif isinstance(kind, dict | list):
                self.register(kind, ns)

    # code --------------------------------------------------------------------------

    @staticmethod
    def varint(expr: str, pad: str) -> list[str]:
        return [
            f"{pad}z = {expr}",
            f"{pad}if z < 0x80:",
            f"{pad}    out.append(z)",
            f"{pad}else:",
            f"{pad}    out += _long(z)",
        ]

    def emit(self, node: Any, ns: str, value: str, pad: str) -> list[str]:
        """Statements that append the encoding of `value` (a local name) to `out`."""
        node, ns = self.resolve(node, ns)
        if isinstance(node, list):
            return self.emit_union(node, ns, value, pad)
        if isinstance(node, str):
            return self.emit_primitive(node, value, pad)
        kind = node["type"]
        if kind in ("record", "error"):
            return [f"{pad}{self.record_fn(node, ns)}({value}, out)"]
        if kind == "enum":
            index = self.constant("_index", {s: i for i, s in enumerate(node["symbols"])})
            return [
                f"{pad}out.append({index}[{value}] << 1)"
                if len(node["symbols"]) <= 64
                else f"{pad}out += _long({index}[{value}] << 1)"
            ]
        if kind == "fixed":
            lines = self.logical(node, value, pad)
            return [
                *lines,
                f"{pad}if type({value}) is not bytes or len({value}) != {int(node['size'])}:",
                f"{pad}    raise NotCompiled",
                f"{pad}out += {value}",
            ]
        if kind == "array":
            item = self.fresh("x")
            return [
                f"{pad}if type({value}) is not list:",
                f"{pad}    raise NotCompiled",
                f"{pad}if {value}:",
                *self.varint(f"len({value}) << 1", pad + "    "),
                f"{pad}    for {item} in {value}:",
                *self.emit(node["items"], ns, item, pad + "        "),
                f"{pad}out.append(0)",
            ]
        if kind == "map":
            key, item = self.fresh("k"), self.fresh("x")
            return [
                f"{pad}if type({value}) is not dict:",
                f"{pad}    raise NotCompiled",
                f"{pad}if {value}:",
                *self.varint(f"len({value}) << 1", pad + "    "),
                f"{pad}    for {key}, {item} in {value}.items():",
                *self.emit_primitive("string", key, pad + "        "),
                *self.emit(node["values"], ns, item, pad + "        "),
                f"{pad}out.append(0)",
            ]
        return [*self.logical(node, value, pad), *self.emit_primitive(kind, value, pad)]

    def logical(self, node: dict[str, Any], value: str, pad: str) -> list[str]:
        logical = node.get("logicalType")
        prepare = LOGICAL_WRITERS.get(f"{node['type']}-{logical}") if logical else None
        if prepare is None:
            return []
        fn, schema = self.constant("_prepare", prepare), self.constant("_schema", node)
        return [f"{pad}{value} = {fn}({value}, {schema})"]

    def emit_primitive(self, kind: str, value: str, pad: str) -> list[str]:
        if kind == "null":
            return [f"{pad}if {value} is not None:", f"{pad}    raise NotCompiled"]
        if kind == "boolean":
            return [
                f"{pad}if {value} is True:",
                f"{pad}    out.append(1)",
                f"{pad}elif {value} is False:",
                f"{pad}    out.append(0)",
                f"{pad}else:",
                f"{pad}    raise NotCompiled",
            ]
        if kind in ("int", "long"):
            low, high = INT_RANGE if kind == "int" else LONG_RANGE
            return [
                f"{pad}if type({value}) is not int or not {low} <= {value} <= {high}:",
                f"{pad}    raise NotCompiled",
                *self.varint(f"({value} << 1) ^ ({value} >> 63)", pad),
            ]
        if kind in ("string", "bytes"):
            data = self.fresh("s")
            encode = f"{value}.encode()" if kind == "string" else value
            return [
                f"{pad}if type({value}) is not {'str' if kind == 'string' else 'bytes'}:",
                f"{pad}    raise NotCompiled",
                f"{pad}{data} = {encode}",
                *self.varint(f"len({data}) << 1", pad),
                f"{pad}out += {data}",
            ]
        return [f"{pad}raise NotCompiled"]  # float and double: fastavro's

    def record_fn(self, node: dict[str, Any], ns: str) -> str:
        full, own_ns = _fullname(node, ns)
        if full in self.fns:
            return self.fns[full]
        fn = self.fresh("_record")
        self.fns[full] = fn
        body = [
            f"def {fn}(v, out):",
            f"    if type(v) is not dict or len(v) != {len(node['fields'])}:",
            "        raise NotCompiled",
        ]
        for f in node["fields"]:
            var = self.fresh("f")
            body += [f"    {var} = v[{f['name']!r}]", *self.emit(f["type"], own_ns, var, "    ")]
        self.functions.append(body)
        return fn

    def branch_name(self, node: Any, ns: str) -> str:
        """The name fastavro matches a (name, value) tuple against: a named type's full name,
        else the type's own name."""
        if isinstance(node, str):
            if node in _MIGHT:
                return node
            return node if "." in node or not ns else f"{ns}.{node}"
        if isinstance(node, dict) and node.get("type") in ("record", "error", "enum", "fixed"):
            return _fullname(node, ns)[0]
        if isinstance(node, dict):
            return self.branch_name(node["type"], ns)
        return "union"

    def might(self, node: Any, ns: str, value: str) -> str:
        kind = self.kind(node, ns)
        if kind == "union":
            return "True"
        return _MIGHT.get("record" if kind == "error" else kind, "True").format(v=value)

    def emit_union(self, branches: list[Any], ns: str, value: str, pad: str) -> list[str]:
        """Try the branches in order; a branch fastavro might take that the compiled writer
        refuses, or a record another branch could still take, gives up."""
        fn = self.fresh("_union")
        named = self.constant("_branches", {self.branch_name(b, ns): i for i, b in enumerate(branches)})
        body = [
            f"def {fn}(v, out):",
            "    if type(v) is tuple:  # (branch name, value): the branch is named, as fastavro reads it",
            "        if len(v) != 2:",
            "            raise NotCompiled",
            f"        i = {named}[v[0]]",
            "        v = v[1]",
            "        out.append(i << 1)",
        ]
        for i, branch in enumerate(branches):
            kind = self.kind(branch, ns)
            step = "if" if i == 0 else "elif"
            if kind in ("union", "float", "double"):
                body += [f"        {step} i == {i}:", "            raise NotCompiled"]
            else:
                body += [f"        {step} i == {i}:", *self.emit(branch, ns, "v", "            ")]
        body += ["        return"]
        for i, branch in enumerate(branches):
            kind = self.kind(branch, ns)
            if kind in ("union", "float", "double"):
                body += [f"    if {self.might(branch, ns, 'v')}:", "        raise NotCompiled"]
                continue
            later = (
                " or ".join(
                    self.might(b, ns, "v")
                    for b in branches[i + 1 :]
                    if self.kind(b, ns) not in ("record", "error")
                )
                or "False"
            )  # a later record cannot beat one with all of the value's fields
            attempt = [
                "        try:",
                *self.varint(str(i << 1), "            "),
                *self.emit(branch, ns, "v", "            "),
                "        except Exception:",
                "            raise NotCompiled from None",
            ]
            if kind in ("record", "error"):
                # fastavro keeps looking after a record: a later branch of another kind that takes it wins
                attempt += [f"        if {later}:", "            raise NotCompiled", "        return"]
            else:
                attempt += ["        return"]
            body += [f"    if {self.might(branch, ns, 'v')}:", *attempt]
        body += ["    raise NotCompiled"]
        self.functions.append(body)
        return [f"{pad}{fn}({value}, out)"]


def compile_writer(schema: Any) -> Callable[[Mapping[str, Any]], bytes]:
    """Compile a schema (JSON form) into `write(record) -> bytes`, which raises NotCompiled
    for a value it leaves to fastavro."""
    gen = _WriterGenerator()
    gen.register(schema, "")
    body = gen.emit(schema, "", "record", "        ")
    source = [
        *("\n".join(fn) for fn in gen.functions),
        "def write(record):",
        "    out = bytearray()",
        "    try:",
        *body,
        "    except Exception:  # a missing field, a value of another type, a bad logical value",
        "        raise NotCompiled from None",
        "    return bytes(out)",
    ]
    import datetime
    import decimal
    import numbers
    import uuid

    namespace: dict[str, Any] = {
        "NotCompiled": NotCompiled,
        "_long": _long,
        "_Integral": numbers.Integral,
        "_Real": numbers.Real,
        "_date": datetime.date,
        "_datetime": datetime.datetime,
        "_time": datetime.time,
        "_UUID": uuid.UUID,
        "_Decimal": decimal.Decimal,
        "_Sequence": Sequence,
        "_Mapping": Mapping,
        **gen.constants,
    }
    exec(compile("\n".join(source), f"<writer {str(schema)[:40]}>", "exec"), namespace)
    write: Callable[[Mapping[str, Any]], bytes] = namespace["write"]
    return write
