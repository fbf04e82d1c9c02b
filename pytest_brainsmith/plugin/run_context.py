"""One object per pytest process for the run: what every hook, item and fixture needs.

It lives in the config's stash (as pytest-mypy keeps its run state) and holds the
registry of FINN's steps, the design cap, the missing tools, the engine (which owns
the cache) and one blueprint loader shared by YAML items and
``@pytest.mark.brainsmith`` tests, so both see the same trees, the same cap and the
same segments.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..core.blueprint import load_design_space
from ..core.cache.store import SegmentCache
from ..core.composition import RunSettings, SettingError, decide, make_engine
from ..core.engine import Engine
from ..core.launchers import DaskSession
from ..core.outcomes import SegmentOutcome
from ..core.registry import Registry
from ..core.search.driver import FoldingSearch
from ..core.search.journal import STUDY_FILE
from ..core.toolchain import finn_registry
from ..core.tree import ExecutionTree, Segment, build_execution_tree
from ..finn.runner import available_tools
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
                path,
                registry,
                max_designs=self.max_designs,
                model=run_settings(self.config).model,
                strict=run_settings(self.config).strict,
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
    settings = run_settings(config)
    for why in settings.obsolete:
        config.issue_config_time_warning(pytest.PytestDeprecationWarning(why), stacklevel=2)
    cache = SegmentCache(settings.cache)
    engine = make_engine(
        settings,
        cache=cache,
        run_id=run_id,
        tools=tools,
        events=HookEvents(config.hook),
        retry_failed=config.getoption("brainsmith_retry_failed"),
        rebuild=config.getoption("brainsmith_rebuild"),
        keep_step_models=config.getoption("brainsmith_keep_step_models"),
        step_resources=dict(settings.resources),
        remote=remote_cache(config, settings, cache, run_id),
    )
    context = RunContext(config, run_id, finn_registry(), settings.max_designs, tools, engine)
    results = results_path(config)
    context.study_storage = (results.parent if results else settings.build_dir) / STUDY_FILE
    return context


settings_key = pytest.StashKey[RunSettings]()


def run_settings(config: pytest.Config) -> RunSettings:
    """The run's settings from pytest's options, the environment and the ini file, decided
    once (``core/composition.py`` decides, for pytest and ``explore()`` alike)."""
    found = config.stash.get(settings_key, None)
    if found is not None:
        return found
    option = config.getoption
    given = {
        name: option(f"brainsmith_{name}")
        for name in ("cache", "workers", "max_designs", "scheduler", "timeout", "max_memory")
    }
    given["budget"] = option("brainsmith_budget")
    given["fresh_workers"] = option("brainsmith_fresh_workers") or None
    # an xdist worker builds on its own pool (several sessions on one server: untested)
    given["server"] = "off" if hasattr(config, "workerinput") else option("brainsmith_server")
    given["model"] = option("brainsmith_model", None)
    given["strict"] = option("brainsmith_strict", False) or None
    for name in ("remote_cache", "remote_cache_mode", "remote_cache_timeout"):
        given[name] = option(f"brainsmith_{name}", None)
    given["remote_cache_failures"] = option("brainsmith_remote_cache_failures", None)

    def ini(name: str) -> Any:
        try:
            return config.getini(name)
        except ValueError:  # e.g. ``strict`` in a pytest without the umbrella option
            return None

    try:
        settings = decide(
            config.rootpath,
            given,
            ini,
            xdist_workers=int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1),
            ini_dir=config.inipath.parent if config.inipath else config.rootpath,
            cwd=config.invocation_params.dir,
        )
    except SettingError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[settings_key] = settings
    return settings


def results_path(config: pytest.Config) -> Path | None:
    """The results store (``--brainsmith-results``; ``none``: no store)."""
    chosen = config.getoption("brainsmith_results") or config.getini("brainsmith_results")
    if chosen and chosen.lower() == "none":
        return None
    if chosen:
        return Path(chosen).expanduser().absolute()
    return build_dir(config) / "results.sqlite"


def step_resources(config: pytest.Config) -> dict[str, dict[str, float]]:
    """The ini option ``brainsmith_resources`` as decided (``RunSettings.resources``)."""
    return {step: dict(asked) for step, asked in run_settings(config).resources.items()}


def cache_dir(config: pytest.Config) -> Path:
    return run_settings(config).cache


def build_dir(config: pytest.Config) -> Path:
    return run_settings(config).build_dir
