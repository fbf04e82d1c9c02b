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
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import interrupts, toolchain
from .blueprint import DEFAULT_MAX_DESIGNS, load_design_space
from .cache import SegmentCache
from .engine import Engine, segment_label
from .errors import BlueprintError
from .outcomes import DesignOutcome
from .registry import Registry, finn_registry
from .tree import ExecutionTree, Segment, build_execution_tree

if TYPE_CHECKING:
    from .folding_search import FoldingSearch

#: Where ``pytest`` keeps its cache when run from the project's root.
DEFAULT_CACHE = Path("build/brainsmith/cache")


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
    max_designs: int = DEFAULT_MAX_DESIGNS,
    tools: dict[str, str | None] | None = None,
    budget: float | None = None,
    scheduler: Any = None,
) -> Exploration:
    """Build every design of ``blueprint`` (those matching ``where``) and judge it,
    then run its folding searches (``design_space.folding``): each trial is a design
    whose choices include ``folding: "trial-N"``; ``stats["folding_searches"]`` says
    how many trials each search ran and why it stopped early, if it did.

    ``workers``: worker processes (default: the cores this process may use; 0 builds
    inline). ``budget``: seconds after which no new segment starts (designs not reached
    are ``cancelled``). ``register(registry)`` registers your own steps, as a conftest.py's
    ``pytest_brainsmith_register`` does. ``scheduler``: build on Dask instead, a
    scheduler's address, ``"local"`` (a LocalCluster, closed at the end) or a Dask
    cluster object (left open). Raises ``BlueprintError`` for a bad blueprint.
    """
    registry = finn_registry()
    if register is not None:
        register(registry)
    path = Path(blueprint).absolute()
    space = load_design_space(path, registry, max_designs=max_designs)
    if space is None:
        raise BlueprintError(path, "abstract", "is abstract: it has no designs of its own")
    tree = build_execution_tree(space)
    leaves = [leaf for leaf in tree.designs() if _selected(leaf, where)]
    engine = Engine(
        SegmentCache(Path(cache or DEFAULT_CACHE).absolute()),
        workers=workers,
        timeout=timeout,
        max_memory=max_memory,
        retry_failed=retry_failed,
        rebuild=rebuild,
        run_id=uuid.uuid4().hex,
        keep_step_models=keep_step_models,
        tools=toolchain.current().available_tools() if tools is None else tools,
        budget=budget,
    )
    session = _cluster(engine, scheduler) if scheduler is not None else None
    # Ctrl-C and SIGTERM raise KeyboardInterrupt, once every worker is killed
    with interrupts.installed(raise_at_exit=True):
        try:
            searches = _folding_searches(engine, tree, where)  # they run beside the designs
            engine.submit(leaves)
            designs = [engine.design(leaf) for leaf in leaves]
            for search in searches:
                designs += _trials(engine, search, where)
        finally:
            with interrupts.deferred():  # a second Ctrl-C waits for the workers' end
                engine.shutdown(cancel=True)
                if session is not None:
                    session.close()
    built = [o for o in engine.built if o.status == "built"]
    stats = {
        "designs": len(designs),
        "passed": sum(1 for d in designs if d.status == "passed"),
        "segments_built": len(built),
        "segments_failed": sum(1 for o in engine.built if o.status == "failed"),
        "finn_seconds": round(sum(o.seconds for o in engine.built), 3),
        "worker_processes": engine.processes,
        "waited_seconds": round(engine.waited, 3),
        "segments_pruned": len(engine.pruned()),
    }
    if searches:
        stats["folding_searches"] = {
            segment_label(s.prefix): {"trials": len(s.trials), "error": s.error} for s in searches
        }
    return Exploration(designs, stats)


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
    from .folding_search import FoldingSearch

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
    from .dask_cluster import attach, connect
    from .registry import FINN_STEP_NEEDS
    from .workers import available_cores

    given = None if isinstance(scheduler, str) else scheduler
    session = connect(
        scheduler if given is None else None,
        cluster=given,
        control_dir=engine.cache.base / "dask",
        local_workers=available_cores(),
    )
    session.cluster = None if given is not None else session.cluster  # the caller's stays open
    try:
        attach(engine, session, {t for needs in FINN_STEP_NEEDS.values() for t in needs})
    except BaseException:
        session.close()
        raise
    return session
