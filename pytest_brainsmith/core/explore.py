"""Explore a blueprint from Python, without pytest.

    from pytest_brainsmith import explore

    result = explore("blueprints/tfc_sweep.blueprint.yaml")
    for design in result.best("LUT", n=3):
        print(design.choices, design.estimates["LUT"])

The same engine, cache and outcomes as ``pytest blueprints/``: a design built here is
reused there and the other way round.
"""

from __future__ import annotations

import re
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import interrupts, toolchain
from .blueprint import load_design_space
from .cache.remote.tier import RemoteCache
from .cache.store import SegmentCache
from .composition import decide_for, find_project, make_engine
from .engine import Engine, segment_label
from .errors import BlueprintError
from .launchers import attach, available_cores, connect
from .outcomes import DesignOutcome
from .registry import Registry
from .search.driver import FoldingSearch
from .toolchain import finn_registry
from .tree import ExecutionTree, Segment, build_execution_tree


@dataclass
class Exploration:
    """Every design's outcome, in tree order, and what the run did."""

    designs: list[DesignOutcome]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> list[DesignOutcome]:
        return [d for d in self.designs if d.status == "passed"]

    @property
    def failed(self) -> list[DesignOutcome]:
        return [d for d in self.designs if d.status not in ("passed", "skipped")]

    def best(self, metric: str, n: int = 3, *, maximize: bool | None = None) -> list[DesignOutcome]:
        """The ``n`` passing designs best in ``metric`` (throughput is maximized,
        resources and latency minimized, unless ``maximize`` says otherwise)."""
        if maximize is None:
            maximize = "throughput" in metric or metric.endswith("fps")
        scored = [d for d in self.passed if isinstance(d.estimates.get(metric), int | float)]
        scored.sort(key=lambda d: d.estimates[metric], reverse=maximize)
        return scored[:n]

    def records(self) -> list[dict[str, Any]]:
        """Every design as the JSON record the pytest views and the results store use."""
        return [d.record() for d in self.designs]


def explore(
    blueprint: str | Path,
    *,
    cache: str | Path | None = None,
    workers: int | None = None,
    register: Callable[[Registry], None] | None = None,
    where: dict[str, Any] | None = None,
    timeout: float | None = None,
    max_memory: int | None = None,
    retry_failed: bool = False,
    rebuild: bool = False,
    keep_step_models: bool = False,
    max_designs: int | None = None,
    tools: dict[str, str | None] | None = None,
    budget: float | None = None,
    scheduler: Any = None,
    remote_cache: str | None = None,
    remote_cache_mode: str | None = None,
    remote_cache_failures: bool | None = None,
    remote_cache_timeout: float | None = None,
    fresh_workers: bool | None = None,
    model: str | Path | None = None,
    strict: bool | None = None,
    results: str | Path | bool | None = True,
) -> Exploration:
    """Build every design of ``blueprint`` (those matching ``where``) and judge it,
    then run its folding searches (``design_space.folding``): each trial is a design
    whose choices include ``folding: "trial-N"``; ``stats["folding_searches"]`` says
    how many trials each search ran and why it stopped early, if it did.

    ``workers``: worker processes (default: the cores this process may use; 0 builds
    inline; every segment is built in a process of its own; ``fresh_workers`` is
    obsolete and changes nothing). ``budget``: seconds after which no new segment starts (designs not reached
    are ``cancelled``). ``register(registry)`` registers your own steps, as a conftest.py's
    ``pytest_brainsmith_register`` does. ``scheduler``: build on Dask instead, a
    scheduler's address, ``"local"`` (a LocalCluster, closed at the end) or a Dask
    cluster object (left open). What is not given is decided as ``pytest`` decides it
    (``core/composition.py``): ``BRAINSMITH_CACHE``, ``BRAINSMITH_SCHEDULER`` and
    ``BRAINSMITH_MAX_COMBINATIONS``, then the ``brainsmith_*`` options of the ini file
    pytest would read for the blueprint; the cache defaults to
    ``<rootdir>/build/brainsmith/cache`` with pytest's rootdir. Raises ``BlueprintError``
    for a bad blueprint, ``SettingError`` for a setting it cannot take.
    ``model``: the model of a blueprint that names none (``--brainsmith-model``);
    ``strict``: blueprint warnings are errors (``--brainsmith-strict``); both, and the
    ini's ``brainsmith_resources``, as pytest decides them.
    ``remote_cache``: a URL (``s3://BUCKET/PREFIX``, any fsspec URL) of a remote cache
    tier, read and written as ``remote_cache_mode`` says (``read``, ``write``,
    ``readwrite``); ``stats["remote"]`` is what it moved; ``RemoteCacheError`` for a bad
    remote.
    ``results``: the results store the run is recorded in, as a pytest run is (``True``:
    where pytest would write it, the ini option ``brainsmith_results`` or
    ``<build dir>/results.sqlite``; a path; ``False``, ``None`` or ``"none"``: not
    recorded); ``stats["results"]`` names it.
    """
    path = Path(blueprint).absolute()
    rootdir, ini = find_project(path)
    given = {"cache": cache, "workers": workers, "max_designs": max_designs}
    given |= {"timeout": timeout, "max_memory": max_memory, "budget": budget}
    given["remote_cache"] = remote_cache
    given |= {"remote_cache_mode": remote_cache_mode, "remote_cache_timeout": remote_cache_timeout}
    given["remote_cache_failures"] = remote_cache_failures
    given |= {"fresh_workers": fresh_workers, "model": model, "strict": strict or None}
    settings = decide_for(path, given)
    for why in settings.obsolete:
        warnings.warn(why, DeprecationWarning, stacklevel=2)
    registry = finn_registry()
    if register is not None:
        register(registry)
    space = load_design_space(
        path,
        registry,
        max_designs=settings.max_designs,
        model=settings.model,
        strict=settings.strict,
    )
    if space is None:
        raise BlueprintError(path, "abstract", "is abstract: it has no designs of its own")
    unknown = space.unknown_choices(where or {}, also=["folding"] if space.folding else [])
    if unknown:  # a typo would select nothing, silently
        raise BlueprintError(path, "where", unknown)
    tree = build_execution_tree(space)
    leaves = [leaf for leaf in tree.designs() if _selected(leaf, where)]
    run_id = uuid.uuid4().hex
    local = SegmentCache(settings.cache)
    remote = None
    if settings.remote_cache:
        remote = RemoteCache(
            settings.remote_cache,
            local,
            mode=settings.remote_cache_mode,
            share_failures=settings.remote_cache_failures,
            timeout=settings.remote_cache_timeout,
            run_id=run_id,
        )
    engine = make_engine(
        settings,
        run_id=run_id,
        tools=toolchain.current().available_tools() if tools is None else tools,
        retry_failed=retry_failed,
        rebuild=rebuild,
        keep_step_models=keep_step_models,
        cache=local,
        remote=remote,
        step_resources=dict(settings.resources),
    )
    if scheduler is None:
        scheduler = settings.scheduler
    session = _cluster(engine, scheduler) if scheduler is not None else None
    recorder = RunRecord(_results_path(results, rootdir, settings.build_dir, ini), run_id, path)
    designs: list[DesignOutcome] = []
    # Ctrl-C and SIGTERM raise KeyboardInterrupt, once every worker is killed
    with interrupts.installed(raise_at_exit=True):
        try:
            searches = _folding_searches(engine, tree, where)  # they run beside the designs
            engine.submit(leaves)
            for leaf in leaves:
                designs.append(recorder.add(engine.design(leaf)))
            for search in searches:
                designs += [recorder.add(d) for d in _trials(engine, search, where)]
        finally:
            recorder.finish(designs)
            with interrupts.deferred():  # a second Ctrl-C waits for the workers' end
                engine.shutdown(cancel=True)
                if session is not None:
                    session.close()
                engine.starter.launcher.close()  # the warm server's connection
    built = [o for o in engine.scheduler.built if o.status == "built"]
    stats = {
        "designs": len(designs),
        "passed": sum(1 for d in designs if d.status == "passed"),
        "segments_built": len(built),
        "segments_failed": sum(1 for o in engine.scheduler.built if o.status == "failed"),
        "finn_seconds": round(sum(o.seconds for o in engine.scheduler.built), 3),
        "worker_processes": engine.starter.processes,
        "waited_seconds": round(engine.key_locks.waited, 3),
        "segments_pruned": len(engine.pruned()),
    }
    fetched = {o.key for d in designs for o in d.segments if o.status == "fetched"}
    stats["segments_fetched"] = len(fetched)
    if remote is not None:
        stats["remote"] = remote.report()
    if recorder.path is not None:
        stats["results"] = str(recorder.path)
    if recorder.error:
        stats["results_error"] = recorder.error
    if searches:
        stats["folding_searches"] = {
            segment_label(s.prefix): {"trials": len(s.trials), "error": s.error} for s in searches
        }
    return Exploration(designs, stats)


def _results_path(
    results: str | Path | bool | None, rootdir: Path, build_dir: Path, ini: dict[str, Any]
) -> Path | None:
    """Where ``explore()`` records its run: as pytest decides (``True``), or as given."""
    if results is True:
        chosen = ini.get("brainsmith_results") or ""
        if not chosen:
            return build_dir / "results.sqlite"
        results = chosen if Path(chosen).is_absolute() else str(rootdir / chosen)
    if results is None or results is False or str(results).lower() in ("", "none"):
        return None
    return Path(results).expanduser().absolute()


class RunRecord:
    """``explore()``'s run in the results store, a design as it is judged (an
    interrupted run keeps what it finished). The store belongs to the views (it only
    writes design records); a store that cannot be written costs the run nothing."""

    def __init__(self, path: Path | None, run_id: str, blueprint: Path) -> None:
        self.path = path
        self.run_id = run_id
        self.blueprint = blueprint
        self.error: str | None = None
        self._store: Any = None
        self._last = time.monotonic()

    def add(self, design: DesignOutcome) -> DesignOutcome:
        now = time.monotonic()
        elapsed, self._last = now - self._last, now
        if self.path is None or self.error:
            return design
        try:
            if self._store is None:
                if open_results_store is None:
                    return design  # no store plugged in (the package plugs the views' one)
                self._store = open_results_store(self.path)
                compiler = toolchain.current()
                self._store.start_run(
                    self.run_id, ["explore()", str(self.blueprint)], compiler.version
                )
            record = design.record()
            record["outcome"] = _OUTCOMES.get(design.status, design.status)
            self._store.add_design(self.run_id, record, elapsed)
        except Exception as exc:  # the store must never cost the run its designs
            self.error = f"{self.path}: {type(exc).__name__}: {exc}"
        return design

    def finish(self, designs: list[DesignOutcome]) -> None:
        if self._store is None:
            return
        try:
            failed = any(d.status not in ("passed", "skipped") for d in designs)
            if not self.error:
                self._store.finish_run(self.run_id, 1 if failed else 0)
        except Exception as exc:
            self.error = f"{self.path}: {type(exc).__name__}: {exc}"
        finally:
            self._store.close()


#: Opens the results store (``views/results_store.ResultsStore``) for ``explore()``'s
#: runs. The package plugs it in (``pytest_brainsmith/__init__.py``), as it plugs FINN
#: into the toolchain door: the core imports no view.
open_results_store: Callable[[Path], Any] | None = None

#: a design's status as the results store's ``outcome`` (pytest's words)
_OUTCOMES = {"cancelled": "skipped", "aborted": "failed"}


def _selected(leaf: Segment, where: dict[str, Any] | None) -> bool:
    choices = dict(c.describe() for c in leaf.choices())
    return all(choices.get(k) == v for k, v in (where or {}).items())


def _folding_searches(
    engine: Engine, tree: ExecutionTree, where: dict[str, Any] | None
) -> list[FoldingSearch]:
    """The blueprint's folding searches (``design_space.folding``) ``where`` does not
    leave out, started: asked and built as pytest's trial items are (the same trials for
    the same seed, from the same cache)."""
    settings = tree.space.folding
    if settings is None:
        return []
    last = settings.trials - 1
    if where and "folding" in where:  # one trial: the search runs up to it
        one = re.fullmatch(r"trial-(\d+)", str(where["folding"]))
        if one is None or int(one[1]) > last:
            return []  # no trial is called that
        last = int(one[1])
    searches = []
    for prefix in tree.folding_prefixes():
        chosen = dict(c.describe() for c in prefix.choices())
        if any(k != "folding" and chosen.get(k) != v for k, v in (where or {}).items()):
            continue  # ``where`` leaves every trial of this search out: none is asked
        search = FoldingSearch(engine, prefix, None, engine.cache.base / "foldings")
        search.want(last)
        searches.append(search)
    return searches


def _trials(
    engine: Engine, search: FoldingSearch, where: dict[str, Any] | None
) -> list[DesignOutcome]:
    """The search's trials as designs, until it has them all or stops (``error``)."""
    designs = []
    for number in range(search.wanted):
        trial = search.trial(number)
        if trial is None:
            break
        if _selected(trial, where):
            designs.append(engine.design(trial))
    return designs


def _cluster(engine: Engine, scheduler: Any) -> Any:
    """Connect ``engine`` to a Dask cluster (see ``explore``'s ``scheduler``)."""
    given = None if isinstance(scheduler, str) else scheduler
    session = connect(
        scheduler if given is None else None,
        cluster=given,
        control_dir=engine.cache.base / "dask",
        local_workers=available_cores(),
    )
    session.cluster = None if given is not None else session.cluster  # the caller's stays open
    try:
        attach(engine, session, set(toolchain.current().tools_needed))
    except BaseException:
        session.close()
        raise
    return session
