"""``--brainsmith-baseline`` and ``regress:``: CI gating on regressions. Its options
and its plugin object, as pytest's cacheprovider keeps one file per feature; the
comparing is ``core/regression/``.

- **Collection.** Each blueprint's baseline is found (beside the blueprint, in a folder
  or at an fsspec URL given by ``--brainsmith-baseline``, or a results store's run) and
  read; a bad one is the blueprint's collection error naming the file. A blueprint with
  ``regress:`` (with ``--brainsmith-baseline-update``: every blueprint) gets a
  ``baseline`` collector: a ``front`` item, and a ``gone[...]`` item per design of the
  baseline the blueprint no longer has.
- **A design's test**: once it ran, the design is compared with the baseline's design of
  the same choices; a metric past its tolerance fails it, naming the metric, the
  baseline, the value and the tolerance. The comparison rides on the design's record
  (html, junit properties, the results store, the summary).
- **front**: the blueprint's Pareto front against the baseline's (its hypervolume);
  with ``--brainsmith-baseline-update`` it writes the blueprint's baseline instead, from
  every design of the blueprint (one process writes it, also under xdist).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..core.engine import EngineClosed
from ..core.gates import number
from ..core.outcomes import DesignOutcome
from ..core.regression import storage
from ..core.regression.baseline import (
    SUFFIX,
    Baseline,
    BaselineDesign,
    BaselineError,
    document,
    dumps,
    fixed_choices,
    label,
    parse,
)
from ..core.regression.comparison import (
    DesignComparison,
    FrontComparison,
    compare_design,
    compare_front,
    gone,
)
from ..core.regression.tolerances import RegressSettings
from ..core.tree import ExecutionTree, Segment
from .nodes import BlueprintFile, DesignItem, FoldingTrialItem, design_outcome
from .pytest_internals import failure_repr
from .run_context import run_context

STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
#: the comparison of a design item, for its report
comparison_key = pytest.StashKey["DesignComparison | None"]()


def add_options(group: Any, parser: pytest.Parser) -> None:
    group.addoption(
        "--brainsmith-baseline",
        metavar="LOCATION",
        help="where blueprints' baselines are: a folder or fsspec URL (s3://BUCKET/main) "
        "holding <blueprint path>.baseline.json, one .baseline.json file, or a results store "
        "(results.sqlite, results.sqlite#RUN); default: <blueprint>.baseline.json beside each "
        "blueprint. Also the ini option brainsmith_baseline or BRAINSMITH_BASELINE",
    )
    group.addoption(
        "--brainsmith-baseline-update",
        action="store_true",
        default=None,
        help="write each blueprint's baseline from this run's designs (nothing fails on a "
        "regression), as pytest-regressions' --force-regen; also the ini option "
        "brainsmith_baseline_update or BRAINSMITH_BASELINE_UPDATE=1",
    )
    parser.addini("brainsmith_baseline", default="", help="where baselines are (see option)")
    parser.addini("brainsmith_baseline_update", type="bool", default=False, help="write baselines")


@dataclass(frozen=True)
class Source:
    """Where one blueprint's baseline is read (and, updating, written)."""

    location: str  # a file path or URL; for a store, its path
    store_run: str | None = None  # a results store's run (prefix); "" = its latest
    given: bool = False  # named by the user (not the default file beside the blueprint)

    @property
    def is_store(self) -> bool:
        return self.store_run is not None

    def __str__(self) -> str:
        if self.is_store:
            return f"{self.location}#{self.store_run}" if self.store_run else self.location
        return self.location


@dataclass
class BlueprintBaseline:
    """A blueprint's baseline as this process read it, and what it is held to."""

    path: Path  # the blueprint
    name: str
    source: Source
    baseline: Baseline | None
    settings: RegressSettings | None
    front_metrics: tuple[str, ...]
    fixed: dict[str, Any]  # what the blueprint fixes (regression/baseline.py's fixed_choices)

    @property
    def where(self) -> str:
        """Where the baseline was read (a store's run included), for messages."""
        return self.baseline.source if self.baseline is not None else str(self.source)


class BaselinePlugin:
    """Registered in every process; collection and tests happen where items run (no
    xdist, or each xdist worker)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.update = _update(config)
        self.location, self.relative_to = _location(config)
        if self.update and self.location and _is_store(self.location):
            raise pytest.UsageError(
                f"--brainsmith-baseline-update writes .baseline.json files; {self.location} "
                "is a results store (each run records itself there): give a folder or URL"
            )
        if self.update and self.location and self.location.endswith(".json"):
            raise pytest.UsageError(
                f"--brainsmith-baseline-update writes one file per blueprint; {self.location} "
                "is one file: give a folder or URL (or nothing: beside each blueprint)"
            )
        self.blueprints: dict[Path, BlueprintBaseline] = {}

    # -- where ---------------------------------------------------------------------------
    def source(self, blueprint: Path) -> Source:
        given = self.location
        if not given:
            return Source(str(blueprint.parent / (storage.stem(blueprint) + SUFFIX)))
        if _is_store(given):
            path, _, run = given.partition("#")
            if not storage.is_url(path):
                path = str(self.relative_to / Path(path).expanduser())
            return Source(path, run, given=True)
        if given.endswith(".json"):
            location = given
            if not storage.is_url(given):
                location = str(self.relative_to / Path(given).expanduser())
            return Source(location, given=True)
        try:
            relative = blueprint.relative_to(self.config.rootpath)
        except ValueError:
            relative = Path(blueprint.name)
        name = (relative.parent / (storage.stem(blueprint) + SUFFIX)).as_posix()
        if storage.is_url(given):
            return Source(f"{given.rstrip('/')}/{name}", given=True)
        return Source(str(self.relative_to / Path(given).expanduser() / name), given=True)

    # -- collection ----------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Any:
        report = yield
        if not isinstance(collector, BlueprintFile) or not report.passed or not report.result:
            return report
        try:
            nodes = self._collect(collector)
        except BaselineError as exc:  # a bad baseline: the blueprint's collection error
            report.outcome = "failed"
            report.longrepr = f"brainsmith baseline: {exc}"
            report.result = []
            return report
        report.result.extend(nodes)
        return report

    def _collect(self, file: BlueprintFile) -> list[pytest.Collector]:
        tree = run_context(self.config).tree(file.path, file.ihook)
        if tree is None:
            return []
        space = tree.space
        settings = space.regress
        source = self.source(space.path)
        try:
            found = self._read(
                source, space.name, required=settings is not None and not self.update
            )
        except BaselineError:
            if not self.update:
                raise
            found = None  # written anew from this run
        metrics = settings.front_metrics if settings is not None else _front_metrics(tree)
        fixed = fixed_choices(space)
        entry = BlueprintBaseline(space.path, space.name, source, found, settings, metrics, fixed)
        self.blueprints[Path(file.path).resolve()] = entry
        if settings is None and not self.update:
            return []  # deltas on the designs' records, nothing gated
        return [BaselineCollector.from_parent(file, name="baseline", entry=entry, tree=tree)]

    def _read(self, source: Source, blueprint: str, *, required: bool) -> Baseline | None:
        hint = (
            "write it with --brainsmith-baseline-update (and commit it beside the blueprint, "
            "or let main's CI write it to the shared location)"
        )
        if source.is_store:
            found = _from_store(source, blueprint, run_context(self.config).run_id)
        else:
            text = storage.read_text(source.location)
            found = None if text is None else parse(text, source.location, blueprint)
        if found is None and required:
            where = "has no run with designs of" if source.is_store else "holds no baseline of"
            missing = (
                f"{source} {where} blueprint {blueprint!r}"
                if source.is_store or storage.is_url(source.location)
                else f"{source}: no baseline of blueprint {blueprint!r} (the file is missing)"
            )
            raise BaselineError(f"{missing}; the blueprint has regress:; {hint}")
        return found

    def baseline_of(self, item: pytest.Item) -> BlueprintBaseline | None:
        return self.blueprints.get(Path(item.path).resolve())

    # -- a design's test -----------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Any:
        entry = self.baseline_of(item) if isinstance(item, DesignItem) else None
        if entry is None or (entry.baseline is None and entry.settings is None):
            return (yield)
        try:
            result = yield
        except BaseException:
            self._compare(item, entry)  # for its record; it fails (or skips) on its own
            raise
        comparison = self._compare(item, entry)
        if comparison is not None and comparison.regressions and not self.update:
            raise RegressionFailed(comparison, entry.where)
        return result

    def _compare(self, item: Any, entry: BlueprintBaseline) -> DesignComparison | None:
        outcome: DesignOutcome | None = item.outcome
        if outcome is None or entry.baseline is None or not outcome.estimates:
            return None  # nothing measured (not built, a tool missing): nothing to compare
        # a folding search's trial N is another folding whenever what came before it
        # changed: shown against trial N of the baseline, judged by the front only
        trial = isinstance(item, FoldingTrialItem)
        try:
            comparison = compare_design(
                entry.baseline,
                outcome.choices,
                outcome.status,
                outcome.estimates,
                outcome.verification.get("status"),
                None if trial else entry.settings,
                entry.fixed,
            )
        except Exception:  # a comparison must never cost the design its own verdict
            return None
        item.stash[comparison_key] = comparison
        if comparison.status not in ("same", "regressed"):  # -rP shows it; the summary counts it
            item.add_report_section(
                "call", "baseline", "\n".join([comparison.summary(), *comparison.lines()])
            )
        item.user_properties.append(("brainsmith.baseline", comparison.status))
        for delta in comparison.deltas:
            if delta.verdict != "same":
                item.user_properties.append((f"brainsmith.baseline.{delta.metric}", delta.baseline))
                item.user_properties.append(
                    (f"brainsmith.delta.{delta.metric}", delta.change_text())
                )
        return comparison

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        """The design's comparison on its record; a blueprint item's result on its report."""
        report = yield
        if isinstance(item, BaselineItem):
            report.brainsmith_baseline = item.result()
            return report
        record = getattr(report, "brainsmith", None)
        comparison = item.stash.get(comparison_key, None)
        if isinstance(record, dict) and comparison is not None:
            entry = self.baseline_of(item)
            record["baseline"] = comparison.as_dict(entry.where if entry else None)
            if self.config.getoption("htmlpath", None) and hasattr(report, "extras"):
                from pytest_html import extras

                from ..views.html_report import baseline_details

                details = baseline_details(record)
                if details:
                    report.extras = [*report.extras, extras.html(details)]
        return report

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """A selected ``front`` item needs every design of its blueprint: start them now."""
        if self.config.getoption("collectonly") or self.config.getoption("brainsmith_prune"):
            return
        leaves: list[Segment] = []
        for item in session.items:
            if isinstance(item, FrontItem):
                leaves.extend(item.tree.designs())
        if leaves:
            run_context(self.config).engine.submit(leaves)


class RegressionFailed(Exception):
    """A design past a tolerance: shown as the other failures of a design are, one line
    where pytest shows one (the short summary, junit's message), the comparison below."""

    def __init__(self, comparison: DesignComparison, source: str) -> None:
        super().__init__(comparison.summary())
        self.comparison = comparison
        self.source = source

    def describe_failure(self, location: Path) -> Any:
        lines = [f"design regressed against the baseline {self.source}:", *self.comparison.lines()]
        lines.append("  (meant it? --brainsmith-baseline-update writes the baseline again)")
        return failure_repr(self.comparison.summary(), lines, location)


# -- the blueprint's items ----------------------------------------------------------------
class BaselineCollector(pytest.Collector):
    """``<blueprint>::baseline``: the blueprint against its baseline as a whole."""

    def __init__(self, *, entry: BlueprintBaseline, tree: ExecutionTree, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entry = entry
        self.tree = tree

    def collect(self) -> list[pytest.Item]:
        items: list[pytest.Item] = [
            FrontItem.from_parent(self, name="front", entry=self.entry, tree=self.tree)
        ]
        plugin = self.config.pluginmanager.get_plugin("brainsmith-baseline")
        if self.entry.baseline is None or getattr(plugin, "update", False):
            return items  # updating drops what is gone
        current = [dict(c.describe() for c in leaf.choices()) for leaf in self.tree.designs()]
        folding = self.tree.space.folding
        for design in gone(self.entry.baseline, current, self.entry.fixed):
            if folding is not None and "folding" in design.choices:
                number = str(design.choices["folding"]).removeprefix("trial-")
                if number.isdigit() and int(number) < folding.trials:
                    continue  # a trial of a search the blueprint still runs
            name = "gone[" + ",".join(f"{k}={v}" for k, v in design.choices.items()) + "]"
            items.append(
                GoneItem.from_parent(
                    self, name=name.replace("::", ":"), entry=self.entry, design=design
                )
            )
        return items

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, "baseline of the blueprint"


class BaselineItem(pytest.Item):
    """A test of the blueprint as a whole against its baseline."""

    def __init__(self, *, entry: BlueprintBaseline, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entry = entry
        self.data: dict[str, Any] = {}

    def result(self) -> dict[str, Any]:
        """What the reports show of this test (JSON data, on its pytest report)."""
        return {
            "kind": self.kind,
            "nodeid": self.nodeid,
            "blueprint": self.nodeid.split("::", 1)[0],
            "blueprint_name": self.entry.name,
            "source": self.entry.where,
            **self.data,
        }

    kind = "blueprint"

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, 0, f"{self.entry.name} against its baseline"


class FrontItem(BaselineItem):
    """``<blueprint>::baseline::front``: the blueprint's Pareto front against the
    baseline's. Updating, it writes the blueprint's baseline from every design."""

    kind = "front"

    def __init__(self, *, tree: ExecutionTree, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tree = tree

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, 0, f"the Pareto front of {self.entry.name} against its baseline"

    def runtest(self) -> None:
        outcomes = self._outcomes()
        # designs not built here (the run stopped, the budget ran out, a tool is missing)
        # would shrink the front for no fault of theirs; a dominated design (skipped by the
        # Pareto gate) is not on it anyway
        unfinished = [
            o
            for o in outcomes
            if o.status == "cancelled" or (o.status == "skipped" and o.gate is None)
        ]
        if unfinished:
            pytest.skip(
                f"front not compared: {len(unfinished)} design(s) of {self.entry.name} were "
                f"not built ({unfinished[0].reason or 'the run stopped first'})"
            )
        designs = [(o.choices, o.status, o.estimates) for o in outcomes]
        entry = self.entry
        settings = entry.settings
        if entry.baseline is not None:
            tolerance = settings.front if settings is not None else None
            comparison = compare_front(entry.baseline, designs, entry.front_metrics, tolerance)
            self.data["front"] = comparison.as_dict()
            for name in ("hypervolume", "baseline_hypervolume", "verdict"):
                self.user_properties.append((f"brainsmith.front.{name}", self.data["front"][name]))
            current = [o.choices for o in outcomes]
            missing = gone(entry.baseline, current, entry.fixed)
            self.data["gone"] = [d.label for d in missing]
            self.data["new"] = [
                label(c) for c in current if entry.baseline.get(c, entry.fixed) is None
            ]
        plugin = self.config.pluginmanager.get_plugin("brainsmith-baseline")
        if getattr(plugin, "update", False):
            self._write(outcomes)
            return
        front = self.data.get("front")
        if front is not None and front["verdict"] == "regressed":
            raise FrontRegressed(comparison)
        if front is not None:
            self.add_report_section("call", "baseline", "\n".join(comparison.lines()))

    def _outcomes(self) -> list[DesignOutcome]:
        """Every design of the blueprint (folding trials included), built or reused."""
        context = run_context(self.config)
        try:
            outcomes = [design_outcome(self.config, leaf) for leaf in self.tree.designs()]
            settings = self.tree.space.folding
            for prefix in self.tree.folding_prefixes() if settings is not None else []:
                search = context.folding_search(prefix)
                for number in range(settings.trials):
                    trial = search.trial(number)
                    if trial is None:
                        break
                    outcomes.append(context.engine.design(trial))
        except EngineClosed as exc:
            pytest.skip(f"front not compared: {exc}")
        return outcomes

    def _write(self, outcomes: list[DesignOutcome]) -> None:
        from ..core.toolchain import current

        entry = self.entry
        try:
            relative = entry.path.relative_to(self.config.rootpath).as_posix()
        except ValueError:
            relative = entry.path.name
        compiler = current()
        doc = document(
            entry.name,
            [o.record() for o in outcomes],
            front_metrics=entry.front_metrics,
            blueprint_file=relative,
            toolchain=f"{compiler.name} {compiler.version}",
            fixed=entry.fixed,
        )
        try:
            storage.write_text(entry.source.location, dumps(doc))
        except BaselineError as exc:
            pytest.fail(str(exc), pytrace=False)
        self.data["written"] = entry.source.location
        self.data["designs"] = len(doc["designs"])
        self.add_report_section(
            "call", "baseline", f"wrote {entry.source.location}: {len(doc['designs'])} designs"
        )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, FrontRegressed):
            comparison = excinfo.value.comparison
            lines = [
                f"the Pareto front of {self.entry.name} regressed against the baseline "
                f"{self.entry.where}:",
                *comparison.lines(),
            ]
            return failure_repr(comparison.summary(), lines, self.path)
        return super().repr_failure(excinfo, style=style)


class FrontRegressed(Exception):
    def __init__(self, comparison: FrontComparison) -> None:
        super().__init__(comparison.summary())
        self.comparison = comparison


class GoneItem(BaselineItem):
    """``<blueprint>::baseline::gone[choices]``: a design of the baseline the blueprint
    no longer has. Fails, unless ``regress: {gone: allow}`` (then skipped, named)."""

    kind = "gone"

    def __init__(self, *, design: BaselineDesign, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.design = design
        self.data["design"] = design.label
        self.data["choices"] = design.choices

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return (
            self.path,
            0,
            f"design {self.design.label} of the baseline, gone from {self.entry.name}",
        )

    def runtest(self) -> None:
        design = self.design
        values = ", ".join(f"{m} {number(v)}" for m, v in design.estimates.items() if m in _SHOWN)
        what = (
            f"design {design.label} of the baseline {self.entry.where} is gone from "
            f"blueprint {self.entry.name} (it was {design.outcome}{': ' + values if values else ''})"
        )
        settings = self.entry.settings
        if settings is not None and settings.allow_gone:
            self.data["allowed"] = True
            pytest.skip(f"{what}; allowed by regress: {{gone: allow}}")
        pytest.fail(
            f"{what}; allow it with regress: {{gone: allow}}, or write the baseline again "
            "with --brainsmith-baseline-update",
            pytrace=False,
        )


_SHOWN = ("LUT", "BRAM_18K", "URAM", "DSP", "estimated_throughput_fps")


# -- helpers ------------------------------------------------------------------------------
def _is_store(location: str) -> bool:
    return location.partition("#")[0].endswith(STORE_SUFFIXES)


def _location(config: pytest.Config) -> tuple[str | None, Path]:
    """The baseline location given (option, environment, ini) and what a relative path
    in it is relative to."""
    given = config.getoption("brainsmith_baseline", None)
    if given:
        return given, config.invocation_params.dir
    given = os.environ.get("BRAINSMITH_BASELINE")
    if given:
        return given, Path.cwd()
    given = config.getini("brainsmith_baseline")
    if given:
        return given, config.inipath.parent if config.inipath else config.rootpath
    return None, config.rootpath


def _update(config: pytest.Config) -> bool:
    if config.getoption("brainsmith_baseline_update", None):
        return True
    value = os.environ.get("BRAINSMITH_BASELINE_UPDATE")
    if value is not None:
        if value.strip().lower() not in (*_ON, *_OFF):
            raise pytest.UsageError(
                f"BRAINSMITH_BASELINE_UPDATE: expected 1 or 0 (on, off), got {value!r}"
            )
        return value.strip().lower() in _ON
    return bool(config.getini("brainsmith_baseline_update"))


def _front_metrics(tree: ExecutionTree) -> tuple[str, ...]:
    from ..core.blueprint.regress import _default_front_metrics

    return _default_front_metrics(tree.space.explore, tree.space.folding)


def _from_store(source: Source, blueprint: str, this_run: str) -> Baseline | None:
    """The baseline a results store's run makes (its latest run with designs of the
    blueprint, or the run named), as if it had been written from that run."""
    import sqlite3

    from ..views.results_store import ResultsStore, row_dict

    path = Path(source.location)
    if not path.is_file():
        raise BaselineError(f"{source}: no results store there")
    store = ResultsStore(path, readonly=True)
    try:
        runs = [r["run_id"] for r in store.runs() if r["designs"] and r["run_id"] != this_run]
        if source.store_run:
            matches = [r for r in runs if r.startswith(source.store_run)]
            if len(matches) != 1:
                raise BaselineError(
                    f"{source}: {'no run' if not matches else 'several runs'} match "
                    f"{source.store_run!r}"
                )
            runs = matches
        for run_id in reversed(runs):
            rows = [row_dict(r) for r in store.designs(run_id, blueprint)]
            rows = [r for r in rows if r.get("blueprint_name") in (None, blueprint)]
            if rows:
                for row in rows:  # failed by a regression alone: the design itself passed
                    if row["outcome"] == "failed" and row.get("baseline") == "regressed":
                        row["outcome"] = "passed" if not row.get("error") else "failed"
                doc = document(blueprint, rows)
                return parse(dumps(doc), f"{source.location}#{run_id[:12]}", blueprint)
    except sqlite3.DatabaseError as exc:
        raise BaselineError(f"{source}: not a readable results store: {exc}") from None
    except RuntimeError as exc:  # a store of another schema version
        raise BaselineError(str(exc)) from None
    finally:
        store.close()
    return None


__all__ = ["BaselinePlugin", "add_options"]
