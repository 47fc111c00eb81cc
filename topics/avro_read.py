"""A compiled, checked Avro reader: the guard's bounded walk that also builds the values.

Decoding is the largest per-event cost of every consumer (fastavro's reader took about
14 us of a sink's 45 us per event, the guard's walk another 3). When the bytes were written
with the reader's own schema (no schema resolution: nearly every event), one generated
function walks them once, refuses what the guard refuses, and builds the same values
fastavro builds: dicts for records, the branch's value for a union, strings for enum
symbols, and fastavro's own logical-type readers (`fastavro.read.LOGICAL_READERS`) for
uuid, timestamps, dates and decimals. Reading with a different writer schema (resolution)
stays with the guard and fastavro.

Like the guard, the walk is generated per schema as straight-line Python and compiled
once; reading past the end raises IndexError, which is reported as truncated data. A
string, bytes or fixed value is sliced without a bounds check of its own: a length that runs
past the end leaves the position past the end, which the final check refuses as truncated
(and no later read can allocate from it: a collection's item count is bounded by what is left).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from typing import Any

from fastavro.read import LOGICAL_READERS

from topics.guard import (
    INT_RANGE,
    LONG_RANGE,
    MAX_DEPTH,
    PRIMITIVES,
    GuardViolation,
    _fullname,
    _references,
    _varint,
    block_header,
    min_size,
    varint_lines,
)

_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")


class _ReaderGenerator:
    def __init__(self) -> None:
        self.named: dict[str, tuple[Any, str]] = {}
        self.recursive_fns: dict[str, str] = {}
        self.functions: list[list[str]] = []
        self.constants: dict[str, Any] = {}
        self.ids = itertools.count()

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids)}"

    def constant(self, prefix: str, value: Any) -> str:
        name = self.fresh(prefix)
        self.constants[name] = value
        return name

    @staticmethod
    def span(size: str, pad: str) -> list[str]:
        return [
            f"{pad}if {size} > end - pos:",
            f"{pad}    raise GuardViolation('truncated data')",
        ]

    # values ----------------------------------------------------------------------

    def emit(self, node: Any, ns: str, pad: str, target: str) -> list[str]:
        """Statements that read one datum of `node` at `pos` into `target` and advance `pos`."""
        if isinstance(node, str):
            return self.emit_name(node, ns, pad, target)
        if isinstance(node, list):
            return self.emit_union(node, ns, pad, target)
        kind = node["type"]
        if kind in ("record", "error"):
            return self.emit_record(node, ns, pad, target)
        if kind == "enum":
            full, _ = _fullname(node, ns)
            self.named[full] = (node, ns)
            symbols = self.constant("_symbols", tuple(node["symbols"]))
            v = self.fresh("e")
            return [
                *varint_lines(v, 5, pad),
                f"{pad}if not 0 <= {v} < {len(node['symbols'])}:",
                f"{pad}    raise GuardViolation(",
                f"{pad}        f'enum symbol index {{{v}}} out of range 0..{len(node['symbols']) - 1}')",
                f"{pad}{target} = {symbols}[{v}]",
            ]
        if kind == "fixed":
            full, _ = _fullname(node, ns)
            self.named[full] = (node, ns)
            size = int(node["size"])
            lines = [f"{pad}{target} = buf[pos:pos + {size}]", f"{pad}pos += {size}"]
            return lines + self.logical(node, "fixed", pad, target)
        if kind in ("array", "map"):
            return self.emit_collection(node, ns, pad, target)
        if isinstance(kind, str) and kind in PRIMITIVES:
            return self.emit_name(kind, ns, pad, target) + self.logical(node, kind, pad, target)
        return self.emit(kind, ns, pad, target)

    def logical(self, node: dict[str, Any], kind: str, pad: str, target: str) -> list[str]:
        """fastavro's reader for a logical type it knows (an unknown one reads as its base type)."""
        logical = node.get("logicalType")
        reader = LOGICAL_READERS.get(f"{kind}-{logical}") if logical else None
        if reader is None:
            return []
        fn = self.constant("_logical", reader)
        schema = self.constant("_schema", node)
        return [f"{pad}{target} = {fn}({target}, {schema}, None)"]

    def emit_name(self, name: str, ns: str, pad: str, target: str) -> list[str]:
        if name == "null":
            return [f"{pad}{target} = None"]
        if name == "boolean":
            return [
                f"{pad}b = buf[pos]",
                f"{pad}if b > 1:",
                f"{pad}    raise GuardViolation(f'boolean byte {{b}} is neither 0 nor 1')",
                f"{pad}{target} = b == 1",
                f"{pad}pos += 1",
            ]
        if name in ("int", "long"):
            low, high = INT_RANGE if name == "int" else LONG_RANGE
            return [
                *varint_lines(target, 5 if name == "int" else 10, pad),
                f"{pad}if not {low} <= {target} <= {high}:",
                f"{pad}    raise GuardViolation(f'{{{target}}} does not fit an Avro {name}')",
            ]
        if name in ("float", "double"):
            size = 4 if name == "float" else 8
            unpack = "_FLOAT" if name == "float" else "_DOUBLE"
            return [
                *self.span(str(size), pad),
                f"{pad}{target} = {unpack}.unpack_from(buf, pos)[0]",
                f"{pad}pos += {size}",
            ]
        if name in ("bytes", "string"):
            n = self.fresh("n")
            value = f"str(buf[pos:pos + {n}], 'utf-8')" if name == "string" else f"bytes(buf[pos:pos + {n}])"
            return [
                *varint_lines(n, 10, pad),
                f"{pad}if {n} < 0:",
                f"{pad}    raise GuardViolation(f'negative length {{{n}}}')",
                f"{pad}{target} = {value}",
                f"{pad}pos += {n}",
            ]
        full = name if "." in name or not ns else f"{ns}.{name}"
        if full in self.recursive_fns:
            return [f"{pad}{target}, pos = {self.recursive_fns[full]}(buf, pos, depth + 1, zeros)"]
        if full not in self.named:
            raise GuardViolation(f"schema names unknown type {name}")
        definition, def_ns = self.named[full]
        if definition.get("type") in ("record", "error"):
            return self.record_body(definition, def_ns, pad, target)
        return self.emit(definition, def_ns, pad, target)

    def emit_record(self, node: dict[str, Any], ns: str, pad: str, target: str) -> list[str]:
        full, _ = _fullname(node, ns)
        self.named[full] = (node, ns)
        refs: set[str] = set()
        _references(node, ns, refs)
        if full not in refs:
            return self.record_body(node, ns, pad, target)
        fn = self.fresh("_record")
        self.recursive_fns[full] = fn
        body = [
            f"def {fn}(buf, pos, depth, zeros):",
            "    end = len(buf)",
            f"    if depth >= {MAX_DEPTH}:",
            f"        raise GuardViolation('records nested deeper than {MAX_DEPTH}')",
            *self.record_body(node, ns, "    ", "value"),
            "    return value, pos",
        ]
        self.functions.append(body)
        return [f"{pad}{target}, pos = {fn}(buf, pos, depth + 1, zeros)"]

    def record_body(self, node: dict[str, Any], ns: str, pad: str, target: str) -> list[str]:
        _, own_ns = _fullname(node, ns)
        lines: list[str] = []
        fields: list[tuple[str, str]] = []
        for f in node["fields"]:
            var = self.fresh("f")
            lines += self.emit(f["type"], own_ns, pad, var)
            fields.append((f["name"], var))
        items = ", ".join(f"{name!r}: {var}" for name, var in fields)
        return [*lines, f"{pad}{target} = {{{items}}}"]

    def emit_union(self, branches: list[Any], ns: str, pad: str, target: str) -> list[str]:
        v = self.fresh("u")
        lines = varint_lines(v, 5, pad)
        for i, branch in enumerate(branches):
            body = self.emit(branch, ns, pad + "    ", target)
            lines += [f"{pad}{'if' if i == 0 else 'elif'} {v} == {i}:", *body]
        lines += [
            f"{pad}else:",
            f"{pad}    raise GuardViolation(f'union index {{{v}}} out of range 0..{len(branches) - 1}')",
        ]
        return lines

    def emit_collection(self, node: dict[str, Any], ns: str, pad: str, target: str) -> list[str]:
        keyed = node["type"] == "map"
        item = node["values"] if keyed else node["items"]
        item_min = min_size(self.named, item, ns) + (1 if keyed else 0)
        count, size, loop = self.fresh("c"), self.fresh("z"), self.fresh("_")
        key, value = self.fresh("k"), self.fresh("v")
        inner = pad + "        "
        lines = [
            f"{pad}{target} = {{}}" if keyed else f"{pad}{target} = []",
            *block_header(count, size, item_min, pad),
        ]
        body = self.emit(item, ns, inner, value)
        if keyed:
            body = [*self.emit_name("string", ns, inner, key), *body, f"{inner}{target}[{key}] = {value}"]
        else:
            body = [*body, f"{inner}{target}.append({value})"]
        lines += [f"{pad}    for {loop} in range({count}):", *body]
        return lines


def compile_reader(schema: Any) -> Callable[[bytes, int], Any]:
    """Compile a writer schema (JSON form) into `read(buf, start) -> value`.

    `read` raises GuardViolation unless `buf[start:]` is exactly one bounded datum of the
    schema, with no bytes left over, and returns what `fastavro.schemaless_reader` would
    (a string that is not UTF-8 raises UnicodeDecodeError, as fastavro's does).
    """
    try:
        return _compile(schema)
    except GuardViolation:
        raise
    except (SyntaxError, RecursionError, MemoryError, KeyError, TypeError, ValueError) as e:
        raise GuardViolation(
            f"no reader can be built for this writer schema: {type(e).__name__}: {e}"
        ) from None


def _compile(schema: Any) -> Callable[[bytes, int], Any]:
    gen = _ReaderGenerator()
    body = gen.emit(schema, "", "        ", "value")
    source = [
        *("\n".join(fn) for fn in gen.functions),
        "def read(buf, pos):",
        "    end = len(buf)",
        "    depth = 0",
        "    zeros = [0]",
        "    try:",
        *body,
        "    except IndexError:",
        "        raise GuardViolation('truncated data') from None",
        "    if pos != end:",
        "        if pos > end:",
        "            raise GuardViolation('truncated data')",
        "        raise GuardViolation(f'{end - pos} trailing bytes after the datum')",
        "    return value",
    ]
    namespace: dict[str, Any] = {
        "GuardViolation": GuardViolation,
        "_varint": _varint,
        "_FLOAT": _FLOAT,
        "_DOUBLE": _DOUBLE,
        **gen.constants,
    }
    exec(compile("\n".join(source), f"<reader {str(schema)[:40]}>", "exec"), namespace)
    read: Callable[[bytes, int], Any] = namespace["read"]
    return read
