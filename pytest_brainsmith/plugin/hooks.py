"""The pytest plugin (the ``brainsmith`` pytest11 entry point): options, collection of
blueprints, and the plugin objects of each role a pytest process plays:

- every process: a ``RunContext`` in the stash (registry, design cap, tools, engine);
- a process that runs tests (no xdist, or each xdist worker): ``EngineSession`` hands the
  selected designs to the engine after collection and ends its workers at the end;
- the process that reports (no xdist, or the xdist controller): ``RunRecorder`` (records,
  results store, tree export, summary), the html report, the live status line.
"""

from __future__ import annotations

import contextlib
import fnmatch
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from ..core import interrupts
from ..core.blueprint import DEFAULT_MAX_DESIGNS
from ..core.cache.errors import CacheError, EntryInUse
from ..core.cache.layout import LAYOUT
from ..core.engine import Engine
from ..core.tree import Segment
from ..finn import catalog as finn_catalog
from ..finn import runner as finn_runner
from ..views.results_store import ResultsStore
from ..views.terminal import RunRecorder
from . import baseline, cluster, designs, hookspecs, remote
from .cluster import scheduler_option
from .folding_fronts import export_fronts
from .nodes import BlueprintFile, DesignItem, FoldingTrialItem
from .run_context import (
    build_dir,
    cache_dir,
    make_run_context,
    results_path,
    run_context,
    run_key,
    run_settings,
)

DEFAULT_PATTERNS = ["*.blueprint.yaml", "*.blueprint.yml"]
#: (status, seconds) of the segments xdist workers built, gathered by the controller.
worker_builds_key = pytest.StashKey[list[tuple[str, float]]]()
recorder_key = pytest.StashKey[RunRecorder]()
#: per xdist worker: seconds waited on other workers' builds, FINN imports, processes.
worker_stats_key = pytest.StashKey[list[dict[str, float]]]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("brainsmith", "FINN design-space exploration (pytest-brainsmith)")
    group.addoption(
        "--brainsmith-cache",
        metavar="DIR",
        help="segment cache directory (default: <build dir>/cache; may be on a shared filesystem)",
    )
    group.addoption(
        "--brainsmith-max-designs",
        type=int,
        metavar="N",
        help=f"refuse blueprints with more designs than this (default {DEFAULT_MAX_DESIGNS:,})",
    )
    group.addoption(
        "--brainsmith-model",
        metavar="PATH",
        help="the input model of blueprints that name none (BrainSmith takes it from its "
        "command line); also the ini option brainsmith_model or BRAINSMITH_MODEL",
    )
    group.addoption(
        "--brainsmith-strict",
        action="store_true",
        help="blueprint warnings (an unknown key, a step operation whose target is not "
        "there, settings that disagree) are collection errors; also the ini option "
        "brainsmith_strict (unset: pytest's strict) or BRAINSMITH_STRICT=1",
    )
    group.addoption(
        "--brainsmith-retry-failed",
        action="store_true",
        help="build segments again whose failure is recorded in the cache",
    )
    group.addoption(
        "--brainsmith-rebuild",
        action="store_true",
        help="ignore cached segments and build every needed segment again",
    )
    group.addoption(
        "--brainsmith-prune",
        nargs="?",
        const="yes",
        choices=["yes", "dry-run"],
        metavar="dry-run",
        help="remove cache entries no segment of the collected blueprints uses, then exit "
        "(--brainsmith-prune=dry-run only lists them)",
    )
    group.addoption(
        "--brainsmith-keep-step-models",
        action="store_true",
        help="keep FINN's model after every step of a segment in the cache, not only the "
        "segment's last (which later segments resume from); applies to segments built now",
    )
    group.addoption(
        "--brainsmith-results",
        metavar="DB",
        help="SQLite results store every run appends its designs to "
        "(default: <build dir>/results.sqlite; 'none' to not write one)",
    )
    group.addoption(
        "--brainsmith-tree",
        nargs="?",
        const="",
        metavar="DIR",
        help="write each blueprint's execution tree with this run's segment states as "
        "<name>.tree.json and .tree.dot (default DIR: next to --html's report, else the build dir)",
    )
    group.addoption(
        "--brainsmith-status",
        choices=["auto", "off"],
        default="auto",
        help="a live status line while segments build (auto: only on a terminal)",
    )
    group.addoption(
        "--brainsmith-schedule",
        choices=["tree", "xdist"],
        default="tree",
        help="with -n and xdist's default --dist load: 'tree' (default) starts each worker on "
        "its own subtrees and lets idle workers steal; 'xdist' keeps xdist's load scheduling. "
        "Other --dist modes are left as they are",
    )
    group.addoption(
        "--brainsmith-workers",
        metavar="N",
        help="worker processes that build segments (default 'auto': the cores this process "
        "may use, shared among xdist workers; 0 builds inline in the pytest process, for pdb)",
    )
    group.addoption(
        "--brainsmith-fresh-workers",
        action="store_true",
        default=False,
        help="obsolete: every segment is built in a process of its own (accepted with a warning)",
    )
    group.addoption(
        "--brainsmith-scheduler",
        metavar="ADDRESS",
        help="build segments on a Dask cluster: a scheduler's address (tcp://HOST:8786) or "
        "'local' (a LocalCluster of this machine's cores, FINN preloaded) or a batch system "
        "(slurm, pbs, lsf, sge, htcondor, oar, moab: jobs from dask-jobqueue's config); also "
        "the ini option brainsmith_scheduler or BRAINSMITH_SCHEDULER. Every worker must see "
        "the cache",
    )
    group.addoption(
        "--brainsmith-server",
        nargs="?",
        const="on",
        metavar="IDLE",
        help="build on a warm local server kept between runs (FINN stays imported): found "
        "again by the next session, stopped after IDLE (default 15m) without work; also the "
        "ini option brainsmith_server or BRAINSMITH_SERVER=1",
    )
    group.addoption(
        "--brainsmith-timeout",
        metavar="SECONDS",
        help="end a segment's build after this long (e.g. 600, 90s, 2h) and fail its designs; "
        "a blueprint's own `timeout:` wins",
    )
    group.addoption(
        "--brainsmith-max-memory",
        metavar="SIZE",
        help="memory a segment's build may allocate (e.g. 4G); past it the build fails",
    )
    group.addoption(
        "--brainsmith-budget",
        metavar="DURATION",
        help="time budget of the run (e.g. 90s, 2h), from its start: after it no new "
        "segment starts, running ones finish, designs not reached are skipped; a later "
        "run continues from the cache",
    )
    remote.add_options(group, parser)
    baseline.add_options(group, parser)
    parser.addini(
        "brainsmith_workers", default="", help="worker processes (default auto; 0 = inline)"
    )
    parser.addini("brainsmith_budget", default="", help="time budget of the run (e.g. 2h)")
    parser.addini(
        "brainsmith_fresh_workers", default="", help="obsolete (every build has its own process)"
    )
    parser.addini("brainsmith_server", default="", help="warm server: on, off or its idle time")
    parser.addini("brainsmith_timeout", default="", help="per-segment build timeout")
    parser.addini(
        "brainsmith_scheduler", default="", help="Dask scheduler address or 'local' (see option)"
    )
    parser.addini(
        "brainsmith_jobqueue",
        type="args",
        default=[],
        help="dask config sections (jobqueue.NAME) of the batch jobs: the first for every "
        "segment, further ones job classes declaring resources (default: the scheduler's name)",
    )
    parser.addini(
        "brainsmith_resources",
        type="linelist",
        default=[],
        help="Dask worker resources a step's build holds, one 'STEP: NAME=AMOUNT, ...' a line "
        "(steps needing Vivado / Vitis HLS hold vivado=1 / vitis_hls=1 anyway); memory=SIZE "
        "is also the memory limit of the step's segments; a blueprint's step_resources wins",
    )
    parser.addini("brainsmith_max_memory", default="", help="per-segment memory limit")
    parser.addini(
        "brainsmith_blueprints",
        type="linelist",
        default=DEFAULT_PATTERNS,
        help="file name patterns of blueprints to collect (default: *.blueprint.yaml *.blueprint.yml)",
    )
    parser.addini(
        "brainsmith_build_dir",
        default="build/brainsmith",
        help="where the cache and results live (relative to rootdir)",
    )
    parser.addini(
        "brainsmith_cache", default="", help="segment cache directory (overrides <build dir>/cache)"
    )
    parser.addini("brainsmith_max_designs", default="", help="cap on designs per blueprint")
    parser.addini(
        "brainsmith_model",
        default="",
        help="input model of blueprints that name none (relative to the ini file)",
    )
    parser.addini(
        "brainsmith_strict",
        type="bool",
        default=None,
        help="blueprint warnings are errors (unset: follows pytest's strict option)",
    )
    parser.addini(
        "brainsmith_results", default="", help="results store path ('none': do not write one)"
    )


def _tree_dir(config: pytest.Config) -> Path | None:
    chosen = config.getoption("brainsmith_tree")
    if chosen is None:
        return None
    if chosen:
        return Path(chosen).expanduser().absolute()
    html_path = config.getoption("htmlpath", None)
    if html_path:
        return Path(html_path).expanduser().absolute().parent
    return build_dir(config) / "trees"


def _is_xdist_controller(config: pytest.Config) -> bool:
    return bool(
        config.pluginmanager.hasplugin("xdist")
        and config.getoption("numprocesses", None)
        and not hasattr(config, "workerinput")
    )


def pytest_configure(config: pytest.Config) -> None:
    if _is_xdist_controller(config) and scheduler_option(config):
        raise pytest.UsageError(
            "--brainsmith-scheduler and -n (pytest-xdist) do not go together: Dask schedules "
            "the segments on its workers; run without -n"
        )
    if config.getoption("brainsmith_prune") and _is_xdist_controller(config):
        # the xdist controller collects nothing, so it cannot tell what is in use
        raise pytest.UsageError("--brainsmith-prune needs a run without -n (pytest-xdist)")
    config.pluginmanager.register(designs, "brainsmith-designs")  # marker + design fixture
    config.pluginmanager.register(baseline.BaselinePlugin(config), "brainsmith-baseline")
    config.stash[run_key] = make_run_context(config)
    config.pluginmanager.register(
        remote.RemoteReport(
            config, run_settings(config), run_context(config).engine.answers.remote
        ),
        "brainsmith-remote",
    )
    collect_only = config.getoption("collectonly")
    if _is_xdist_controller(config) and not collect_only:
        # the controller collects nothing: it cannot wait to see whether designs need it
        _check_cache_writable(config)
    if not _is_xdist_controller(config) and not collect_only:
        config.pluginmanager.register(EngineSession(config), "brainsmith-engine")
    if getattr(config, "workerinput", None) is None and not collect_only:
        # the controller (or the only process) reports; workers send it their records
        results = results_path(config)
        recorder = RunRecorder(
            config,
            run_context(config).run_id,
            ResultsStore(results) if results else None,
            _tree_dir(config),
            export_foldings=partial(export_fronts, folder=build_dir(config) / "foldings"),
            running_dir=Path(cache_dir(config)) / LAYOUT / "running",
        )
        config.stash[recorder_key] = recorder
        config.pluginmanager.register(recorder, "brainsmith-recorder")
        if config.getoption("htmlpath", None) and config.pluginmanager.hasplugin("html"):
            from ..views.html_report import HtmlReportPlugin

            config.pluginmanager.register(HtmlReportPlugin(recorder), "brainsmith-html")


class EngineSession:
    """The role of a process that runs tests: after collection the engine gets every
    design the selected items need (``-k``, ``-m``, ``--lf`` and ``--deselect`` have
    already narrowed them) and starts building as items wait; at the end it stops
    its workers. SIGTERM ends the run as Ctrl-C does, with a summary and the store
    (``core/interrupts.py``: also when the first KeyboardInterrupt is swallowed)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._signals = contextlib.ExitStack()  # Ctrl-C and SIGTERM handled, then restored

    @property
    def engine(self) -> Engine:
        return run_context(self.config).engine

    @pytest.hookimpl(tryfirst=True)  # before the terminal's header, which shows the cluster
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.config.getoption("brainsmith_prune"):
            return
        context = run_context(self.config)
        context.cluster = cluster.start(self.config, context)
        self._signals.enter_context(interrupts.installed())

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.config.getoption("brainsmith_prune"):
            return
        leaves: list[Segment] = []
        context = run_context(self.config)
        for item in session.items:
            if isinstance(item, FoldingTrialItem):  # the search asks for its trials
                context.folding_search(item.prefix).want(item.number)
                continue
            if isinstance(item, DesignItem):
                leaves.append(item.segment)
                continue
            callspec = getattr(item, "callspec", None)
            param = callspec.params.get("design") if callspec is not None else None
            if isinstance(param, Segment):  # a @pytest.mark.brainsmith test
                leaves.append(param)
        if (leaves or context.searches) and not hasattr(self.config, "workerinput"):
            _check_cache_writable(self.config)  # only a run that builds needs the cache
        self.engine.submit(leaves)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> None:
        interrupts.raise_pending()  # a SIGTERM swallowed while other tests ran stops here

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        stopped = (
            exitstatus == pytest.ExitCode.INTERRUPTED or session.shouldstop or session.shouldfail
        )
        # an xdist worker that ran out of items lets its running builds finish: another
        # worker may be waiting for them
        drain = hasattr(self.config, "workerinput") and not stopped
        with warnings.catch_warnings(record=True) as caught:
            try:
                self.engine.shutdown(cancel=not drain)
            finally:
                self._close_cluster()
        _report_late_warnings(self.config, caught)
        self._signals.close()
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput["brainsmith_built"] = [
                (r.status, r.seconds) for r in self.engine.scheduler.built
            ]
            workeroutput["brainsmith_process"] = _process_stats(self.engine)
            if self.engine.answers.remote is not None:
                workeroutput["brainsmith_remote"] = self.engine.answers.remote.report()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if not self.engine.closed:  # the session ended early (an error before sessionfinish)
            self.engine.shutdown(cancel=True)
        self._close_cluster()
        self._signals.close()

    def _close_cluster(self) -> None:
        self.engine.starter.launcher.close()  # the warm server's connection (the server stays)
        context = run_context(self.config)
        if context.cluster is not None:
            context.cluster.close()
            context.cluster = None


def _report_late_warnings(config: pytest.Config, caught: list[warnings.WarningMessage]) -> None:
    """Warnings the engine raised while shutting down (the remote tier found broken by its
    last uploads) reach the warnings summary: pytest's own capture of ``pytest_sessionfinish``
    hands them over only after the summary was printed."""
    for message in caught:
        config.hook.pytest_warning_recorded.call_historic(
            kwargs={"warning_message": message, "when": "config", "nodeid": "", "location": None}
        )


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Controller at a terminal: show builds in progress (any process's) on one line."""
    config = session.config
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if (
        getattr(config, "workerinput", None) is not None
        or config.getoption("brainsmith_status") == "off"
        or reporter is None
        or not reporter.isatty()
        or config.getoption("collectonly")
    ):
        return
    try:
        tty = open("/dev/tty", "w")  # noqa: SIM115 -- the terminal, past pytest's capture
    except OSError:
        return
    from ..views.status import StatusLine

    engine = run_context(config).engine
    progress = None if _is_xdist_controller(config) else engine.progress
    line = StatusLine(engine.cache.base / "running", tty, reporter, progress=progress)
    config.pluginmanager.register(line, "brainsmith-status")
    line.start()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the design's record (and pytest-html extras) to the report that ends it."""
    report = yield
    # a passed setup carries the record too, so the controller knows the design even if
    # its xdist worker dies before the call report
    if isinstance(item, DesignItem) and call.when in ("setup", "call"):
        try:
            report.brainsmith = item.record()
        except Exception as exc:  # a record must never cost the run its session
            error = f"brainsmith could not build this design's record: {exc!r}"
            report.brainsmith = {
                "nodeid": item.nodeid,
                "blueprint": item.nodeid.split("::", 1)[0],
                "choices": item.choices,
                "segments": [],
                "error": error,
            }
            if call.when == "call" and report.passed:  # never a pass without its results
                report.outcome = "failed"
                report.longrepr = error
        if item.config.getoption("htmlpath", None) and (
            call.when == "call" or report.outcome != "passed"
        ):
            from ..views.html_report import design_extras

            report.extras = [*getattr(report, "extras", []), *design_extras(report.brainsmith)]
    return report


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist controller: replace the default load scheduling with subtree scheduling."""
    if config.getvalue("dist") == "load" and config.getoption("brainsmith_schedule") == "tree":
        from .xdist_scheduling import TreeScheduling

        return TreeScheduling(config, log)
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: every worker shares this run's id (for --brainsmith-rebuild)."""
    node.workerinput["brainsmith_run_id"] = run_context(node.config).run_id


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> BlueprintFile | None:
    patterns = parent.config.getini("brainsmith_blueprints")
    if any(fnmatch.fnmatch(file_path.name, p) for p in patterns):
        return BlueprintFile.from_parent(parent, path=file_path)
    return None


def pytest_report_header(config: pytest.Config) -> list[str]:
    context = run_context(config)
    missing = ", ".join(sorted(t for t, why in context.tools.items() if why)) or "none"
    workers = context.engine.starter.workers
    pool = (
        f"{workers} worker process(es)" if workers else "building inline (--brainsmith-workers 0)"
    )
    if context.cluster is not None:
        pool = "segments built on Dask"
    lines = [
        f"brainsmith: FINN {finn_catalog.FINN_VERSION} (finn-plus), cache {cache_dir(config)}, "
        f"{pool}, missing tools: {missing}"
    ]
    if context.cluster is not None:
        lines.append(cluster.header(context.cluster))
    return lines


def pytest_collection_finish(session: pytest.Session) -> None:
    mode = session.config.getoption("brainsmith_prune")
    if not mode or session.config.getoption("collectonly"):
        return
    if getattr(session.config, "workerinput", None) is not None:
        return
    engine = run_context(session.config).engine
    keep: set[str] = set()
    searched: set[str] = set()  # folding searches' shared steps: their trials are kept
    for item in session.items:
        if isinstance(item, DesignItem):
            keep.update(k for k in (engine.key(s) for s in item.segment.chain()) if k)
        if isinstance(item, FoldingTrialItem):
            searched.update(k for k in [engine.key(item.prefix)] if k)
    cache = engine.cache
    keep |= cache.pruning.descendants(searched)
    unused = cache.pruning.prunable(keep)  # also damaged and quarantined entries
    sizes = {k: cache.pruning.size_bytes(k) for k in unused}
    size = sum(sizes.values())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    verb = "would remove" if mode == "dry-run" else "removed"
    in_use: list[str] = []
    failed: list[str] = []
    for key in unused:
        line = f"brainsmith prune: {verb} {key}"
        if mode != "dry-run":
            try:
                cache.pruning.remove(key)
            except EntryInUse as exc:  # a build of it runs now: not unused after all
                in_use.append(key)
                size -= sizes[key]
                line = f"brainsmith prune: kept {exc}"
            except CacheError as exc:
                failed.append(key)
                size -= sizes[key]
                line = f"brainsmith prune: {exc}"
        if reporter is not None:
            reporter.write_line(line)
    kept = cache.pruning.size_bytes() if mode != "dry-run" else cache.pruning.size_bytes() - size
    done = len(unused) - len(in_use) - len(failed)
    pytest.exit(
        f"brainsmith prune: {verb} {done} unused cache entries ({size / 1e6:.1f} MB); "
        + (f"{len(in_use)} in use kept; " if in_use else "")
        + (f"{len(failed)} could not be removed (above); " if failed else "")
        + f"the collected designs use {len(keep)} segments; {kept / 1e6:.1f} MB remain in "
        f"{cache.root}",
        returncode=1 if failed else 0,
    )


def _check_cache_writable(config: pytest.Config) -> None:
    """An empty cache that cannot be written is one usage error, not a failure per design;
    a run that builds nothing (--collect-only, no blueprints) needs no cache at all."""
    try:
        run_context(config).cache.check_writable()
    except CacheError as exc:
        raise pytest.UsageError(str(exc)) from None


def _process_stats(engine: Engine) -> dict[str, float]:
    return {
        "waited": round(engine.key_locks.waited, 3),
        "finn_imports": finn_runner.import_count + engine.starter.toolchain_imports,
        "processes": engine.starter.processes,
    }


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect what each worker built."""
    output = getattr(node, "workeroutput", {})
    node.config.stash.setdefault(worker_builds_key, []).extend(output.get("brainsmith_built", []))
    if "brainsmith_process" in output:
        node.config.stash.setdefault(worker_stats_key, []).append(output["brainsmith_process"])


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    context = config.stash.get(run_key, None)
    if context is None:
        return
    engine = context.engine
    builds = [(r.status, r.seconds) for r in engine.scheduler.built]
    builds += config.stash.get(worker_builds_key, [])
    recorder = config.stash.get(recorder_key, None)
    interrupted = int(exitstatus) == pytest.ExitCode.INTERRUPTED
    lines = recorder.summary_lines(interrupted=interrupted) if recorder is not None else []
    if not builds and not lines:
        return
    built = sum(1 for status, _ in builds if status == "built")
    failed = sum(1 for status, _ in builds if status == "failed")
    unreported = built - (recorder.built_segments() if recorder is not None else built)
    if unreported > 0:  # built for designs an interrupted run never reported
        lines.insert(
            2,
            f"segments: {unreported} more built for designs not reported (in the cache: "
            "the next run reuses them)",
        )
    terminalreporter.write_sep("-", "brainsmith")
    for line in lines + cluster.lost_jobs(engine.starter.launcher):
        terminalreporter.write_line(line)
    stats = config.stash.get(worker_stats_key, []) or [_process_stats(engine)]
    imports = sum(int(s["finn_imports"]) for s in stats)
    processes = sum(int(s.get("processes", 0)) for s in stats)
    waited = sum(s["waited"] for s in stats)
    terminalreporter.write_line(
        f"this run built {built} segments, {failed} failed "
        f"({sum(seconds for _, seconds in builds):.1f} s of FINN); cache {engine.cache.root}"
    )
    terminalreporter.write_line(
        f"FINN imported by {imports} process(es); {processes} worker process(es) started; "
        f"{waited:.1f} s waited on segments another process was building"
    )
