"""One object per pytest process for the run: what every hook, item and fixture needs.

It lives in the config's stash (as pytest-mypy keeps its run state) and holds the
registry of FINN's steps, the design cap, the missing tools, the engine (which owns
the cache) and one blueprint loader shared by YAML items and
``@pytest.mark.brainsmith`` tests, so both see the same trees, the same cap and the
same segments.
"""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..core.blueprint import DEFAULT_MAX_DESIGNS, load_design_space
from ..core.blueprint.limits import MEMORY
from ..core.cache import SegmentCache
from ..core.dask_cluster import DaskSession
from ..core.engine import Engine
from ..core.folding_search import STUDY_FILE, FoldingSearch
from ..core.outcomes import SegmentOutcome
from ..core.registry import Registry, finn_registry
from ..core.tree import ExecutionTree, Segment, build_execution_tree
from ..core.units import parse_duration, parse_size
from ..core.workers import available_cores
from ..finn.runner import available_tools
from .blueprint_options import blueprint_options
from .remote import remote_cache


@dataclass
class RunContext:
    """The run as one pytest process sees it."""

    config: pytest.Config
    run_id: str
    registry: Registry
    max_designs: int
    tools: dict[str, str | None]
    engine: Engine
    #: the Dask cluster the engine builds on, once the session started (else None)
    cluster: DaskSession | None = None
    #: where folding searches keep their Optuna studies (None: in memory only)
    study_storage: Path | None = None
    _trees: dict[Path, ExecutionTree | None] = field(default_factory=dict)
    _searches: dict[Segment, FoldingSearch] = field(default_factory=dict)

    @property
    def cache(self) -> SegmentCache:
        return self.engine.cache

    def tree(self, path: Path, ihook: Any) -> ExecutionTree | None:
        """The blueprint's execution tree, loaded once per run (None: abstract).
        Raises BlueprintError / RegistryError for a bad blueprint."""
        path = path.resolve()
        if path not in self._trees:
            registry = self.registry.copy()
            ihook.pytest_brainsmith_register(registry=registry)
            space = load_design_space(
                path, registry, max_designs=self.max_designs, **blueprint_options(self.config)
            )
            self._trees[path] = build_execution_tree(space) if space is not None else None
        return self._trees[path]

    def folding_search(self, prefix: Segment) -> FoldingSearch:
        """The folding search below a prefix of a tree (one per prefix and run)."""
        if prefix not in self._searches:
            self._searches[prefix] = FoldingSearch(
                self.engine, prefix, self.study_storage, self.cache.base / "foldings"
            )
        return self._searches[prefix]

    @property
    def searches(self) -> list[FoldingSearch]:
        return list(self._searches.values())


run_key = pytest.StashKey[RunContext]()


def run_context(config: pytest.Config) -> RunContext:
    return config.stash[run_key]


class HookEvents:
    """The engine's events as this plugin's hooks (conftest.py files see them)."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook

    def segment_start(self, segment: Segment, config: dict[str, Any], build_dir: str) -> None:
        self.hook.pytest_brainsmith_segment_start(
            segment=segment, config=config, build_dir=build_dir
        )

    def segment_finish(self, segment: Segment, result: SegmentOutcome) -> None:
        self.hook.pytest_brainsmith_segment_finish(segment=segment, result=result)


def make_run_context(config: pytest.Config) -> RunContext:
    workerinput = getattr(config, "workerinput", None)
    run_id = (workerinput or {}).get("brainsmith_run_id") or uuid.uuid4().hex
    tools = available_tools()
    cache = SegmentCache(cache_dir(config))
    engine = Engine(
        cache,
        workers=worker_count(config),
        timeout=_option(config, "brainsmith_timeout", parse_duration, "a duration such as 90s"),
        max_memory=_option(config, "brainsmith_max_memory", parse_size, "a size such as 4G"),
        retry_failed=config.getoption("brainsmith_retry_failed"),
        rebuild=config.getoption("brainsmith_rebuild"),
        run_id=run_id,
        keep_step_models=config.getoption("brainsmith_keep_step_models"),
        tools=tools,
        events=HookEvents(config.hook),
        budget=_option(config, "brainsmith_budget", parse_duration, "a duration such as 2h"),
        step_resources=step_resources(config),
        remote=remote_cache(config, cache, run_id),
    )
    context = RunContext(config, run_id, finn_registry(), max_designs(config), tools, engine)
    results = results_path(config)
    context.study_storage = (results.parent if results else build_dir(config)) / STUDY_FILE
    return context


def results_path(config: pytest.Config) -> Path | None:
    """The results store (``--brainsmith-results``; ``none``: no store)."""
    chosen = config.getoption("brainsmith_results") or config.getini("brainsmith_results")
    if chosen and chosen.lower() == "none":
        return None
    if chosen:
        return Path(chosen).expanduser().absolute()
    return build_dir(config) / "results.sqlite"


def step_resources(config: pytest.Config) -> dict[str, dict[str, float]]:
    """The ini option ``brainsmith_resources``: lines ``STEP: NAME=AMOUNT[, NAME=AMOUNT]``,
    keyed by the step's short name (``step_hw_ipgen`` is ``hw_ipgen``). ``memory`` is a
    size (``32G``, ``32e9``), in bytes here; any other amount a number."""
    found: dict[str, dict[str, float]] = {}
    for line in config.getini("brainsmith_resources") or []:
        step, sep, rest = line.partition(":")
        asked: dict[str, float] = {}
        try:
            if not sep or not step.strip():
                raise ValueError
            for part in filter(None, (p.strip() for p in rest.split(","))):
                name, eq, amount = (s.strip() for s in part.partition("="))
                if not eq or not name:
                    raise ValueError
                if name == MEMORY:
                    asked[name] = 0.0 if amount == "0" else float(parse_size(amount))
                else:
                    asked[name] = float(amount)
                    if not math.isfinite(asked[name]) or asked[name] < 0:
                        raise ValueError
        except ValueError:
            raise pytest.UsageError(
                f"brainsmith_resources: expected 'STEP: NAME=AMOUNT, ...' with amounts of at "
                f"least 0 and memory a size (e.g. 'synthesize_bitfile: vivado=1, memory=32G'), "
                f"got {line!r}"
            ) from None
        found[step.strip().removeprefix("step_")] = asked
    return found


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


def max_designs(config: pytest.Config) -> int:
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


def worker_count(config: pytest.Config) -> int:
    """``--brainsmith-workers``: a number, or ``auto`` = this process's cores, shared
    among pytest-xdist's workers so that workers x pool stays within the cores."""
    value = config.getoption("brainsmith_workers") or config.getini("brainsmith_workers") or "auto"
    if str(value).strip().lower() == "auto":
        xdist_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
        return max(1, available_cores() // max(1, xdist_workers))
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise pytest.UsageError(
            f"--brainsmith-workers: expected 'auto' or a number of worker processes "
            f"(0 builds inline, for pdb), got {value!r}"
        )
    return count


def _option(config: pytest.Config, name: str, parse: Any, what: str) -> Any:
    value = config.getoption(name) or config.getini(name)
    if value in (None, ""):
        return None
    try:
        return parse(value)
    except ValueError:
        flag = "--" + name.replace("_", "-")
        raise pytest.UsageError(f"{flag}: expected {what}, got {value!r}") from None
