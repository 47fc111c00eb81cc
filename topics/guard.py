"""A bounded walk over Avro binary data before fastavro decodes it.

fastavro trusts its input: an array of 2^40 zero-size items allocates until
MemoryError, a deeply nested recursive record overflows the C stack, a negative
union index silently picks the last branch, and trailing bytes are ignored. The
guard walks the bytes once against the writer schema, without building values,
and refuses anything that is not a canonical, bounded encoding. Only what
passes is handed to fastavro.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MAX_DEPTH = 32
"""Deepest nesting of records accepted (ledgerstream's own schemas nest 4 deep)."""
MAX_ZERO_SIZE_ITEMS = 4096
"""Most items of a zero-byte type (null, empty record) one array or map may hold."""


class GuardViolation(ValueError):
    """The bytes are not a bounded, canonical encoding of the writer schema."""


Step = Callable[[bytes, int, int], int]


def _varint(buf: bytes, pos: int, max_bytes: int) -> tuple[int, int]:
    result = shift = 0
    end = len(buf)
    limit = pos + max_bytes
    while True:
        if pos >= end:
            raise GuardViolation("truncated data")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        if pos >= limit:
            raise GuardViolation("varint longer than its type allows")
        shift += 7


def _skipper(max_bytes: int) -> Step:
    def skip(buf: bytes, pos: int, depth: int) -> int:
        end = len(buf)
        limit = pos + max_bytes
        while pos < end:
            if buf[pos] < 0x80:
                return pos + 1
            pos += 1
            if pos >= limit:
                raise GuardViolation("varint longer than its type allows")
        raise GuardViolation("truncated data")

    return skip


def _fixed(size: int) -> Step:
    def fixed(buf: bytes, pos: int, depth: int) -> int:
        pos += size
        if pos > len(buf):
            raise GuardViolation("truncated data")
        return pos

    return fixed


def _null(buf: bytes, pos: int, depth: int) -> int:
    return pos


def _boolean(buf: bytes, pos: int, depth: int) -> int:
    if pos >= len(buf):
        raise GuardViolation("truncated data")
    if buf[pos] > 1:
        raise GuardViolation(f"boolean byte {buf[pos]} is neither 0 nor 1")
    return pos + 1


def _length_prefixed(buf: bytes, pos: int, depth: int) -> int:
    size, pos = _varint(buf, pos, 10)
    if size < 0:
        raise GuardViolation(f"negative length {size}")
    if size > len(buf) - pos:
        raise GuardViolation(f"length {size} exceeds the {len(buf) - pos} bytes left")
    return pos + size


class _Compiler:
    def __init__(self) -> None:
        self.named: dict[str, list[Step]] = {}
        self.min_size: dict[str, int] = {}

    def compile(self, node: Any, ns: str) -> tuple[Step, int]:
        if isinstance(node, str):
            return self._reference(node, ns)
        if isinstance(node, list):
            return self._union(node, ns)
        kind = node["type"]
        if kind in ("record", "error"):
            return self._record(node, ns)
        if kind == "enum":
            full = self._define(node, ns)
            step = self._index(len(node["symbols"]), "enum symbol")
            self.named[full][0] = step
            self.min_size[full] = 1
            return step, 1
        if kind == "fixed":
            full = self._define(node, ns)
            step = _fixed(int(node["size"]))
            self.named[full][0] = step
            self.min_size[full] = int(node["size"])
            return step, int(node["size"])
        if kind == "array":
            item, item_min = self.compile(node["items"], ns)
            return self._collection(item, item_min, keyed=False), 1
        if kind == "map":
            value, value_min = self.compile(node["values"], ns)
            return self._collection(value, value_min + 1, keyed=True), 1
        return self.compile(kind, ns)

    def _reference(self, name: str, ns: str) -> tuple[Step, int]:
        primitive = {
            "null": (_null, 0),
            "boolean": (_boolean, 1),
            "int": (_skipper(5), 1),
            "long": (_skipper(10), 1),
            "float": (_fixed(4), 4),
            "double": (_fixed(8), 8),
            "bytes": (_length_prefixed, 1),
            "string": (_length_prefixed, 1),
        }.get(name)
        if primitive:
            return primitive
        full = name if "." in name or not ns else f"{ns}.{name}"
        if full not in self.named:
            raise GuardViolation(f"schema names unknown type {name}")
        cell = self.named[full]

        def named(buf: bytes, pos: int, depth: int) -> int:
            return cell[0](buf, pos, depth)

        return named, self.min_size.get(full, 0)

    def _define(self, node: dict[str, Any], ns: str) -> str:
        name = node["name"]
        own_ns = name.rpartition(".")[0] if "." in name else node.get("namespace", ns)
        full = name if "." in name or not own_ns else f"{own_ns}.{name}"
        self.named[full] = [_null]
        return full

    def _record(self, node: dict[str, Any], ns: str) -> tuple[Step, int]:
        full = self._define(node, ns)
        own_ns = full.rpartition(".")[0]
        self.min_size[full] = 0  # while compiling: a recursive use counts as zero
        compiled = [self.compile(f["type"], own_ns) for f in node["fields"]]
        steps = tuple(step for step, _ in compiled)
        size = sum(m for _, m in compiled)

        def record(buf: bytes, pos: int, depth: int) -> int:
            if depth >= MAX_DEPTH:
                raise GuardViolation(f"records nested deeper than {MAX_DEPTH}")
            depth += 1
            for step in steps:
                pos = step(buf, pos, depth)
            return pos

        self.named[full][0] = record
        self.min_size[full] = size
        return record, size

    @staticmethod
    def _index(count: int, what: str) -> Step:
        def index(buf: bytes, pos: int, depth: int) -> int:
            value, pos = _varint(buf, pos, 5)
            if not 0 <= value < count:
                raise GuardViolation(f"{what} index {value} out of range 0..{count - 1}")
            return pos

        return index

    def _union(self, branches: list[Any], ns: str) -> tuple[Step, int]:
        steps = tuple(self.compile(b, ns)[0] for b in branches)
        count = len(steps)

        def union(buf: bytes, pos: int, depth: int) -> int:
            value, pos = _varint(buf, pos, 5)
            if not 0 <= value < count:
                raise GuardViolation(f"union index {value} out of range 0..{count - 1}")
            return steps[value](buf, pos, depth)

        return union, 1

    @staticmethod
    def _collection(item: Step, item_min: int, *, keyed: bool) -> Step:
        def collection(buf: bytes, pos: int, depth: int) -> int:
            zero_size_items = 0
            while True:
                count, pos = _varint(buf, pos, 10)
                if count == 0:
                    return pos
                if count < 0:
                    count = -count
                    _, pos = _length_prefixed_size(buf, pos)
                if item_min > 0:
                    if count * item_min > len(buf) - pos:
                        raise GuardViolation(
                            f"block of {count} items cannot fit in the {len(buf) - pos} bytes left"
                        )
                else:
                    zero_size_items += count
                    if zero_size_items > MAX_ZERO_SIZE_ITEMS:
                        raise GuardViolation(
                            f"{zero_size_items} zero-size items exceed {MAX_ZERO_SIZE_ITEMS}"
                        )
                for _ in range(count):
                    if keyed:
                        pos = _length_prefixed(buf, pos, depth)
                    pos = item(buf, pos, depth)

        return collection


def _length_prefixed_size(buf: bytes, pos: int) -> tuple[int, int]:
    size, pos = _varint(buf, pos, 10)
    if size < 0 or size > len(buf) - pos:
        raise GuardViolation(f"block size {size} out of range")
    return size, pos


def compile_guard(schema: Any) -> Callable[[bytes, int], None]:
    """Compile a writer schema (JSON form) into `check(buf, start)`.

    `check` raises GuardViolation unless `buf[start:]` is exactly one bounded
    datum of the schema, with no bytes left over.
    """
    root, _ = _Compiler().compile(schema, "")

    def check(buf: bytes, start: int) -> None:
        end = root(buf, start, 0)
        if end != len(buf):
            raise GuardViolation(f"{len(buf) - end} trailing bytes after the datum")

    return check
