"""The Avro codec: fastavro for the bytes, two framings on the wire.

- Confluent framing (magic byte 0, 4-byte big-endian schema id, body) when a
  schema registry is configured, so any Schema Registry-aware tool reads the topics.
- Avro single-object encoding (`C3 01`, 8-byte little-endian CRC-64-AVRO
  fingerprint, body) when none is; the fingerprint resolves against `avro/` and
  the released versions in the schema lock.

The reader accepts both. Schemas are parsed once and cached by id or fingerprint;
nothing is parsed per message. A value written with the schema it is read with (nearly
all) is read by the writer schema's compiled reader (`topics.avro_read`), which checks
the bytes as the guard does while it builds the record; one that needs schema resolution
passes the byte guard, then fastavro. Writing goes through the schema's compiled writer
(`topics.avro_write`), which leaves to fastavro any value it is not certain of.
"""

from __future__ import annotations

import io
import json
import struct
import threading
from collections.abc import Mapping
from typing import Any

import fastavro

from topics.avro_write import NotCompiled
from topics.errors import DecodeError, EncodeError
from topics.guard import GuardViolation
from topics.money import InexactValue
from topics.schemas import SchemaStore, WriterSchema

CONFLUENT_MAGIC = 0
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_HEADER = 5
"""The magic byte and the 4-byte schema id."""
SINGLE_OBJECT_HEADER = 10
"""The 2-byte marker and the 8-byte fingerprint."""
_ID = struct.Struct(">I")

Record = dict[str, Any]


class AvroCodec:
    """Encodes records to and decodes records from topic values.

    Args:
        store: the event schemas (current and released versions).
        registry: a confluent-kafka `SchemaRegistryClient`; None selects the
            registry-less single-object framing for writing.
        auto_register: register a topic's schema at its first encode. Off by
            default: schemas are registered by `ledgerstream schemas register`
            (CI or an operator), producers only look their id up.
    """

    def __init__(self, store: SchemaStore, registry: Any = None, *, auto_register: bool = False) -> None:
        self.store = store
        self.registry = registry
        self.auto_register = auto_register
        self._ids: dict[str, int] = {}
        self._by_id: dict[int, WriterSchema] = {}
        self._allowed: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Release the registry client's connections."""
        if self.registry is not None and hasattr(self.registry, "__exit__"):
            self.registry.__exit__(None, None, None)

    @property
    def framing(self) -> str:
        return "confluent" if self.registry is not None else "single-object"

    # encoding -----------------------------------------------------------------

    def encode(self, topic: str, record: Mapping[str, Any]) -> bytes:
        """Encode `record` with `topic`'s current schema, in this codec's framing."""
        schema = self.store.for_topic(topic)
        try:
            schema.money_check(record)
        except InexactValue as e:
            raise EncodeError(f"{topic}: {e}") from e
        header = (
            bytes([CONFLUENT_MAGIC]) + _ID.pack(self.schema_id(topic))
            if self.registry is not None
            else SINGLE_OBJECT_MAGIC + schema.fingerprint
        )
        try:
            return header + schema.write(record)
        except NotCompiled:
            pass  # a value the compiled writer leaves to fastavro (which writes or refuses it)
        out = io.BytesIO()
        out.write(header)
        try:
            fastavro.schemaless_writer(out, schema.parsed, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:
            raise EncodeError(f"{topic}: record does not fit {schema.fullname}: {e}") from e
        return out.getvalue()

    def schema_id(self, topic: str) -> int:
        """The registry id of `topic`'s current schema (looked up once, then cached)."""
        cached = self._ids.get(topic)
        if cached is not None:
            return cached
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        schema = self.store.for_topic(topic)
        wanted = Schema(schema.text, "AVRO")
        try:
            if self.auto_register:
                schema_id = self.registry.register_schema(schema.subject, wanted)
            else:
                schema_id = self.registry.lookup_schema(schema.subject, wanted).schema_id
        except SchemaRegistryError as e:
            hint = "" if self.auto_register else " (run `ledgerstream schemas register`)"
            raise EncodeError(f"{topic}: schema {schema.fullname} is not registered{hint}: {e}") from e
        with self._lock:
            self._ids[topic] = schema_id
            self._by_id[schema_id] = schema
        return int(schema_id)

    # decoding -----------------------------------------------------------------

    def decode(
        self,
        data: bytes,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Record:
        """Decode a value in either framing into a record of `topic`'s current schema.

        Raises:
            DecodeError: carrying the raw bytes and their origin, for anything
                that is not a valid event.
        """
        return self.decode_with_schema(data, topic=topic, partition=partition, offset=offset)[0]

    def decode_with_schema(
        self,
        data: bytes,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> tuple[Record, WriterSchema]:
        """Like `decode`, also returning the writer schema the bytes were written with."""

        def fail(reason: str) -> DecodeError:
            return DecodeError(reason, raw=bytes(data), topic=topic, partition=partition, offset=offset)

        if data is None:
            raise fail("no value (tombstone)")
        if len(data) >= CONFLUENT_HEADER and data[0] == CONFLUENT_MAGIC:
            schema_id = _ID.unpack_from(data, 1)[0]
            writer = self._writer_by_id(schema_id, fail)
            if topic is not None and self.store.has_topic(topic):
                self._check_subject(topic, schema_id, writer, fail)
            start = CONFLUENT_HEADER
        elif data[:2] == SINGLE_OBJECT_MAGIC and len(data) >= SINGLE_OBJECT_HEADER:
            found = self.store.by_fingerprint(bytes(data[2:SINGLE_OBJECT_HEADER]))
            if found is None:
                raise fail(f"unknown schema fingerprint {bytes(data[2:SINGLE_OBJECT_HEADER]).hex()}")
            writer = found
            start = SINGLE_OBJECT_HEADER
        else:
            raise fail(f"unknown framing (first bytes {bytes(data[:2]).hex() or 'none'})")
        reader = self._reader_for(topic, writer)
        if reader is None:  # written with the schema it is read with: one compiled, checked walk
            try:
                record = writer.read(data, start)
            except GuardViolation as e:
                raise fail(f"{writer.fullname}: {e}") from None
            except Exception as e:  # a string that is not UTF-8, a uuid that is not one, ...
                raise fail(f"{writer.fullname}: {type(e).__name__}: {e}") from None
        else:
            try:
                writer.guard(data, start)
            except GuardViolation as e:
                raise fail(f"{writer.fullname}: {e}") from None
            body = io.BytesIO(data)
            body.seek(start)
            try:
                record = fastavro.schemaless_reader(body, writer.parsed, reader)
            except Exception as e:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, ...
                raise fail(f"{writer.fullname}: {type(e).__name__}: {e}") from None
        if not isinstance(record, dict):
            raise fail(f"{writer.fullname}: value is not a record")
        return record, writer

    def current_header(self, data: bytes, topic: str, writer: WriterSchema) -> bytes | None:
        """The framing header of `data`, which was decoded as `topic` with `writer`, if `writer` is
        the topic's current schema (the value was read without resolution): every value with the
        same header is of that schema, its registry id or fingerprint already checked."""
        if not self.store.has_topic(topic) or self.store.for_topic(topic).fingerprint != writer.fingerprint:
            return None
        return bytes(data[: CONFLUENT_HEADER if data[0] == CONFLUENT_MAGIC else SINGLE_OBJECT_HEADER])

    def _reader_for(self, topic: str | None, writer: WriterSchema) -> Any:
        if topic is None or not self.store.has_topic(topic):
            return None
        current = self.store.for_topic(topic)
        return None if current.fingerprint == writer.fingerprint else current.parsed

    def _writer_by_id(self, schema_id: int, fail: Any) -> WriterSchema:
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        if self.registry is None:
            raise fail(f"Confluent-framed value (schema id {schema_id}) but no schema registry is configured")
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            found = self.registry.get_schema(schema_id)
        except SchemaRegistryError as e:
            raise fail(f"unknown schema id {schema_id}: {e}") from None
        try:
            writer = WriterSchema(definition=json.loads(found.schema_str))
            _ = writer.parsed, writer.guard, writer.read
        except Exception as e:  # fastavro's parse errors, a guard that cannot be built, bad JSON
            raise fail(
                f"schema id {schema_id} is not a usable Avro schema: {type(e).__name__}: {e}"
            ) from None
        with self._lock:
            self._by_id[schema_id] = writer
        return writer

    def _check_subject(self, topic: str, schema_id: int, writer: WriterSchema, fail: Any) -> None:
        """A Confluent-framed value of `topic` may only name a released version of the topic's
        schema, or a schema registered under its subject (`<topic>-value`): any other id in the
        registry is refused, however well it would resolve."""
        if (topic, schema_id) in self._allowed:
            return
        known = self.store.by_fingerprint(writer.fingerprint)
        if known is None or known.topic != topic:
            from confluent_kafka.schema_registry import Schema
            from confluent_kafka.schema_registry.error import SchemaRegistryError

            subject = f"{topic}-value"
            try:
                registered = self.registry.lookup_schema(
                    subject, Schema(json.dumps(writer.definition), "AVRO")
                )
            except SchemaRegistryError:
                registered = None
            if registered is None or registered.schema_id != schema_id:
                raise fail(
                    f"schema id {schema_id} is neither a released version of {topic} "
                    f"nor registered under {subject}"
                )
        with self._lock:
            self._allowed.add((topic, schema_id))


def codec_from_settings(settings: Any, *, auto_register: bool = False) -> AvroCodec:
    """The codec a process uses: Confluent framing if SCHEMA_REGISTRY_URL is set."""
    from topics.schemas import load_store

    registry = None
    if settings.schema_registry_url:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        registry = SchemaRegistryClient(settings.registry_config())
    return AvroCodec(load_store(settings.avro_dir), registry, auto_register=auto_register)
