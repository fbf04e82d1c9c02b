"""Explore a blueprint from Python, without pytest.

    from pytest_brainsmith import explore

    result = explore("blueprints/tfc_sweep.blueprint.yaml")
    for design in result.best("LUT", n=3):
        print(design.choices, design.estimates["LUT"])

The same engine, cache and outcomes as ``pytest blueprints/``: a design built here is
reused there and the other way round.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import interrupts
from .blueprint import DEFAULT_MAX_DESIGNS, load_design_space
from .cache import SegmentCache
from .engine import Engine
from .errors import BlueprintError
from .outcomes import DesignOutcome
from .registry import Registry, finn_registry
from .tree import build_execution_tree

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
    """Build every design of ``blueprint`` (those matching ``where``) and judge it.

    ``workers``: worker processes (default: the cores this process may use; 0 builds
    inline). ``budget``: seconds after which no new segment starts (designs not reached
    are ``cancelled``). ``register(registry)`` registers your own steps, as a conftest.py's
    ``pytest_brainsmith_register`` does. ``scheduler``: build on Dask instead, a
    scheduler's address, ``"local"`` (a LocalCluster, closed at the end) or a Dask
    cluster object (left open). Raises ``BlueprintError`` for a bad blueprint.
    """
    from ..finn.runner import available_tools

    registry = finn_registry()
    if register is not None:
        register(registry)
    path = Path(blueprint).absolute()
    space = load_design_space(path, registry, max_designs=max_designs)
    if space is None:
        raise BlueprintError(path, "abstract", "is abstract: it has no designs of its own")
    tree = build_execution_tree(space)
    leaves = list(tree.designs())
    if where:
        leaves = [
            leaf
            for leaf in leaves
            if all(dict(c.describe() for c in leaf.choices()).get(k) == v for k, v in where.items())
        ]
    engine = Engine(
        SegmentCache(Path(cache or DEFAULT_CACHE).absolute()),
        workers=workers,
        timeout=timeout,
        max_memory=max_memory,
        retry_failed=retry_failed,
        rebuild=rebuild,
        run_id=uuid.uuid4().hex,
        keep_step_models=keep_step_models,
        tools=available_tools() if tools is None else tools,
        budget=budget,
    )
    session = _cluster(engine, scheduler) if scheduler is not None else None
    try:
        with interrupts.installed():  # Ctrl-C and SIGTERM: KeyboardInterrupt, workers killed
            engine.submit(leaves)
            designs = [engine.design(leaf) for leaf in leaves]
    finally:
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
    return Exploration(designs, stats)


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
