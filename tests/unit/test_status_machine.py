from __future__ import annotations

import itertools

import pytest

from streams.status.machine import (
    FINAL,
    HAPPY_PATH,
    Applied,
    Illegal,
    State,
    Unchanged,
    allowed,
    block_target,
    transition,
)

ALL = [*HAPPY_PATH, "FAILED", "COMPENSATING"]


def test_the_happy_path_walks_one_step_at_a_time():
    state = State("INITIATED", 1)
    for target in HAPPY_PATH[1:]:
        outcome = transition(state, target)
        assert isinstance(outcome, Applied)
        assert outcome.current.version == state.version + 1
        state = outcome.current
    assert state == State("COMPLETED", 7)


IN_FLIGHT = [
    "INITIATED",
    "VALIDATING",
    "BALANCE_RESERVED",
    "SENT_TO_PROVIDER",
    "PROVIDER_PROCESSING",
    "PROVIDER_CONFIRMING",
]
LEGAL = {
    # the documented lifecycle (DOMAIN.md), one step at a time
    ("INITIATED", "VALIDATING"),
    ("VALIDATING", "BALANCE_RESERVED"),
    ("BALANCE_RESERVED", "SENT_TO_PROVIDER"),
    ("SENT_TO_PROVIDER", "PROVIDER_PROCESSING"),
    ("PROVIDER_PROCESSING", "PROVIDER_CONFIRMING"),
    ("PROVIDER_CONFIRMING", "COMPLETED"),
    # failed or compensating on error, from any state in flight; compensation ends in failed
    *((state, "FAILED") for state in IN_FLIGHT),
    *((state, "COMPENSATING") for state in IN_FLIGHT),
    ("COMPENSATING", "FAILED"),
}
"""Every legal transition, written out: COMPLETED and FAILED are final and accept nothing."""


@pytest.mark.parametrize(("current", "target"), list(itertools.product(ALL, ALL)))
def test_exactly_the_documented_transitions_are_legal(current, target):
    assert allowed(current, target) == ((current, target) in LEGAL)


def test_the_table_covers_the_lifecycle():
    assert len(LEGAL) == 6 + 6 + 6 + 1
    assert {t for _, t in LEGAL} | {s for s, _ in LEGAL} == set(ALL)
    assert not any(current in FINAL for current, _ in LEGAL)


def test_skipping_or_going_back_is_refused_with_the_reason():
    assert transition(State("VALIDATING", 2), "SENT_TO_PROVIDER") == Illegal(
        "illegal transition VALIDATING -> SENT_TO_PROVIDER"
    )
    assert isinstance(transition(State("PROVIDER_CONFIRMING", 6), "PROVIDER_PROCESSING"), Illegal)


def test_final_states_accept_nothing():
    outcome = transition(State("COMPLETED", 7), "FAILED")
    assert isinstance(outcome, Illegal) and "(final)" in outcome.reason


def test_a_repeated_report_changes_nothing():
    assert transition(State("VALIDATING", 2), "VALIDATING") == Unchanged(State("VALIDATING", 2))


def test_a_stale_version_is_refused_and_an_older_update_never_overwrites_a_newer_one():
    outcome = transition(State("SENT_TO_PROVIDER", 4), "BALANCE_RESERVED", expected_version=2)
    assert isinstance(outcome, Illegal) and "stale" in outcome.reason
    assert isinstance(
        transition(State("SENT_TO_PROVIDER", 4), "PROVIDER_PROCESSING", expected_version=4), Applied
    )
    assert isinstance(
        transition(State("SENT_TO_PROVIDER", 4), "PROVIDER_PROCESSING", expected_version=9), Illegal
    )


def test_compensation_ends_in_failed():
    state = transition(State("PROVIDER_PROCESSING", 5), "COMPENSATING")
    assert isinstance(state, Applied)
    assert isinstance(transition(state.current, "FAILED"), Applied)
    assert isinstance(transition(state.current, "COMPLETED"), Illegal)


@pytest.mark.parametrize(
    ("status", "target"),
    [
        ("INITIATED", "FAILED"),
        ("VALIDATING", "FAILED"),
        ("BALANCE_RESERVED", "COMPENSATING"),
        ("PROVIDER_CONFIRMING", "COMPENSATING"),
        ("COMPLETED", None),
        ("FAILED", None),
    ],
)
def test_a_block_fails_or_compensates(status, target):
    assert block_target(status) == target
