"""Errors of the sinks component."""

from __future__ import annotations

from topics.errors import LedgerstreamError


class SinkError(LedgerstreamError):
    """A sink could not write a batch."""


class MigrationError(SinkError):
    """The database schema cannot be brought up to date safely."""


class PoisonEvent(SinkError):
    """An event that decodes but cannot be processed; it goes to the dead-letter topic."""
