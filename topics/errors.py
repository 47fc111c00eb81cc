"""The project's exception tree: one root, one branch per component."""

from __future__ import annotations


class LedgerstreamError(Exception):
    """Root of every error ledgerstream raises on purpose."""


class ConfigError(LedgerstreamError):
    """A setting is missing or malformed."""


class CatalogError(LedgerstreamError):
    """The topic catalog is inconsistent, or a topic is not in it."""


class SchemaError(LedgerstreamError):
    """A schema file cannot be loaded, parsed or resolved."""


class CodecError(LedgerstreamError):
    """An event could not be encoded or decoded."""


class EncodeError(CodecError):
    """A record does not fit its topic's schema."""


class DecodeError(CodecError):
    """Bytes from a topic are not a valid event.

    Carries the raw bytes and their origin so a dead-letter topic receives the
    original message unchanged.
    """

    def __init__(
        self,
        reason: str,
        *,
        raw: bytes,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.reason = reason
        self.raw = raw
        self.topic = topic
        self.partition = partition
        self.offset = offset
        super().__init__(f"{self.origin}: {reason}")

    @property
    def origin(self) -> str:
        """`topic[partition]@offset`, as logs and dead-letter headers name a message."""
        return f"{self.topic or '?'}[{'?' if self.partition is None else self.partition}]@" + (
            "?" if self.offset is None else str(self.offset)
        )


class StackError(LedgerstreamError):
    """A service of the local stack could not be installed, started or stopped."""
