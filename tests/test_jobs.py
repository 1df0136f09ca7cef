"""Job statuses: which transitions the store allows; terminal states are final."""

from __future__ import annotations

import itertools

import pytest

from backend.core.status import TERMINAL, InvalidTransition, JobStatus, check_transition

Q, R, S, F, C = (
    JobStatus.QUEUED,
    JobStatus.RUNNING,
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)
ALLOWED = {(Q, R), (Q, C), (Q, F), (R, S), (R, F), (R, C)}
REFUSED = sorted(set(itertools.product(JobStatus, JobStatus)) - ALLOWED)


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED), ids=lambda s: s.value)
def test_allowed_transitions(old, new):
    check_transition(old, new)  # raises if refused


@pytest.mark.parametrize(("old", "new"), REFUSED, ids=lambda s: s.value)
def test_refused_transitions_say_which(old, new):
    with pytest.raises(InvalidTransition, match=f"cannot go from {old.value} to {new.value}"):
        check_transition(old, new)


@pytest.mark.parametrize("final", sorted(TERMINAL))
def test_terminal_states_are_final(final):
    assert final.is_terminal
    for new in JobStatus:
        with pytest.raises(InvalidTransition):
            check_transition(final, new)


def test_queued_and_running_are_not_terminal_and_show_as_their_value():
    assert not Q.is_terminal and not R.is_terminal
    assert TERMINAL == {S, F, C}
    assert str(R) == "running" and f"{C}" == "cancelled"
    assert JobStatus("succeeded") is S
