"""Producing events: encode, key by the catalog, repeat routing fields in headers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.errors import LedgerstreamError
from topics.headers import Headers, routing_headers
from topics.settings import Settings


class DeliveryError(LedgerstreamError):
    """Kafka did not acknowledge one or more events."""


class Unacknowledged(DeliveryError):
    """Events still queued when the flush timed out, none refused: the broker is unreachable."""


class EventProducer:
    """An idempotent, acks=all producer of catalog events.

    Args:
        settings: where Kafka is.
        codec: encodes values (its framing decides the wire format).
        catalog: gives each topic's key field.
        redirect: writes a topic's events to another topic (a benchmark's or a replay's scratch
            copy), encoded, keyed and headed as the catalog topic's.
        **config: extra librdkafka settings (dotted names).
    """

    def __init__(
        self,
        settings: Settings,
        codec: AvroCodec,
        catalog: Catalog,
        redirect: Mapping[str, str] | None = None,
        **config: Any,
    ) -> None:
        self.codec = codec
        self.catalog = catalog
        self.redirect = dict(redirect or {})
        self._failures: list[str] = []
        self._producer = Producer(
            settings.kafka_config(
                **{
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    "compression.type": "lz4",
                },
                **config,
            )
        )

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err.str()}")

    def produce(self, topic: str, record: Mapping[str, Any]) -> None:
        """Queue one event; `flush` says whether every queued event was acknowledged."""
        spec = self.catalog.topic(topic)
        value = self.codec.encode(topic, record)
        key = spec.key_of(dict(record))
        headers = routing_headers(record["metadata"], self.codec.store.for_topic(topic).fullname)
        self.produce_encoded(self.redirect.get(topic, topic), key, value, headers)

    def produce_encoded(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes,
        headers: Headers,
        report: Callable[[KafkaError | None], None] | None = None,
    ) -> None:
        """Queue an event encoded earlier (an outbox row): the same bytes, key and headers.
        `report`, when given, is told this event's outcome (None: acknowledged) before `flush`
        returns. Raises DeliveryError when the event is refused before it is sent (too large)."""
        delivered = self._delivered
        if report is not None:

            def delivered(err: KafkaError | None, msg: Message) -> None:
                self._delivered(err, msg)
                report(err)

        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=delivered)
                break
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as e:
                raise DeliveryError(f"{topic}: {e}") from e
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every queued event; raise DeliveryError unless all were acknowledged."""
        remaining = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if remaining and not failures:
            raise Unacknowledged(f"{remaining} events still unacknowledged after {timeout:.0f}s")
        if remaining:
            failures.append(f"{remaining} events still unacknowledged after {timeout:.0f}s")
        if failures:
            raise DeliveryError("; ".join(failures[:5]) + (" ..." if len(failures) > 5 else ""))
