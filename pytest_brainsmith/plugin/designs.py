"""Python tests over a blueprint's designs: ``@pytest.mark.brainsmith(...)`` and the
``design`` fixture.

    @pytest.mark.brainsmith("tfc_sweep.blueprint.yaml", where={"MVAU": "rtl"})
    def test_my_check(design):
        assert design.estimates["LUT"] < 20000

One test per design (ids are the design's branch labels, as in the YAML items,
so ``-k`` selects the same designs), built through the session's engine
and the shared cache: a design a YAML item and a Python test both need is built
once, also across xdist workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..core import toolchain
from ..core.engine import Engine
from ..core.errors import BlueprintError, RegistryError
from ..core.outcomes import DesignOutcome, SegmentOutcome
from ..core.tree import Segment
from ..core.verify.execute import execute_model
from .nodes import control_flow, design_outcome
from .run_context import run_context

MARKER = "brainsmith"


@dataclass
class Design:
    """A built design, read-only from the cache."""

    choices: dict[str, Any]
    config: dict[str, Any]  # the effective FINN config
    estimates: dict[str, Any]  # FINN's estimate reports (totals, per layer under "layers")
    final_model: Path  # the last segment's output model (read-only)
    report_dir: Path | None
    logs: list[Path]  # one build log per segment, root first
    results: list[SegmentOutcome] = field(repr=False)
    outcome: DesignOutcome | None = field(default=None, repr=False)

    def load_model(self) -> Any:
        """The final model as a qonnx ModelWrapper."""
        from qonnx.core.modelwrapper import ModelWrapper

        return ModelWrapper(str(self.final_model))

    @property
    def verification(self) -> dict[str, Any]:
        """Its verification (``verify:``): status, steps verified and skipped, failure."""
        return self.outcome.verification if self.outcome else {"status": "off", "steps": []}

    def execute(self, inputs: Any, *, after: str | None = None) -> Any:
        """Run the final model (or the model after the step ``after``) on ``inputs``,
        one vector per row, with FINN's execution; returns the outputs, one per row."""
        assert self.outcome is not None
        return self.outcome.execute(inputs, after=after)


def design_leaves(
    config: pytest.Config, ihook: Any, path: Path, where: dict[str, Any]
) -> list[Segment]:
    """The designs of a blueprint with the choices ``where``, from the run's one loader
    (the same trees, design cap and segments as the YAML items)."""
    tree = run_context(config).tree(path, ihook)
    if tree is None:
        raise BlueprintError(path, "abstract", "is abstract: it has no designs of its own")
    unknown = tree.space.unknown_choices(where)
    if unknown:
        raise BlueprintError(path, "where", unknown)
    leaves = []
    for leaf in tree.designs():
        choices = dict(c.describe() for c in leaf.choices())
        if all(choices.get(k) == v for k, v in where.items()):
            leaves.append(leaf)
    return leaves


def _leaves_or_fail(
    config: pytest.Config, ihook: Any, path: Path, where: dict[str, Any]
) -> list[Segment]:
    """design_leaves, with bad input reported as our message alone (no chained traceback)."""
    try:
        return design_leaves(config, ihook, path, where)
    except (BlueprintError, RegistryError) as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


def design_id(leaf: Segment) -> str:
    labels = [s.name for s in leaf.chain()[1:]]
    return "-".join(labels) or leaf.name


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "brainsmith(blueprint, where=None): run this test once per design of the blueprint "
        "(path relative to the test file; where={choice: value} narrows), with the built "
        "design in the `design` fixture",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None:
        return
    if "design" not in metafunc.fixturenames:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: @pytest.mark.brainsmith needs the `design` fixture"
        )
    if not marker.args:
        pytest.fail("@pytest.mark.brainsmith needs a blueprint path", pytrace=False)
    path = (metafunc.definition.path.parent / marker.args[0]).resolve()
    where = marker.kwargs.get("where") or {}
    leaves = _leaves_or_fail(metafunc.config, metafunc.definition.ihook, path, where)
    metafunc.parametrize("design", leaves, ids=[design_id(leaf) for leaf in leaves], indirect=True)


@pytest.fixture(scope="session")
def brainsmith_engine(pytestconfig: pytest.Config) -> Engine:
    """The run's engine: the one cache every YAML item and Python test builds through."""
    return run_context(pytestconfig).engine


@pytest.fixture(scope="session")
def brainsmith_explorer(brainsmith_engine: Engine) -> Engine:
    """The fixture's earlier name, kept for conftest.py files that use it."""
    return brainsmith_engine


def build_design(config: pytest.Config, leaf: Segment) -> Design:
    """Build (or reuse) a design; skip where a tool is missing, fail with a recorded cause."""
    outcome = design_outcome(config, leaf)
    control_flow(outcome)
    cause = outcome.failure
    if cause is not None:
        pytest.fail(
            f"design {design_id(leaf)} was not built: {outcome.reason}\n  log: {cause.log}",
            pytrace=False,
        )
    if outcome.gate is not None:  # stopped on its estimates: the rest was never built
        pytest.fail(f"design {design_id(leaf)} was not built: {outcome.reason}", pytrace=False)
    results = outcome.segments
    last = results[-1] if results else None
    if last is not None and last.key and last.output_model:
        if not Path(last.output_model).exists():  # left on the remote cache: fetched now
            why = run_context(config).cache.verify_file(last.key, toolchain.current().output_model)
            if why is not None:
                pytest.fail(f"design {design_id(leaf)}: its final model: {why}", pytrace=False)
    return Design(
        choices=outcome.choices,
        config=outcome.config,
        estimates=outcome.estimates,
        final_model=Path(str(outcome.final_model)),
        report_dir=Path(outcome.report_dir) if outcome.report_dir else None,
        logs=[Path(r.log) for r in results if r.log and r.status != "passthrough"],
        results=results,
        outcome=outcome,
    )


@pytest.fixture
def design(request: pytest.FixtureRequest) -> Design:
    """The built design of this test's parameter (see @pytest.mark.brainsmith)."""
    leaf = getattr(request, "param", None)
    if not isinstance(leaf, Segment):
        pytest.fail("the `design` fixture needs @pytest.mark.brainsmith(blueprint)", pytrace=False)
    return build_design(request.config, leaf)


class DesignLookup:
    """``brainsmith.design("x.blueprint.yaml", MVAU="hls", target_fps=100000)``: any one
    design, e.g. the sibling to compare with; built the same way as ``design``."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request

    def design(self, blueprint: str | Path, **choices: Any) -> Design:
        path = (self._request.path.parent / blueprint).resolve()
        leaves = _leaves_or_fail(self._request.config, self._request.node.ihook, path, choices)
        if len(leaves) != 1:
            pytest.fail(
                f"{path.name}: {len(leaves)} designs have the choices {choices}; name one",
                pytrace=False,
            )
        return build_design(self._request.config, leaves[0])

    def execute(self, model: str | Path, inputs: Any) -> Any:
        """Outputs of any model (e.g. the blueprint's input model, the reference a design
        is compared with; relative to the test file) on ``inputs``, one vector per row:
        executed with FINN once, then kept in the cache like ``design.execute``'s."""
        path = (self._request.path.parent / model).resolve()
        if not path.is_file():
            pytest.fail(f"brainsmith.execute: no model at {path}", pytrace=False)
        memo = run_context(self._request.config).engine.executions
        return execute_model(memo, path, inputs)


@pytest.fixture
def brainsmith(request: pytest.FixtureRequest) -> DesignLookup:
    return DesignLookup(request)
