"""The pytest plugin: options, blueprint collection, the per-process Explorer,
cache maintenance and the terminal summary. Registered as the ``brainsmith``
pytest11 entry point."""

from __future__ import annotations

import fnmatch
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from ..core.blueprint import DEFAULT_MAX_DESIGNS
from ..core.cache import CacheError, SegmentCache
from ..core.explorer import Explorer
from ..core.registry import finn_registry
from ..finn import catalog as finn_catalog
from ..finn import runner as finn_runner
from ..finn.runner import available_tools
from ..views.results_store import ResultsStore
from ..views.terminal import RunRecorder
from . import designs, hookspecs
from .nodes import (
    BlueprintFile,
    DesignItem,
    explorer_key,
    max_designs_key,
    registry_key,
    tools_key,
)

DEFAULT_PATTERNS = ["*.blueprint.yaml", "*.blueprint.yml"]
#: (status, seconds) of the segments xdist workers built, gathered by the controller.
worker_builds_key = pytest.StashKey[list[tuple[str, float]]]()
recorder_key = pytest.StashKey[RunRecorder]()
#: per xdist worker: seconds waited on other workers' builds, FINN imports.
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
        "brainsmith_results", default="", help="results store path ('none': do not write one)"
    )


def cache_dir(config: pytest.Config) -> Path:
    chosen = (
        config.getoption("brainsmith_cache")
        or os.environ.get("BRAINSMITH_CACHE")
        or config.getini("brainsmith_cache")
    )
    if chosen:
        return Path(chosen).expanduser().absolute()
    return build_dir(config) / "cache"


def build_dir(config: pytest.Config) -> Path:
    return config.rootpath / config.getini("brainsmith_build_dir")


def _results_path(config: pytest.Config) -> Path | None:
    chosen = config.getoption("brainsmith_results") or config.getini("brainsmith_results")
    if chosen and chosen.lower() == "none":
        return None
    if chosen:
        return Path(chosen).expanduser().absolute()
    return build_dir(config) / "results.sqlite"


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


def _max_designs(config: pytest.Config) -> int:
    for value in (
        config.getoption("brainsmith_max_designs"),
        os.environ.get("BRAINSMITH_MAX_COMBINATIONS"),
        config.getini("brainsmith_max_designs"),
    ):
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                raise pytest.UsageError(
                    f"brainsmith max designs: expected an integer, got {value!r}"
                ) from None
    return DEFAULT_MAX_DESIGNS


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("brainsmith_prune") and config.pluginmanager.hasplugin("xdist"):
        if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
            # the xdist controller collects nothing, so it cannot tell what is in use
            raise pytest.UsageError("--brainsmith-prune needs a run without -n (pytest-xdist)")
    config.pluginmanager.register(designs, "brainsmith-designs")  # marker + design fixture
    config.stash[registry_key] = finn_registry()
    config.stash[max_designs_key] = _max_designs(config)
    config.stash[tools_key] = available_tools()
    workerinput = getattr(config, "workerinput", None)
    run_id = workerinput.get("brainsmith_run_id") if workerinput else None
    config._brainsmith_run_id = run_id or uuid.uuid4().hex  # type: ignore[attr-defined]
    cache = SegmentCache(cache_dir(config))
    if not config.getoption("collectonly") and not config.getoption("brainsmith_prune"):
        try:  # integrity (issue 11): an empty cache that cannot be written is a usage error
            cache.check_writable()
        except CacheError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.stash[explorer_key] = Explorer(
        cache,
        hook=config.hook,
        retry_failed=config.getoption("brainsmith_retry_failed"),
        rebuild=config.getoption("brainsmith_rebuild"),
        run_id=config._brainsmith_run_id,  # type: ignore[attr-defined]
        keep_step_models=config.getoption("brainsmith_keep_step_models"),
    )
    if workerinput is None and not config.getoption("collectonly"):
        # the controller (or the only process) reports; workers send it their records
        results = _results_path(config)
        recorder = RunRecorder(
            config,
            config._brainsmith_run_id,  # type: ignore[attr-defined]
            ResultsStore(results) if results else None,
            _tree_dir(config),
        )
        config.stash[recorder_key] = recorder
        config.pluginmanager.register(recorder, "brainsmith-recorder")
        if config.getoption("htmlpath", None) and config.pluginmanager.hasplugin("html"):
            from ..views.html_report import HtmlReportPlugin

            config.pluginmanager.register(HtmlReportPlugin(recorder), "brainsmith-html")


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

    line = StatusLine(config.stash[explorer_key].cache.base / "running", tty, reporter)
    config.pluginmanager.register(line, "brainsmith-status")
    line.start()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the design's record (and pytest-html extras) to the report that ends it."""
    report = yield
    # integrity (issue 11): a passed setup carries the record too, so the controller
    # knows the design even if its worker dies before the call report
    if isinstance(item, DesignItem) and call.when in ("setup", "call"):
        report.brainsmith = item.record()
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
    node.workerinput["brainsmith_run_id"] = node.config._brainsmith_run_id


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> BlueprintFile | None:
    patterns = parent.config.getini("brainsmith_blueprints")
    if any(fnmatch.fnmatch(file_path.name, p) for p in patterns):
        return BlueprintFile.from_parent(parent, path=file_path)
    return None


def pytest_report_header(config: pytest.Config) -> list[str]:
    tools = config.stash[tools_key]
    missing = ", ".join(sorted(t for t, why in tools.items() if why)) or "none"
    return [
        f"brainsmith: FINN {finn_catalog.FINN_VERSION} (finn-plus), cache {cache_dir(config)}, "
        f"missing tools: {missing}"
    ]


def pytest_collection_finish(session: pytest.Session) -> None:
    mode = session.config.getoption("brainsmith_prune")
    if not mode or session.config.getoption("collectonly"):
        return
    if getattr(session.config, "workerinput", None) is not None:
        return
    explorer = session.config.stash[explorer_key]
    keep: set[str] = set()
    for item in session.items:
        if isinstance(item, DesignItem):
            keep.update(k for k in (explorer.key(s) for s in item.segment.chain()) if k)
    cache = explorer.cache
    unused = cache.prunable(keep)  # integrity (issue 11): also damaged and quarantined entries
    size = sum(cache.size_bytes(k) for k in unused)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    verb = "would remove" if mode == "dry-run" else "removed"
    for key in unused:
        if mode != "dry-run":
            cache.remove(key)
        if reporter is not None:
            reporter.write_line(f"brainsmith prune: {verb} {key}")
    kept = cache.size_bytes() if mode != "dry-run" else cache.size_bytes() - size
    pytest.exit(
        f"brainsmith prune: {verb} {len(unused)} unused cache entries ({size / 1e6:.1f} MB); "
        f"the collected designs use {len(keep)} segments; {kept / 1e6:.1f} MB remain in {cache.root}",
        returncode=0,
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """xdist worker: hand what this worker built to the controller for the summary."""
    workeroutput = getattr(session.config, "workeroutput", None)
    explorer = session.config.stash.get(explorer_key, None)
    if workeroutput is not None and explorer is not None:
        workeroutput["brainsmith_built"] = [(r.status, r.seconds) for r in explorer.built]
        workeroutput["brainsmith_process"] = _process_stats(explorer)


def _process_stats(explorer: Explorer) -> dict[str, float]:
    return {"waited": round(explorer.waited, 3), "finn_imports": finn_runner.import_count}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect what each worker built."""
    output = getattr(node, "workeroutput", {})
    node.config.stash.setdefault(worker_builds_key, []).extend(output.get("brainsmith_built", []))
    if "brainsmith_process" in output:
        node.config.stash.setdefault(worker_stats_key, []).append(output["brainsmith_process"])


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    explorer = config.stash.get(explorer_key, None)
    if explorer is None:
        return
    builds = [(r.status, r.seconds) for r in explorer.built]
    builds += config.stash.get(worker_builds_key, [])
    recorder = config.stash.get(recorder_key, None)
    lines = recorder.summary_lines() if recorder is not None else []
    if not builds and not lines:
        return
    built = sum(1 for status, _ in builds if status == "built")
    failed = sum(1 for status, _ in builds if status == "failed")
    terminalreporter.write_sep("-", "brainsmith")
    for line in lines:
        terminalreporter.write_line(line)
    stats = config.stash.get(worker_stats_key, []) or [_process_stats(explorer)]
    imports = sum(int(s["finn_imports"]) for s in stats)
    waited = sum(s["waited"] for s in stats)
    terminalreporter.write_line(
        f"this run built {built} segments, {failed} failed "
        f"({sum(seconds for _, seconds in builds):.1f} s of FINN); cache {explorer.cache.root}"
    )
    terminalreporter.write_line(
        f"FINN imported by {imports} process(es); {waited:.1f} s waited on segments "
        "another process was building"
    )
