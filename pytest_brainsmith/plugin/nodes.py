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
from _pytest._code.code import ExceptionChainRepr, ReprFileLocation, ReprTracebackNative
from _pytest.fixtures import TopRequest

from ..core.blueprint import load_design_space
from ..core.cache import CacheError
from ..core.errors import BlueprintError, RegistryError
from ..core.expectations import Expectation, for_design
from ..core.explorer import Explorer, SegmentResult, segment_label
from ..core.tree import ExecutionTree, Segment, build_execution_tree
from ..finn.runner import FinnUnavailable
from ..views.records import KEY_METRICS, jsonable
from .blueprint_options import blueprint_options

explorer_key = pytest.StashKey[Explorer]()
registry_key = pytest.StashKey[Any]()
max_designs_key = pytest.StashKey[int]()
tools_key = pytest.StashKey[dict[str, str | None]]()


def skip_without_tools(leaf: Segment, tools: dict[str, str | None]) -> None:
    """Skip a design whose steps need a tool (Vivado, Vitis HLS) this machine lacks."""
    for step in leaf.path_steps():
        missing = [tools[tool] for tool in sorted(step.needs) if tools.get(tool)]
        if missing:
            pytest.skip(f"step {step.name} cannot run here: {'; '.join(missing)}")


class BlueprintFile(pytest.File):
    """A blueprint YAML file; collects its execution tree."""

    tree: ExecutionTree | None = None

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        registry = self.config.stash[registry_key].copy()
        try:
            self.ihook.pytest_brainsmith_register(registry=registry)
            space = load_design_space(
                self.path,
                registry,
                max_designs=self.config.stash[max_designs_key],
                **blueprint_options(self.config),
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
        self.checked: list[tuple[Expectation, Any]] = []  # every expectation and its value
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
        for name, value in self.choices.items():
            self.user_properties.append((f"brainsmith.choice.{name}", value))
        skip_without_tools(self.segment, self.config.stash[tools_key])

    def runtest(self) -> None:
        explorer = self.config.stash[explorer_key]
        result = explorer.ensure(self.segment)
        self.results = explorer.chain_results(self.segment)
        if not result.ok:
            failing = next(s for s in self.segment.chain() if explorer.result(s) is result)
            raise DesignBuildFailed(result, failing.designs)
        self.estimates = explorer.estimates(self.segment)
        for metric, _title, _better in KEY_METRICS:
            if metric in self.estimates:
                self.user_properties.append((f"brainsmith.{metric}", self.estimates[metric]))
        self.checked = [
            (expectation, self.estimates.get(expectation.metric))
            for expectation in for_design(self.segment.tree.space.expect, self.choices)
        ]
        misses = [(e, v) for e, v in self.checked if v is None or not e.holds(v)]
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
            return self._describe_misses(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def _describe_misses(self, exc: ExpectationsFailed) -> ExceptionChainRepr:
        lines = ["design does not meet the blueprint's expectations:"]
        short = []
        for expectation, value in exc.misses:
            got = "not reported" if value is None else f"{value:g}"
            lines.append(
                f"  {expectation}: got {expectation.metric} = {got}  (from {expectation.source})"
            )
            short.append(f"{expectation}: got {got}")
        report_dir = self.estimates.get("report_dir")
        if report_dir:
            lines.append(f"  reports: {report_dir}")
        summary = "expectations not met: " + "; ".join(short)
        return failure_repr(summary, lines, Path(report_dir) if report_dir else self.path)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        choices = ", ".join(f"{k}={v}" for k, v in self.choices.items()) or "single design"
        return self.path, None, f"design {choices}"

    def record(self) -> dict[str, Any]:
        """This design as JSON data for the reports and the results store (see records.py)."""
        explorer = self.config.stash[explorer_key]
        space = self.segment.tree.space
        segments = []
        for segment in self.segment.chain():
            result = explorer.result(segment)
            label = segment_label(segment)
            if result is None:
                status = "not-run"
            elif result.segment != label:
                status = "blocked"  # below a failed segment
            else:
                status = result.status
            own = result is not None and result.segment == label
            segments.append(
                {
                    "path": label,
                    "name": segment.name,
                    "choice": dict([segment.choice.describe()]) if segment.choice else None,
                    "steps": len(segment.steps),
                    "step_names": [s.qualified for s in segment.steps],
                    "status": status,
                    "key": explorer.key(segment),
                    "seconds": result.seconds if own and result else 0.0,
                    "log": result.log if own and result else None,
                    "step_seconds": result.step_seconds if own and result else {},
                }
            )
        failing = next((r for r in self.results if not r.ok), None)
        estimates = {k: v for k, v in self.estimates.items() if k not in ("layers", "report_dir")}
        return jsonable(
            {
                "nodeid": self.nodeid,
                "order": self.segment.index,  # the leaf's place in the tree
                "blueprint": self.nodeid.split("::", 1)[0],
                "blueprint_name": space.name,
                "choices": self.choices,
                "config": self.segment.config(),
                "estimates": estimates,
                "layers": self.estimates.get("layers", {}),
                "report_dir": self.estimates.get("report_dir"),
                "expectations": [
                    {"expect": str(e), "value": v, "met": v is not None and e.holds(v)}
                    for e, v in self.checked
                ],
                "segments": segments,
                "finn_seconds": round(sum(s["seconds"] for s in segments), 3),
                "cache_key": explorer.key(self.segment),
                "final_model": self.results[-1].output_model
                if self.results and self.results[-1].ok
                else None,
                "error": failing.error if failing else None,
                "failed_step": failing.step if failing else None,
            }
        )


def failure_repr(summary: str, lines: list[str], location: Path) -> ExceptionChainRepr:
    """A failure that reads as ``lines`` in the FAILURES section and as the one-line
    ``summary`` wherever pytest shows one message: the short test summary, junit's
    ``message``, ``--tb=line``. With a plain string that message would be the whole text,
    and on CI (where pytest does not trim the summary) every design below a failed segment
    would repeat the full cause a second time. ``location`` is the file to open (a failed
    segment's build log). Made of pytest's own repr classes so that it travels through
    xdist as it is."""
    return ExceptionChainRepr(
        [
            (
                ReprTracebackNative([line + "\n" for line in lines]),
                ReprFileLocation(str(location), 1, summary),
                None,
            )
        ]
    )


def _describe_build_failure(exc: DesignBuildFailed) -> ExceptionChainRepr:
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
    earlier = " in an earlier run" if result.status == "failed-before" else ""
    summary = f"segment {result.segment} failed{earlier} at step {result.step}: {result.error}"
    return failure_repr(summary, lines, Path(result.log) if result.log else Path(result.segment))
