"""A bounded walk over Avro binary data before fastavro decodes it.

fastavro trusts its input: an array of 2^40 zero-size items allocates until
MemoryError, a deeply nested recursive record overflows the C stack, a negative
union index silently picks the last branch, and trailing bytes are ignored. The
guard walks the bytes once against the writer schema, without building values,
and refuses anything that is not a canonical, bounded encoding. Only what
passes is handed to fastavro.

For speed the walk is generated per schema as straight-line Python (one
function, varints inlined, a recursive record as its own function with a depth
bound) and compiled once; reading past the end raises IndexError, which is
reported as truncated data.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from topics.errors import LedgerstreamError

MAX_DEPTH = 32
"""Deepest nesting of a recursive record accepted."""
MAX_ZERO_SIZE_ITEMS = 4096
"""Most items of a zero-byte type (null, empty record) one message may hold, across all its
arrays and maps: nested collections share the budget, so a few kilobytes cannot expand to millions."""
INT_RANGE = (-(2**31), 2**31 - 1)
LONG_RANGE = (-(2**63), 2**63 - 1)

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


class GuardViolation(LedgerstreamError, ValueError):
    """The bytes are not a bounded, canonical encoding of the writer schema."""


def _varint(buf: bytes, pos: int, max_bytes: int) -> tuple[int, int]:
    """Zigzag varint at `pos` (the slow path of the generated code)."""
    result = shift = 0
    limit = pos + max_bytes
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        if pos >= limit:
            raise GuardViolation("varint longer than its type allows")
        shift += 7


def _fullname(node: dict[str, Any], ns: str) -> tuple[str, str]:
    name = node["name"]
    own_ns = name.rpartition(".")[0] if "." in name else node.get("namespace", ns)
    return (name if "." in name or not own_ns else f"{own_ns}.{name}"), own_ns


def _references(node: Any, ns: str, out: set[str]) -> None:
    if isinstance(node, str):
        if node not in PRIMITIVES:
            out.add(node if "." in node or not ns else f"{ns}.{node}")
    elif isinstance(node, list):
        for branch in node:
            _references(branch, ns, out)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in ("record", "error"):
            _, own_ns = _fullname(node, ns)
            for f in node["fields"]:
                _references(f["type"], own_ns, out)
        elif kind == "array":
            _references(node["items"], ns, out)
        elif kind == "map":
            _references(node["values"], ns, out)
        elif not isinstance(kind, str) or kind not in PRIMITIVES | {"enum", "fixed"}:
            _references(kind, ns, out)


def varint_lines(var: str, max_bytes: int, pad: str) -> list[str]:
    """Statements reading a zigzag varint at `pos` into `var` (the one-byte case inlined)."""
    return [
        f"{pad}b = buf[pos]",
        f"{pad}if b < 0x80:",
        f"{pad}    {var} = (b >> 1) ^ -(b & 1)",
        f"{pad}    pos += 1",
        f"{pad}else:",
        f"{pad}    {var}, pos = _varint(buf, pos, {max_bytes})",
    ]


def block_header(count: str, size: str, item_min: int, pad: str) -> list[str]:
    """The head of an array's or map's block loop: read the block's item count into `count`
    (0 ends the loop), its byte size when the count is negative, and refuse a block that cannot
    fit in what is left, or zero-size items past the message's budget. The caller's
    `for ... in range(count):` follows, one level in."""
    lines = [
        f"{pad}while True:",
        *varint_lines(count, 10, pad + "    "),
        f"{pad}    if {count} == 0:",
        f"{pad}        break",
        f"{pad}    if {count} < 0:",
        f"{pad}        {count} = -{count}",
        *varint_lines(size, 10, pad + "        "),
        f"{pad}        if {size} < 0 or {size} > end - pos:",
        f"{pad}            raise GuardViolation(f'block size {{{size}}} out of range')",
    ]
    if item_min > 0:
        return [
            *lines,
            f"{pad}    if {count} * {item_min} > end - pos:",
            f"{pad}        raise GuardViolation(",
            f"{pad}            f'block of {{{count}}} items cannot fit in the {{end - pos}} bytes left')",
        ]
    return [
        *lines,
        f"{pad}    zeros[0] += {count}",
        f"{pad}    if zeros[0] > {MAX_ZERO_SIZE_ITEMS}:",
        f"{pad}        raise GuardViolation(",
        f"{pad}            f'{{zeros[0]}} zero-size items in one message exceed '",
        f"{pad}            '{MAX_ZERO_SIZE_ITEMS}')",
    ]


def min_size(
    named: dict[str, tuple[Any, str]], node: Any, ns: str, seen: frozenset[str] = frozenset()
) -> int:
    """The fewest bytes one datum of `node` takes (named types resolved through `named`)."""
    if isinstance(node, str):
        sizes = {"null": 0, "boolean": 1, "int": 1, "long": 1, "float": 4, "double": 8}
        sizes |= {"bytes": 1, "string": 1}
        if node in sizes:
            return sizes[node]
        full = node if "." in node or not ns else f"{ns}.{node}"
        if full in seen or full not in named:
            return 0
        definition, def_ns = named[full]
        return min_size(named, definition, def_ns, seen | {full})
    if isinstance(node, list):
        return 1
    kind = node["type"]
    if kind in ("record", "error"):
        full, own_ns = _fullname(node, ns)
        return sum(min_size(named, f["type"], own_ns, seen | {full}) for f in node["fields"])
    if kind in ("enum", "array", "map"):
        return 1
    if kind == "fixed":
        return int(node["size"])
    return min_size(named, kind, ns, seen)


class _Generator:
    def __init__(self) -> None:
        self.named: dict[str, tuple[Any, str]] = {}
        self.recursive_fns: dict[str, str] = {}
        self.functions: list[list[str]] = []
        self.ids = itertools.count()

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids)}"

    # sizes ---------------------------------------------------------------------

    def min_size(self, node: Any, ns: str) -> int:
        return min_size(self.named, node, ns)

    # code ----------------------------------------------------------------------

    value = staticmethod(varint_lines)

    def emit(self, node: Any, ns: str, pad: str) -> list[str]:
        """Statements that advance `pos` over one datum of `node`."""
        if isinstance(node, str):
            return self.emit_name(node, ns, pad)
        if isinstance(node, list):
            return self.emit_union(node, ns, pad)
        kind = node["type"]
        if kind in ("record", "error"):
            return self.emit_record(node, ns, pad)
        if kind == "enum":
            full, _ = _fullname(node, ns)
            self.named[full] = (node, ns)
            v = self.fresh("e")
            return [
                *self.value(v, 5, pad),
                f"{pad}if not 0 <= {v} < {len(node['symbols'])}:",
                f"{pad}    raise GuardViolation(",
                f"{pad}        f'enum symbol index {{{v}}} out of range 0..{len(node['symbols']) - 1}')",
            ]
        if kind == "fixed":
            full, _ = _fullname(node, ns)
            self.named[full] = (node, ns)
            return self.fixed(int(node["size"]), pad)
        if kind in ("array", "map"):
            return self.emit_collection(node, ns, pad)
        return self.emit(kind, ns, pad)

    @staticmethod
    def fixed(size: int, pad: str) -> list[str]:
        return [
            f"{pad}pos += {size}",
            f"{pad}if pos > end:",
            f"{pad}    raise GuardViolation('truncated data')",
        ]

    def emit_name(self, name: str, ns: str, pad: str) -> list[str]:
        if name == "null":
            return []
        if name == "boolean":
            return [
                f"{pad}if buf[pos] > 1:",
                f"{pad}    raise GuardViolation(f'boolean byte {{buf[pos]}} is neither 0 nor 1')",
                f"{pad}pos += 1",
            ]
        if name in ("int", "long"):
            low, high = INT_RANGE if name == "int" else LONG_RANGE
            v = self.fresh("i")
            return [
                *self.value(v, 5 if name == "int" else 10, pad),
                f"{pad}if not {low} <= {v} <= {high}:",
                f"{pad}    raise GuardViolation(f'{{{v}}} does not fit an Avro {name}')",
            ]
        if name in ("float", "double"):
            return self.fixed(4 if name == "float" else 8, pad)
        if name in ("bytes", "string"):
            v = self.fresh("n")
            return [
                *self.value(v, 10, pad),
                f"{pad}if {v} < 0:",
                f"{pad}    raise GuardViolation(f'negative length {{{v}}}')",
                f"{pad}if {v} > end - pos:",
                f"{pad}    raise GuardViolation(f'length {{{v}}} exceeds the {{end - pos}} bytes left')",
                f"{pad}pos += {v}",
            ]
        full = name if "." in name or not ns else f"{ns}.{name}"
        if full in self.recursive_fns:
            return [f"{pad}pos = {self.recursive_fns[full]}(buf, pos, depth + 1, zeros)"]
        if full not in self.named:
            raise GuardViolation(f"schema names unknown type {name}")
        definition, def_ns = self.named[full]
        if definition.get("type") in ("record", "error"):
            return self.record_body(definition, def_ns, pad)
        return self.emit(definition, def_ns, pad)

    def emit_record(self, node: dict[str, Any], ns: str, pad: str) -> list[str]:
        full, _ = _fullname(node, ns)
        self.named[full] = (node, ns)
        refs: set[str] = set()
        _references(node, ns, refs)
        if full not in refs:
            return self.record_body(node, ns, pad)
        fn = self.fresh("_record")
        self.recursive_fns[full] = fn
        body = [
            f"def {fn}(buf, pos, depth, zeros):",
            "    end = len(buf)",
            f"    if depth >= {MAX_DEPTH}:",
            f"        raise GuardViolation('records nested deeper than {MAX_DEPTH}')",
            *self.record_body(node, ns, "    "),
            "    return pos",
        ]
        self.functions.append(body)
        return [f"{pad}pos = {fn}(buf, pos, depth + 1, zeros)"]

    def record_body(self, node: dict[str, Any], ns: str, pad: str) -> list[str]:
        _, own_ns = _fullname(node, ns)
        lines: list[str] = []
        for f in node["fields"]:
            lines += self.emit(f["type"], own_ns, pad)
        return lines

    def emit_union(self, branches: list[Any], ns: str, pad: str) -> list[str]:
        v = self.fresh("u")
        lines = self.value(v, 5, pad)
        for i, branch in enumerate(branches):
            body = self.emit(branch, ns, pad + "    ") or [f"{pad}    pass"]
            lines += [f"{pad}{'if' if i == 0 else 'elif'} {v} == {i}:", *body]
        lines += [
            f"{pad}else:",
            f"{pad}    raise GuardViolation(f'union index {{{v}}} out of range 0..{len(branches) - 1}')",
        ]
        return lines

    def emit_collection(self, node: dict[str, Any], ns: str, pad: str) -> list[str]:
        keyed = node["type"] == "map"
        item = node["values"] if keyed else node["items"]
        item_min = self.min_size(item, ns) + (1 if keyed else 0)
        count, size, loop = self.fresh("c"), self.fresh("z"), self.fresh("_")
        inner = pad + "        "
        lines = block_header(count, size, item_min, pad)
        body = (self.emit_name("string", ns, inner) if keyed else []) + self.emit(item, ns, inner)
        lines += [f"{pad}    for {loop} in range({count}):", *(body or [f"{inner}pass"])]
        return lines


def compile_guard(schema: Any) -> Callable[[bytes, int], None]:
    """Compile a writer schema (JSON form) into `check(buf, start)`.

    `check` raises GuardViolation unless `buf[start:]` is exactly one bounded
    datum of the schema, with no bytes left over.
    """
    try:
        return _compile(schema)
    except GuardViolation:
        raise
    except (SyntaxError, RecursionError, MemoryError, KeyError, TypeError, ValueError) as e:
        # e.g. Python's parser refuses the code for about a hundred nested arrays
        raise GuardViolation(
            f"no guard can be built for this writer schema: {type(e).__name__}: {e}"
        ) from None


def _compile(schema: Any) -> Callable[[bytes, int], None]:
    gen = _Generator()
    body = gen.emit(schema, "", "        ")
    source = [
        *("\n".join(fn) for fn in gen.functions),
        "def check(buf, pos):",
        "    end = len(buf)",
        "    depth = 0",
        "    zeros = [0]",
        "    try:",
        *(body or ["        pass"]),
        "    except IndexError:",
        "        raise GuardViolation('truncated data') from None",
        "    if pos != end:",
        "        raise GuardViolation(f'{end - pos} trailing bytes after the datum')",
    ]
    namespace: dict[str, Any] = {"GuardViolation": GuardViolation, "_varint": _varint}
    exec(compile("\n".join(source), f"<guard {str(schema)[:40]}>", "exec"), namespace)
    check: Callable[[bytes, int], None] = namespace["check"]
    return check
