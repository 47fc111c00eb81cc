"""Dead-letter topics: the original message, sealed, with the error and its origin in headers.

Every consumer (agent or sink) has its own `dlq.<consumer>.dead_lettered.v1`. The
key is the original key; the original headers are kept and the `dlq.*` headers say
where the message came from and why it was refused, with card numbers redacted from
the reason. The value is the original bytes sealed with AES-256-GCM under the
dead-letter key (`Settings.dead_letter_key`), bound to its origin (topic, partition,
offset): a refused value may hold a card or account number a reader of the topic must
not see, and a redrive opens it back to the exact original bytes (`open_value`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
import traceback
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from topics.catalog import dlq_topic
from topics.errors import LedgerstreamError
from topics.masking import redact_pans
from topics.producer import Unacknowledged
from topics.settings import Settings

ORIGIN_TOPIC, ORIGIN_PARTITION, ORIGIN_OFFSET = (
    "dlq.origin.topic",
    "dlq.origin.partition",
    "dlq.origin.offset",
)
ERROR_CLASS, ERROR_MESSAGE, CONSUMER, TIME = (
    "dlq.error.class",
    "dlq.error.message",
    "dlq.consumer",
    "dlq.time",
)
SEAL, KEY_ID = "dlq.value.seal", "dlq.value.key_id"
KIP_1034 = "__streams.errors."
"""Kafka Streams' dead-letter header prefix (KIP-1034): `exception`, `message`, `stacktrace`,
`topic`, `partition` and `offset` carry the same facts as the `dlq.*` headers, so Kafka tooling
reads them."""
AES_GCM = b"aes-256-gcm"
NONCE_BYTES = 12


class SealError(LedgerstreamError):
    """A dead letter's value cannot be opened: another key, or altered."""


def key_id(key: bytes) -> str:
    """A short, public name of a dead-letter key (the first 8 bytes of its SHA-256)."""
    return hashlib.sha256(key).hexdigest()[:16]


def _origin(topic: str, partition: int, offset: int) -> bytes:
    return f"{topic}/{partition}/{offset}".encode()


def seal_value(key: bytes, value: bytes, topic: str, partition: int, offset: int) -> bytes:
    """nonce || AES-256-GCM(value), with the origin as associated data."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, value, _origin(topic, partition, offset))


def open_value(key: bytes, msg: Message) -> bytes | None:
    """The original value of a dead letter (None if the original had none)."""
    value = msg.value()
    raw: list[tuple[str, Any]] = msg.headers() or []  # type: ignore[assignment]
    headers: dict[str, bytes] = {k: bytes(v) for k, v in raw if v is not None}
    if SEAL not in headers:
        return value
    if headers[SEAL] != AES_GCM:
        raise SealError(f"unknown seal {headers[SEAL]!r}")
    if headers.get(KEY_ID) != key_id(key).encode():
        raise SealError(f"sealed under key {headers.get(KEY_ID)!r}, not this one ({key_id(key)})")
    try:
        origin = _origin(
            headers[ORIGIN_TOPIC].decode(), int(headers[ORIGIN_PARTITION]), int(headers[ORIGIN_OFFSET])
        )
    except (KeyError, ValueError):
        raise SealError("a sealed dead letter without its origin headers") from None
    if value is None or len(value) < NONCE_BYTES:
        raise SealError("a sealed value is shorter than its nonce")
    try:
        return AESGCM(key).decrypt(value[:NONCE_BYTES], value[NONCE_BYTES:], origin)
    except InvalidTag:
        raise SealError("the sealed value was altered, or moved from another origin") from None


class DeadLetterError(LedgerstreamError):
    """A dead letter was not acknowledged: the origin offset must not be committed."""


class DeadLetters:
    """Sends refused messages to one consumer's dead-letter topic (acks=all, idempotent)."""

    def __init__(self, settings: Settings, consumer: str) -> None:
        self.consumer = consumer
        self.topic = dlq_topic(consumer)
        self._key = settings.dead_letter_key()
        self._failures: list[str] = []
        # no delivery timeout: a dead letter waits for an unreachable broker, it is never dropped
        self._producer = Producer(
            settings.kafka_config(
                **{
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 0,
                    "message.timeout.ms": 0,
                }
            )
        )

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(err.str())

    def send(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, Any]] | None,
        error_class: str,
        reason: str,
        stacktrace: str = "",
    ) -> None:
        """Queue one dead letter; `flush` confirms it."""
        kept = [(k, v) for k, v in headers or [] if not k.startswith(("dlq.", KIP_1034))]
        if value is not None:
            value = seal_value(self._key, value, topic, partition, offset)
            kept += [(SEAL, AES_GCM), (KEY_ID, key_id(self._key).encode())]
        message = redact_pans(reason[:4000])[0].encode()
        kept += [
            (ORIGIN_TOPIC, topic.encode()),
            (ORIGIN_PARTITION, str(partition).encode()),
            (ORIGIN_OFFSET, str(offset).encode()),
            (ERROR_CLASS, error_class.encode()),
            (ERROR_MESSAGE, message),
            (CONSUMER, self.consumer.encode()),
            (TIME, str(time.time_ns() // 1_000_000).encode()),
            (KIP_1034 + "exception", error_class.encode()),
            (KIP_1034 + "message", message),
            (KIP_1034 + "stacktrace", redact_pans(stacktrace[-8000:])[0].encode()),
            (KIP_1034 + "topic", topic.encode()),
            (KIP_1034 + "partition", str(partition).encode()),
            (KIP_1034 + "offset", str(offset).encode()),
        ]
        self._producer.produce(self.topic, value=value, key=key, headers=kept, on_delivery=self._delivered)
        self._producer.poll(0)

    def send_message(self, msg: Message, error: BaseException) -> None:
        """Dead-letter a consumed message because of `error`."""
        self.send(
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=msg.key(),
            value=msg.value(),
            headers=msg.headers(),  # type: ignore[arg-type]
            error_class=type(error).__name__,
            reason=str(error),
            stacktrace="".join(traceback.format_exception(error)),
        )

    def flush(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if remaining and not failures:
            raise Unacknowledged(
                f"{self.topic}: {remaining} dead letters unacknowledged after {timeout:.0f}s"
            )
        if remaining or failures:
            raise DeadLetterError(
                f"{self.topic}: {remaining} unacknowledged, failures: {'; '.join(failures[:3]) or 'none'}"
            )
