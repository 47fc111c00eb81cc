"""Dead-letter topics: the original message, with the error and its origin in headers.

Every consumer (agent or sink) has its own `dlq.<consumer>.dead_lettered.v1`. The
value and key are the original bytes; the original headers are kept and the
`dlq.*` headers say where the message came from and why it was refused.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from topics.catalog import dlq_topic
from topics.errors import LedgerstreamError
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


class DeadLetterError(LedgerstreamError):
    """A dead letter was not acknowledged: the origin offset must not be committed."""


class DeadLetters:
    """Sends refused messages to one consumer's dead-letter topic (acks=all, idempotent)."""

    def __init__(self, settings: Settings, consumer: str) -> None:
        self.consumer = consumer
        self.topic = dlq_topic(consumer)
        self._failures: list[str] = []
        self._producer = Producer(
            settings.kafka_config(**{"acks": "all", "enable.idempotence": True, "linger.ms": 0})
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
    ) -> None:
        """Queue one dead letter; `flush` confirms it."""
        kept = [(k, v) for k, v in headers or [] if not k.startswith("dlq.")]
        kept += [
            (ORIGIN_TOPIC, topic.encode()),
            (ORIGIN_PARTITION, str(partition).encode()),
            (ORIGIN_OFFSET, str(offset).encode()),
            (ERROR_CLASS, error_class.encode()),
            (ERROR_MESSAGE, reason[:4000].encode()),
            (CONSUMER, self.consumer.encode()),
            (TIME, str(time.time_ns() // 1_000_000).encode()),
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
        )

    def flush(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if remaining or failures:
            raise DeadLetterError(
                f"{self.topic}: {remaining} unacknowledged, failures: {'; '.join(failures[:3]) or 'none'}"
            )
