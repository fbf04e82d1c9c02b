"""The engine's task states as a table (core/engine/states.py): every state reachable,
every pending state can end, nothing moves a task that is done but a damaged input."""

from __future__ import annotations

import pytest

from pytest_brainsmith.core.engine.states import (
    TRANSITIONS,
    IllegalTransition,
    move,
    next_state,
    reachable,
)
from pytest_brainsmith.core.engine.tasks import PENDING, STATES


class Fake:
    def __init__(self, state: str = "new") -> None:
        self.state = state
        self.label = "tfc.blueprint.yaml::a..b"


def test_every_state_is_reachable_and_every_pending_one_can_end():
    assert reachable() == set(STATES)
    for state in (*PENDING, "running"):
        assert next_state(state, "finished") == "done"
    targets = {target for moves in TRANSITIONS.values() for target in moves.values()}
    assert targets <= set(STATES)
    assert {state for moves in TRANSITIONS.values() for state in moves} <= set(STATES)


def test_a_build_goes_through_the_states_a_scheduler_sees():
    task = Fake()
    path = [move(task, s) for s in ("needed", "queued", "lock-busy", "retry", "launched")]
    assert path == ["waiting", "ready", "held", "ready", "running"]
    assert move(task, "finished") == "done"
    # a damaged checkpoint sends a done task back to be built again
    assert move(task, "input-damaged") == "waiting"


def test_a_pareto_gate_parks_and_releases():
    task = Fake("waiting")
    assert move(task, "parked") == "parked"
    assert move(task, "unparked") == "waiting"


@pytest.mark.parametrize(
    ("state", "stimulus"),
    [("new", "launched"), ("done", "finished"), ("running", "queued"), ("new", "nosuch")],
)
def test_what_cannot_happen_is_an_error_naming_the_task(state: str, stimulus: str):
    task = Fake(state)
    with pytest.raises(IllegalTransition, match="tfc.blueprint.yaml::a..b"):
        move(task, stimulus)
    assert task.state == state  # unchanged
