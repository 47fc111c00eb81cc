"""The transaction lifecycle as a pure function.

INITIATED -> VALIDATING -> BALANCE_RESERVED -> SENT_TO_PROVIDER ->
PROVIDER_PROCESSING -> PROVIDER_CONFIRMING -> COMPLETED, one step at a time.
From any in-flight state a transaction may go to FAILED or COMPENSATING (a
compensating action undoes the legs already done); COMPENSATING ends in FAILED.
COMPLETED and FAILED are final.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal[
    "INITIATED",
    "VALIDATING",
    "BALANCE_RESERVED",
    "SENT_TO_PROVIDER",
    "PROVIDER_PROCESSING",
    "PROVIDER_CONFIRMING",
    "COMPLETED",
    "FAILED",
    "COMPENSATING",
]

HAPPY_PATH: tuple[Status, ...] = (
    "INITIATED",
    "VALIDATING",
    "BALANCE_RESERVED",
    "SENT_TO_PROVIDER",
    "PROVIDER_PROCESSING",
    "PROVIDER_CONFIRMING",
    "COMPLETED",
)
FINAL: frozenset[str] = frozenset({"COMPLETED", "FAILED"})


@dataclass(frozen=True)
class State:
    status: Status
    version: int


@dataclass(frozen=True)
class Applied:
    """The transition happened: the new state."""

    previous: State
    current: State


@dataclass(frozen=True)
class Unchanged:
    """A repeated report of the current status: nothing to do."""

    state: State


@dataclass(frozen=True)
class Illegal:
    """An illegal or stale report; it goes to the dead-letter topic with the reason."""

    reason: str


Outcome = Applied | Unchanged | Illegal


def allowed(current: str, target: str) -> bool:
    """Whether `current -> target` is a legal single transition."""
    if current in FINAL:
        return False
    if target in ("FAILED",):
        return True
    if target == "COMPENSATING":
        return current != "COMPENSATING"
    if current == "COMPENSATING":
        return False
    here = HAPPY_PATH.index(current)  # type: ignore[arg-type,unused-ignore]
    return target in HAPPY_PATH and HAPPY_PATH.index(target) == here + 1  # type: ignore[arg-type,unused-ignore]


def transition(state: State, target: Status, expected_version: int | None = None) -> Outcome:
    """Apply a reported status to a transaction's state."""
    if expected_version is not None and expected_version != state.version:
        if expected_version < state.version:
            return Illegal(
                f"stale report: it expected version {expected_version}, the transaction is at "
                f"version {state.version} ({state.status})"
            )
        return Illegal(
            f"report expects version {expected_version}, ahead of the transaction's {state.version}"
        )
    if target == state.status:
        return Unchanged(state)
    if not allowed(state.status, target):
        final = " (final)" if state.status in FINAL else ""
        return Illegal(f"illegal transition {state.status}{final} -> {target}")
    return Applied(state, State(target, state.version + 1))


def block_target(status: str) -> Status | None:
    """Where a block decision sends a transaction: FAILED before any money moved,
    COMPENSATING once a leg (the balance reservation) has been done; None if final."""
    if status in FINAL:
        return None
    if status in ("INITIATED", "VALIDATING"):
        return "FAILED"
    return "COMPENSATING"
