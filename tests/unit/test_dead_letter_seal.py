"""Dead-letter values are sealed to their origin and open only under their key, unaltered."""

from __future__ import annotations

import secrets

import pytest
from confluent_kafka import Message

from topics.deadletter import (
    AES_GCM,
    KEY_ID,
    ORIGIN_OFFSET,
    ORIGIN_PARTITION,
    ORIGIN_TOPIC,
    SEAL,
    SealError,
    key_id,
    open_value,
    seal_value,
)
from topics.settings import Settings

KEY = secrets.token_bytes(32)
PAN_VALUE = b'{"card": "4111 1111 1111 1111", "iban": "DE89370400440532013000"}'


class Letter:
    """A consumed dead letter: the three methods `open_value` reads."""

    def __init__(self, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        self._value, self._headers = value, headers

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


def letter(value: bytes, *, key: bytes = KEY, offset: int = 41, sealed_at: int = 41) -> Message:
    sealed = seal_value(key, value, "cards.transaction.received.v1", 3, sealed_at)
    headers = [
        (ORIGIN_TOPIC, b"cards.transaction.received.v1"),
        (ORIGIN_PARTITION, b"3"),
        (ORIGIN_OFFSET, str(offset).encode()),
        (SEAL, AES_GCM),
        (KEY_ID, key_id(key).encode()),
    ]
    return Letter(sealed, headers)  # type: ignore[return-value]


def test_a_sealed_value_hides_the_card_and_account_number_and_opens_to_the_original() -> None:
    msg = letter(PAN_VALUE)
    assert b"4111" not in (msg.value() or b"") and b"DE89" not in (msg.value() or b"")
    assert open_value(KEY, msg) == PAN_VALUE


def test_another_key_cannot_open_it() -> None:
    with pytest.raises(SealError, match="sealed under key"):
        open_value(secrets.token_bytes(32), letter(PAN_VALUE))


def test_an_altered_or_moved_value_is_refused() -> None:
    msg = letter(PAN_VALUE)
    tampered = bytearray(msg.value() or b"")
    tampered[-1] ^= 1
    with pytest.raises(SealError, match="altered"):
        open_value(KEY, Letter(bytes(tampered), msg.headers()))  # type: ignore[arg-type]
    with pytest.raises(SealError, match="altered"):
        open_value(KEY, letter(PAN_VALUE, offset=42, sealed_at=41))  # headers pointing at another origin


def test_a_live_deployment_needs_its_own_key(tmp_path: object) -> None:
    from topics.errors import ConfigError

    with pytest.raises(ConfigError, match="LEDGERSTREAM_DLQ_KEY is not set"):
        Settings(LEDGERSTREAM_ENVIRONMENT="live", LEDGERSTREAM_HOME=str(tmp_path)).dead_letter_key()
    with pytest.raises(ConfigError, match="32 bytes"):
        Settings(LEDGERSTREAM_DLQ_KEY="c2hvcnQ=").dead_letter_key()


def test_the_local_key_is_made_once_and_kept(tmp_path: object) -> None:
    settings = Settings(LEDGERSTREAM_HOME=str(tmp_path))
    first = settings.dead_letter_key()
    assert len(first) == 32 and settings.dead_letter_key() == first
