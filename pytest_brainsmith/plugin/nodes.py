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

from ..core import toolchain
from ..core.engine import EngineClosed, segment_label
from ..core.errors import BlueprintError, RegistryError
from ..core.outcomes import DesignOutcome, SegmentOutcome
from ..core.tree import Segment, trial_path
from ..views.records import KEY_METRICS
from .pytest_internals import ExceptionChainRepr, failure_repr, fill_fixtures, init_fixtures
from .run_context import run_context


class BlueprintFile(pytest.File):
    """A blueprint YAML file; collects its execution tree."""

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        try:
            tree = run_context(self.config).tree(self.path, self.ihook)
        except (BlueprintError, RegistryError) as exc:
            raise self.CollectError(str(exc)) from None
        if tree is None:  # abstract: only a parent for others to extend
            return []
        return [_node(self, tree.root)]


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
        nodes = [_node(self, child) for child in self.segment.children]
        tree = self.segment.tree
        if tree.space.folding is not None and self.segment in tree.folding_prefixes():
            nodes += [
                FoldingTrialItem.from_parent(
                    self, name=f"folding[trial-{n}]", segment=self.segment, number=n
                )
                for n in range(tree.space.folding.trials)
            ]
        return nodes

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return (
            self.path,
            None,
            f"segment {self.name}: {', '.join(s.name for s in self.segment.steps)}",
        )


class DesignNotBuilt(Exception):
    """A segment on the design's path failed (now or in an earlier run) or could not run."""

    def __init__(self, outcome: DesignOutcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class ExpectationsFailed(Exception):
    def __init__(self, outcome: DesignOutcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


def control_flow(outcome: DesignOutcome) -> None:
    """Skip or fail the test as the run decided: a tool is missing, a step called
    pytest.skip()/pytest.fail(), or the run stopped before the design was built."""
    if outcome.status == "skipped":
        _skip(outcome.reason or "skipped")
    if outcome.status == "cancelled":
        _skip(outcome.reason or "not built: the run stopped first")
    if outcome.status == "aborted":
        cause = outcome.failure
        control = (cause.control if cause else None) or {}
        message = control.get("message") or (outcome.reason or "")
        if control.get("type") == "Skipped":
            _skip(message)
        pytest.fail(message, pytrace=False)


def _skip(reason: str) -> None:
    """Skip, reported at the design (the blueprint), not at this plugin's line."""
    raise pytest.skip.Exception(reason, _use_item_location=True)


def design_outcome(config: pytest.Config, leaf: Segment) -> DesignOutcome:
    """The design's outcome from the engine (building it if needed)."""
    try:
        return run_context(config).engine.design(leaf)
    except EngineClosed as exc:
        pytest.skip(f"not built: {exc}")


class DesignItem(pytest.Item):
    """One design: a root-to-leaf path of the execution tree. Its test is one call into
    the engine; the verdict and the record come from the design's outcome."""

    def __init__(self, *, segment: Segment, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.segment = segment
        self.outcome: DesignOutcome | None = None
        init_fixtures(self)  # autouse and usefixtures fixtures, as pytest's DoctestItem

    @property
    def choices(self) -> dict[str, Any]:
        return dict(c.describe() for c in self.segment.choices())

    @property
    def estimates(self) -> dict[str, Any]:
        """FINN's estimates of the design once built (totals, per layer, report_dir)."""
        return self.outcome.estimates if self.outcome is not None else {}

    def setup(self) -> None:
        fill_fixtures(self)
        for name, value in self.choices.items():
            self.user_properties.append((f"brainsmith.choice.{name}", value))
        engine = run_context(self.config).engine
        if engine.limits.unrunnable(self.segment):
            self.outcome = engine.design(self.segment)  # skipped, nothing built
            control_flow(self.outcome)

    def runtest(self) -> None:
        self.outcome = outcome = design_outcome(self.config, self.segment)
        control_flow(outcome)
        verified = outcome.verification
        if verified["status"] != "off":
            self.user_properties.append(("brainsmith.verification", verified["status"]))
            step = verified.get("failed_step") or verified.get("last_verified")
            if step:
                self.user_properties.append(("brainsmith.verification.step", step))
        if outcome.failure is not None:
            raise DesignNotBuilt(outcome)
        for metric, _title, _better in KEY_METRICS:
            if metric in outcome.estimates:
                self.user_properties.append((f"brainsmith.{metric}", outcome.estimates[metric]))
        same = outcome.equivalent_to(self.nodeid)
        if same and outcome.equivalent is not None:  # a choice on its path changed nothing
            self.user_properties.append(("brainsmith.equivalent_to", same))
            self.user_properties.append(("brainsmith.equivalence", outcome.equivalent.reason))
        if outcome.status != "passed":
            raise ExpectationsFailed(outcome)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, DesignNotBuilt):
            return describe_not_built(excinfo.value.outcome)
        if isinstance(excinfo.value, ExpectationsFailed):
            return self._describe_misses(excinfo.value.outcome)
        describe = getattr(excinfo.value, "describe_failure", None)
        if describe is not None:  # a failure that says itself (a regression: plugin/baseline.py)
            return describe(self.path)
        return super().repr_failure(excinfo, style=style)

    def _describe_misses(self, outcome: DesignOutcome) -> ExceptionChainRepr:
        lines = ["design does not meet the blueprint's expectations:"]
        if outcome.gate:
            pruned = sum(1 for o in outcome.segments if o.status == "pruned")
            lines = [
                f"design missed a bound on its estimates and was stopped there ({outcome.reason});",
                f"{pruned} segment(s) of its path not built for it (pruned by the {outcome.gate} gate):",
            ]
        for expectation, value in outcome.misses:
            got = "not reported" if value is None else f"{value:g}"
            lines.append(
                f"  {expectation}: got {expectation.metric} = {got}  "
                f"(from {toolchain.current().metric_sources.get(expectation.metric, '?')})"
            )
        report_dir = outcome.report_dir
        if report_dir:
            lines.append(f"  reports: {report_dir}")
        location = Path(report_dir) if report_dir else self.path
        return failure_repr(outcome.reason or "expectations not met", lines, location)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        choices = ", ".join(f"{k}={v}" for k, v in self.choices.items()) or "single design"
        return self.path, 0, f"design {choices}"  # a line: skips are reported at the design

    def record(self) -> dict[str, Any]:
        """This design as JSON data for the reports and the results store."""
        outcome = self.outcome
        if outcome is None:  # setup failed before the engine was asked: nothing built
            engine = run_context(self.config).engine
            chain = self.segment.chain()
            outcome = DesignOutcome(
                self.segment,
                "error",
                [SegmentOutcome(segment_label(s), engine.key(s), "not-run") for s in chain],
                [engine.key(s) for s in chain],
            )
        return outcome.record(self.nodeid)


def describe_not_built(outcome: DesignOutcome) -> ExceptionChainRepr:
    """Why the design was not built: the failing segment, its step, error, log."""
    cause = outcome.failure
    assert cause is not None
    if cause.status == "error":
        lines = [f"brainsmith could not build segment {cause.segment}: {cause.error}"]
        lines += [f"  (not recorded: the machine's fault, not the design's; {cause.kind})"]
        if cause.traceback:
            lines += textwrap.indent(cause.traceback.strip(), "    ").splitlines()[-15:]
        prefix = "brainsmith cache error" if cause.kind == "cache" else "brainsmith"
        summary = f"{prefix}: {cause.error}".splitlines()[0]
        return failure_repr(summary, lines, Path(cause.log) if cause.log else Path(cause.segment))
    leaf = outcome.leaf
    below = next(
        (
            s.designs
            for s, o in zip(leaf.chain(), outcome.segments, strict=True)
            if o is cause or o.root_cause is cause
        ),
        1,
    )
    earlier = cause.status == "failed-before" and cause.earlier
    when = (
        "in an earlier run (recorded; --brainsmith-retry-failed rebuilds it)"
        if earlier
        else "in this run"
    )
    lines = [
        f"segment {cause.segment} failed {when}",
        f"  step:  {cause.step}",
        f"  error: {cause.error}",
        f"  log:   {cause.log}",
        f"  every design below this segment ({below}) fails with this cause; it was built once",
    ]
    if cause.traceback:
        if cause.kind == "exception":
            tail = cause.traceback.strip().splitlines()[-12:]
            lines.append("  traceback (last lines):")
        else:  # a dead worker: what it printed, then where its build log ends
            tail = cause.traceback.strip().splitlines()[:24]
            lines.append("  worker output:")
        lines.extend(textwrap.indent("\n".join(tail), "    ").splitlines())
    error = (cause.error or "").splitlines()[0] if cause.error else ""
    summary = f"segment {cause.segment} failed{' in an earlier run' if earlier else ''} at step {cause.step}: {error}"
    return failure_repr(summary, lines, Path(cause.log) if cause.log else Path(cause.segment))


class FoldingTrialItem(DesignItem):
    """One trial of a folding search (``design_space.folding``): the design below the
    prefix that Optuna's ``number``-th folding makes. The folding is asked for when the
    test runs (it depends on the trials before it); until then ``segment`` is the prefix."""

    def __init__(self, *, number: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.number = number
        self.prefix = self.segment

    @property
    def choices(self) -> dict[str, Any]:
        choices = dict(c.describe() for c in self.prefix.choices())
        choices["folding"] = f"trial-{self.number}"
        return choices

    def setup(self) -> None:
        super().setup()
        engine = run_context(self.config).engine
        probe = trial_path(self.prefix, self.number, {}, Path("probe.json"))
        reason = engine.limits.unrunnable(probe)  # a trial's own steps need a missing tool
        if reason:
            _skip(reason)

    def runtest(self) -> None:
        """A trial is a proposal: one that misses an ``expect:`` bound or the part is
        infeasible, skipped with the reason (the search goes on from it), not a failed
        test. The search's last trial fails if no trial of the search was feasible: the
        run's verdict is the search's best, not every proposal's."""
        search = run_context(self.config).folding_search(self.prefix)
        try:
            trial = search.trial(self.number)
        except EngineClosed as exc:
            pytest.skip(f"not built: {exc}")
        if trial is None:
            reason = search.error or "the search stopped before this trial"
            if search.out_of_time or run_context(self.config).engine.closed:
                _skip(reason)
            if search.exhausted:
                self._none_feasible(search)
                _skip(reason)
            pytest.fail(f"folding search: {reason}", pytrace=False)
        self.segment = trial
        try:
            super().runtest()
        except ExpectationsFailed as exc:
            misses = "; ".join(
                f"{e} (got {'nothing' if v is None else f'{v:,.6g}'})"
                for e, v in exc.outcome.misses
            )
            self._none_feasible(search)
            _skip(f"infeasible proposal: {misses or exc.outcome.reason}")
        beyond = search.beyond_part(self.outcome.estimates if self.outcome else {})
        if beyond:
            self._none_feasible(search)
            _skip(f"infeasible proposal: beyond the part: {'; '.join(beyond)}")

    def _none_feasible(self, search: Any) -> None:
        """On the search's last trial: fail if no trial of the search was feasible."""
        settings = self.prefix.tree.space.folding
        if self.number != settings.trials - 1:
            return
        leaves = [search.trials[n] for n in sorted(search.trials)]
        if not any(search.feasible(leaf) for leaf in leaves):
            pytest.fail(
                f"folding search: none of its {len(leaves)} trial(s) met every expectation "
                "and fit the part (each is reported as an infeasible proposal)",
                pytrace=False,
            )

    def record(self) -> dict[str, Any]:
        if self.outcome is not None:
            return super().record()
        record = super().record()  # nothing built for it: the prefix's path, not run
        record["choices"] = self.choices
        search = run_context(self.config).folding_search(self.prefix)
        record["error"] = search.error
        return record

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, 0, f"folding search trial {self.number}"
