"""The engine's task states as a table (core/engine/states.py): every state reachable,
every pending state can end, nothing moves a task that is done but a damaged input; the
scheduler changes a state only through the table, and a real run (registered
pure-Python steps, inline and on forked workers) only makes moves the table allows."""

from __future__ import annotations

import ast
import shutil
import time
from pathlib import Path

import pytest
from conftest import MODEL, STEPS_HEAD

from pytest_brainsmith.core.blueprint import load_design_space
from pytest_brainsmith.core.cache import SegmentCache
from pytest_brainsmith.core.engine import Engine, states
from pytest_brainsmith.core.engine.states import (
    TRANSITIONS,
    IllegalTransition,
    move,
    next_state,
    reachable,
)
from pytest_brainsmith.core.engine.tasks import PENDING, STATES
from pytest_brainsmith.core.toolchain import finn_registry
from pytest_brainsmith.core.tree import build_execution_tree

ENGINE = Path(states.__file__).parent


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


def test_a_twin_waits_without_a_lock_and_goes_on_when_its_twin_is_done():
    task = Fake("ready")
    assert move(task, "twin-building") == "held"
    assert move(task, "twin-done") == "ready"
    with pytest.raises(IllegalTransition, match="'twin-done' cannot happen"):
        move(task, "twin-done")
    # a task found to read a damaged checkpoint while started from "held" (inline)
    assert move(Fake("held"), "input-damaged") == "waiting"


def test_nothing_in_the_engine_sets_a_task_state_but_the_table():
    """Every assignment to a ``.state`` in core/engine/ is the table's own (or a new
    Task's first state): the scheduler cannot move a task past the table."""
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "state":
                    found.append(f"{path.name}:{node.lineno}")
    assert len(found) == 2 and {f.split(":")[0] for f in found} == {"states.py", "tasks.py"}, found


# -- a real run: every move it makes is in the table ------------------------------------


def _mark(model, name):
    model.set_metadata_prop("made_by", name)
    return model


def state_root(model, cfg):
    return _mark(model, "root")


def state_same_a(model, cfg):  # the same model as state_same_b: their children are twins
    return _mark(model, "same")


def state_same_b(model, cfg):
    return _mark(model, "same")


def state_slow(model, cfg):  # long enough for its twin to wait for it
    time.sleep(1.0)
    return _mark(model, "slow")


def state_fast(model, cfg):
    return _mark(model, "fast")


STEPS = """    - state_root
    - [state_same_a, state_same_b]
    - [state_slow, state_fast]
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_a_scheduler_run_only_makes_moves_the_table_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
):
    shutil.copyfile(MODEL, tmp_path / "tfc.onnx")
    (tmp_path / "e.blueprint.yaml").write_text(STEPS_HEAD + STEPS)
    registry = finn_registry()
    for step in (state_root, state_same_a, state_same_b, state_slow, state_fast):
        registry.register_step(step, reads=())
    tree = build_execution_tree(load_design_space(tmp_path / "e.blueprint.yaml", registry))
    moves: list[tuple[object, str, str]] = []
    real_move = states.move

    def recorded(task, stimulus):
        moves.append((task, task.state, stimulus))
        return real_move(task, stimulus)

    monkeypatch.setattr(states, "move", recorded)
    engine = Engine(SegmentCache(tmp_path / "cache"), workers=workers)
    try:
        engine.submit(tree.designs())  # all at once, as the plugin does
        outcomes = [engine.design(leaf) for leaf in tree.designs()]
    finally:
        engine.shutdown()
    assert [o.status for o in outcomes] == ["passed"] * 4
    assert [[s.status for s in o.segments] for o in outcomes] == [
        ["built", "built", "built"],
        ["built", "built", "built"],
        ["built", "built", "reused"],  # under a choice that made the same model: reused
        ["built", "built", "reused"],
    ]
    for _task, state, stimulus in moves:
        assert state in TRANSITIONS[stimulus], (state, stimulus)
    # replaying each task's stimuli through the table gives the state it ended in: no
    # state was set past the table
    tasks = list(engine.graph.tasks.values())
    for task in tasks:
        state = "new"
        for _, _, stimulus in (m for m in moves if m[0] is task):
            state = next_state(state, stimulus)
        assert state == task.state == "done", task.label
    stimuli = {stimulus for _, _, stimulus in moves}
    assert {"needed", "queued", "finished"} <= stimuli
    if workers:  # on workers the twin waits for the first build, then reuses it
        assert {"launched", "twin-building", "twin-done"} <= stimuli, stimuli
