"""An unreachable broker is waited for, not an error: outputs and dead letters stay queued."""

from __future__ import annotations

import pytest

from tests.fixtures.events import transfer_requested
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.deadletter import DeadLetters
from topics.producer import EventProducer, Unacknowledged
from topics.schemas import load_store
from topics.settings import REPO_ROOT, Settings

NOWHERE = Settings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", KAFKA_SECURITY_PROTOCOL="PLAINTEXT")


def test_events_for_an_unreachable_broker_are_unacknowledged_not_failed(catalog: Catalog) -> None:
    producer = EventProducer(
        NOWHERE,
        AvroCodec(load_store(REPO_ROOT / "avro")),
        catalog,
        **{"message.timeout.ms": 0, "log_level": 0},
    )
    producer.produce("payments.transfer.requested.v1", transfer_requested())
    with pytest.raises(Unacknowledged, match="1 events still unacknowledged"):
        producer.flush(0.5)
    with pytest.raises(Unacknowledged):  # still queued, still not refused: the runtime waits on
        producer.flush(0.5)


def test_dead_letters_for_an_unreachable_broker_wait_too(tmp_path: object) -> None:
    settings = NOWHERE.model_copy(update={"home": tmp_path})
    letters = DeadLetters(settings, "fees_agent")
    letters.send(
        topic="t", partition=0, offset=1, key=b"k", value=b"v", headers=None, error_class="E", reason="r"
    )
    with pytest.raises(Unacknowledged, match="1 dead letters unacknowledged"):
        letters.flush(0.5)
