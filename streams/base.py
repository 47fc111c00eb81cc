"""What an agent is: a batch handler of pure logic (plus shared state), run by the runtime."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from topics.errors import LedgerstreamError
from topics.events import Event


class AgentError(LedgerstreamError):
    """An agent could not process a batch."""


class Refused(AgentError):
    """An event the agent's rules refuse (illegal or stale transition, unknown entity)."""


@dataclass(frozen=True)
class Output:
    """An event an agent emits."""

    topic: str
    record: dict[str, Any]


@dataclass
class Result:
    """What one batch produced: events to emit, and events refused (to the DLQ) with why."""

    outputs: list[Output] = field(default_factory=list)
    refused: list[tuple[Event, str]] = field(default_factory=list)


class BatchHandler(ABC):
    """One agent's logic over a batch of events, in order.

    `handle` must be idempotent: the runtime may hand it a batch again after a
    crash, and then it returns the same outputs (derived events have
    deterministic ids, so consumers drop the repeats).
    """

    name: str
    """The consumer's name in the catalog (group `ledgerstream.<name>`, DLQ `dlq.<name>...`)."""
    topics: tuple[str, ...]
    """What it reads: the catalog's inputs of the consumer."""
    outputs: tuple[str, ...]
    """What it may emit: the catalog's outputs of the consumer (the runtime refuses any other)."""
    outbox_outputs: tuple[str, ...] = ()
    """What it writes to the outbox in its own transaction (the relay publishes them)."""

    @abstractmethod
    def handle(self, events: list[Event]) -> Result:
        """Process events (ordered per partition); runs in a worker thread."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
