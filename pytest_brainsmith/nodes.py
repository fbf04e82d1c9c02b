"""pytest nodes: a blueprint file, one collector per inner segment, one item per design.

Node ids read like the design's choices, e.g.
``blueprints/tfc.blueprint.yaml::qonnx_to_finn..minimize_bit_width_initial::MVAU[rtl]::target_fps[100000]``
and are the same in every xdist worker (the tree is built deterministically).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from _pytest.fixtures import TopRequest

from .blueprint import load_design_space
from .cache import CacheError
from .errors import BlueprintError, RegistryError
from .expectations import Expectation
from .explorer import Explorer, SegmentResult
from .finn_runner import FinnUnavailable
from .tree import ExecutionTree, Segment, build_execution_tree

explorer_key = pytest.StashKey[Explorer]()
registry_key = pytest.StashKey[Any]()
max_designs_key = pytest.StashKey[int]()
tools_key = pytest.StashKey[dict[str, str | None]]()


class BlueprintFile(pytest.File):
    """A blueprint YAML file; collects its execution tree."""

    tree: ExecutionTree | None = None

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        registry = self.config.stash[registry_key].copy()
        try:
            self.ihook.pytest_brainsmith_register(registry=registry)
            space = load_design_space(
                self.path, registry, max_designs=self.config.stash[max_designs_key]
            )
        except (BlueprintError, RegistryError) as exc:
            raise self.CollectError(str(exc)) from None
        if space is None:  # abstract: only a parent for others to extend
            return []
        self.tree = build_execution_tree(space)
        return [_node(self, self.tree.root)]


def _node(parent: pytest.Collector, segment: Segment) -> pytest.Item | pytest.Collector:
    if segment.is_leaf:
        return DesignItem.from_parent(parent, name=segment.name, segment=segment)
    return SegmentCollector.from_parent(parent, name=segment.name, segment=segment)


class SegmentCollector(pytest.Collector):
    """An inner segment of the tree: the steps shared by every design below it."""

    def __init__(self, *, segment: Segment, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.segment = segment

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        return [_node(self, child) for child in self.segment.children]

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return (
            self.path,
            None,
            f"segment {self.name}: {', '.join(s.name for s in self.segment.steps)}",
        )


class DesignBuildFailed(Exception):
    def __init__(self, result: SegmentResult, designs_below: int) -> None:
        super().__init__(result.error)
        self.result = result
        self.designs_below = designs_below


class ExpectationsFailed(Exception):
    def __init__(self, misses: list[tuple[Expectation, Any]]) -> None:
        super().__init__(f"{len(misses)} expectation(s) not met")
        self.misses = misses


class DesignItem(pytest.Item):
    """One design: a root-to-leaf path of the execution tree."""

    def __init__(self, *, segment: Segment, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.segment = segment
        self.results: list[SegmentResult] = []
        self.estimates: dict[str, Any] = {}
        # autouse and usefixtures fixtures, as pytest's own DoctestItem does
        self.fixturenames: list[str] = []
        self.funcargs: dict[str, Any] = {}
        self._fixtureinfo = self.session._fixturemanager.getfixtureinfo(
            node=self, func=None, cls=None
        )
        self.fixturenames = list(self._fixtureinfo.names_closure)
        self._request = TopRequest(self, _ispytest=True)  # type: ignore[arg-type]

    @property
    def choices(self) -> dict[str, Any]:
        return dict(c.describe() for c in self.segment.choices())

    def setup(self) -> None:
        self._request._fillfixtures()
        tools = self.config.stash[tools_key]
        for step in self.segment.path_steps():
            missing = [tools[tool] for tool in sorted(step.needs) if tools.get(tool)]
            if missing:
                pytest.skip(f"step {step.name} cannot run here: {'; '.join(missing)}")

    def runtest(self) -> None:
        explorer = self.config.stash[explorer_key]
        result = explorer.ensure(self.segment)
        self.results = explorer.chain_results(self.segment)
        if not result.ok:
            failing = next(s for s in self.segment.chain() if explorer.result(s) is result)
            raise DesignBuildFailed(result, failing.designs)
        self.estimates = explorer.estimates(self.segment)
        misses = []
        for expectation in self.segment.tree.space.expect:
            value = self.estimates.get(expectation.metric)
            if value is None or not expectation.holds(value):
                misses.append((expectation, value))
        if misses:
            raise ExpectationsFailed(misses)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, DesignBuildFailed):
            return _describe_build_failure(excinfo.value)
        if isinstance(excinfo.value, CacheError):
            return f"brainsmith cache error: {excinfo.value}"
        if isinstance(excinfo.value, FinnUnavailable):
            return f"brainsmith: {excinfo.value}"
        if isinstance(excinfo.value, ExpectationsFailed):
            lines = ["design does not meet the blueprint's expectations:"]
            for expectation, value in excinfo.value.misses:
                got = "not reported" if value is None else f"{value:g}"
                lines.append(
                    f"  {expectation}: got {expectation.metric} = {got}  (from {expectation.source})"
                )
            report_dir = self.estimates.get("report_dir")
            if report_dir:
                lines.append(f"  reports: {report_dir}")
            return "\n".join(lines)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        choices = ", ".join(f"{k}={v}" for k, v in self.choices.items()) or "single design"
        return self.path, None, f"design {choices}"


def _describe_build_failure(exc: DesignBuildFailed) -> str:
    result = exc.result
    when = (
        "in an earlier run (recorded; --brainsmith-retry-failed rebuilds it)"
        if result.status == "failed-before"
        else "in this run"
    )
    lines = [
        f"segment {result.segment} failed {when}",
        f"  step:  {result.step}",
        f"  error: {result.error}",
        f"  log:   {result.log}",
        f"  every design below this segment ({exc.designs_below}) fails with this cause; it was built once",
    ]
    if result.traceback:
        tail = result.traceback.strip().splitlines()[-12:]
        lines.append("  traceback (last lines):")
        lines.extend(textwrap.indent("\n".join(tail), "    ").splitlines())
    return "\n".join(lines)
