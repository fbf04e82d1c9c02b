"""The engine: builds the segments designs need, as a task graph on worker processes.

Every segment a submitted design needs is one task, keyed like its cache entry. A
task waits for its parent, is then queued with the longest remaining work first (its
own expected duration plus the longest chain below it, from the durations earlier
builds recorded), and runs on a worker process (``workers``) when one is free. Task
states follow Dask's scheduler: waiting -> ready -> running -> done, plus ``held``
while another process (an xdist worker, another session) holds the key's lock: it is
tried again shortly, without taking a worker.

Gates (``gates.py``) stop spending on designs that cannot matter: when a segment
that wrote FINN's estimate reports is done, every design below it that already
misses an ``expect:`` bound is stopped (the expect gate); a blueprint's Pareto gate
parks the segments that start at ``explore.before`` (state ``parked``) until every
competing design has its estimates, then stops the dominated ones. A segment whose
designs are all stopped is ``pruned``, never built; one shared with a design still
going is built as usual. ``explore.order`` puts the most promising designs' work
first, and after the time budget no new segment starts.

A driver (``Driver``: a folding search, ``folding_search.py``) is work that decides what
to build from what was built: it is called on every turn and submits new designs.

The engine has no thread of its own: it advances whenever its caller waits for a
design (``design``, ``chain``, ``run``), so every worker is forked from the caller's
main thread and a Ctrl-C reaches the caller, which ends the workers (``shutdown``).
With ``workers=0`` segments are built inline, in the caller, in the order they are
asked for (for pdb).

What ends a segment, and whether it is recorded in the cache as the segment's lasting
failure (a later run reports it without building again):

- a step raised, the worker crashed (exit code, SIGSEGV...), ran past its timeout or
  its memory limit: recorded (a timeout or memory failure stands only while the limit
  is not raised);
- the worker was killed from outside (SIGKILL: the OOM killer, a person), the disk
  filled up, FINN cannot be imported: the machine's fault, not recorded;
- a step called pytest.skip()/fail(): that run's verdict, not recorded;
- Ctrl-C, SIGTERM, -x, the end of the run: the worker is killed, nothing recorded.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from filelock import Timeout as LockTimeout

from ..finn import runner as finn_runner
from . import interrupts, verification
from .blueprint import ExploreSettings
from .blueprint.limits import MEMORY
from .builder import BuildSpec, build_segment, manifest_for, record_failure
from .cache import CacheError, Entry, Failure, SegmentCache
from .expectations import for_design
from .gates import (
    BUDGET,
    EXPECT,
    PARETO,
    Stop,
    comparable,
    dominance_reason,
    dominated,
    dominates,
    miss_text,
    misses,
    order_score,
)
from .keys import segment_key
from .outcomes import LASTING_KINDS, DesignOutcome, SegmentOutcome
from .registry import Step
from .tree import Segment, trial_of
from .workers import Worker, available_cores

#: Seconds a step is assumed to take before any build of it was timed.
DEFAULT_STEP_SECONDS = 1.0
#: How often held tasks are tried again and running workers looked at, at most.
POLL_SECONDS = 0.25
DURATIONS_FILE = "durations.json"


class EngineEvents(Protocol):
    """Told around every segment this engine builds (not when reused)."""

    def segment_start(self, segment: Segment, config: dict[str, Any], build_dir: str) -> None: ...

    def segment_finish(self, segment: Segment, result: SegmentOutcome) -> None: ...


class Launcher(Protocol):
    """Starts ``job`` (a segment's build, returning its answer as a small dict) and
    returns a handle with ``Worker``'s methods: ``poll``, ``waitables``, ``kill``,
    ``reap``, ``exit_cause``, ``output_tail`` and the attributes ``result`` and
    ``killed_by_us``. ``Worker`` forks a process on this machine.

    A launcher whose ``remote`` attribute is true builds elsewhere (a Dask cluster):
    this process then needs no FINN, and the launcher is also given the segment's
    ``timeout`` (it enforces it where the build runs, from when it starts rather than
    when it was queued), the engine's ``priority`` and the worker ``resources`` its
    steps need."""

    def __call__(
        self,
        job: Callable[[], dict[str, Any]],
        *,
        output: Path,
        max_memory: int | None = None,
        close_fds: tuple[int, ...] = (),
    ) -> Worker: ...


class Driver(Protocol):
    """Work that decides what to build next from what was built (a folding search):
    ``drive`` is called on every turn of the scheduler (it may ``submit``), ``close``
    when the engine shuts down."""

    def drive(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class ParetoGate:
    """One blueprint's Pareto gate: the designs that compete (those submitted before
    it decides), the task just above each one's gate segment, and the gate segments
    parked until every competitor has its estimates."""

    settings: ExploreSettings
    competitors: dict[Task, Task] = field(default_factory=dict)  # design -> its pre task
    pending: set[Task] = field(default_factory=set)  # pre tasks not done yet
    parked: list[Task] = field(default_factory=list)
    decided: bool = False


class EngineClosed(RuntimeError):
    """The engine was shut down (the run was interrupted) while a design was waited for."""


class Task:
    """One segment to build, keyed like its cache entry."""

    __slots__ = (
        "slot",
        "segment",
        "key",
        "components",
        "parent",
        "children",
        "state",
        "outcome",
        "priority",
        "estimate",
        "order",
        "retry_at",
        "held_since",
        "worker",
        "lock",
        "spec",
        "deadline",
        "started",
        "designs",
    )

    def __init__(
        self,
        slot: tuple[str, str | None],
        segment: Segment,
        key: str | None,
        components: dict[str, Any] | None,
        parent: Task | None,
        order: int,
    ) -> None:
        self.slot = slot
        self.segment = segment
        self.key = key
        self.components = components
        self.parent = parent
        self.children: list[Task] = []
        self.state = "new"  # new | waiting | ready | held | parked | running | done
        self.outcome: SegmentOutcome | None = None
        self.priority = 0.0
        self.estimate = 0.0
        self.order = order
        self.retry_at = 0.0
        self.held_since: float | None = None
        self.worker: Worker | None = None
        self.lock: Any = None
        self.spec: BuildSpec | None = None
        self.deadline: float | None = None
        self.started = 0.0
        #: the submitted designs (their leaf tasks) that need this segment
        self.designs: set[Task] = set()

    @property
    def label(self) -> str:
        return self.slot[0]


class Engine:
    """Builds what designs need, each segment once, through the cache."""

    def __init__(
        self,
        cache: SegmentCache,
        *,
        workers: int | None = None,
        timeout: float | None = None,
        max_memory: int | None = None,
        retry_failed: bool = False,
        rebuild: bool = False,
        run_id: str = "",
        keep_step_models: bool = False,
        tools: dict[str, str | None] | None = None,
        events: EngineEvents | None = None,
        launcher: Launcher | None = None,
        budget: float | None = None,
        step_resources: dict[str, dict[str, float]] | None = None,
    ) -> None:
        self.cache = cache
        #: starts one segment's build somewhere: a forked process here (``Worker``)
        self.launcher: Launcher = launcher or Worker
        self.workers = available_cores() if workers is None else max(0, workers)
        #: worker resources a step (by short name) needs on a cluster, beyond {tool: 1}
        #: for its tools (the ini's ``brainsmith_resources``); ``memory`` (bytes) also
        #: bounds the build's memory on any launcher (``segment_max_memory``)
        self.step_resources = step_resources or {}
        self.timeout = timeout
        self.max_memory = max_memory
        self.retry_failed = retry_failed
        self.rebuild = rebuild
        self.run_id = run_id
        self.keep_step_models = keep_step_models
        self.tools = tools or {}
        self.events = events
        #: seconds after which no new segment starts (--brainsmith-budget)
        self.budget = budget
        self._deadline = time.monotonic() + budget if budget else None
        self._stopped: dict[Task, Stop] = {}  # designs a gate stopped
        self._known: dict[Task, dict[str, Any]] = {}  # designs' estimates, once known
        self._pareto: dict[Path, ParetoGate] = {}  # per blueprint
        self._settles: dict[Task, list[ParetoGate]] = {}  # pre task -> gates waiting on it
        self._tasks: dict[tuple[str, str | None], Task] = {}
        self._by_segment: dict[Segment, Task] = {}
        self._keys: dict[Segment, tuple[str | None, dict[str, Any] | None]] = {}
        self._ready: list[tuple[float, int, Task]] = []
        self._held: list[Task] = []
        self._running: list[Task] = []
        self._exiting: list[Worker] = []  # workers that answered and are still exiting
        self._order = itertools.count()
        self._estimates: dict[str, dict[str, Any] | None] = {}
        self._durations = self._load_durations()
        self._finn_error: str | None = None
        self._drivers: list[Driver] = []
        self._driving = False
        self._draining = False
        self.closed = False
        self.phase = ""  # what the engine itself is doing, for the status line
        #: what this engine built (or failed to build) in this run
        self.built: list[SegmentOutcome] = []
        self.waited = 0.0  # seconds tasks were held by another process's build
        self.processes = 0  # worker processes started

    # -- keys ------------------------------------------------------------------------
    def key(self, segment: Segment) -> str | None:
        """The segment's cache key (a segment without steps has its parent's)."""
        return self._key(segment)[0]

    def _key(self, segment: Segment) -> tuple[str | None, dict[str, Any] | None]:
        if segment in self._keys:
            return self._keys[segment]
        if not segment.steps:
            value = self._key(segment.parent) if segment.parent else (None, None)
        else:
            parent_key = self.key(segment.parent) if segment.parent else None
            space = segment.tree.space
            config = segment.config()
            config["generate_outputs"] = space.generate_outputs
            value = segment_key(
                segment.steps,
                config,
                parent_key=parent_key,
                model=None if parent_key else segment.model(),
            )
        self._keys[segment] = value
        return value

    # -- limits ----------------------------------------------------------------------
    def segment_timeout(self, segment: Segment) -> float | None:
        """Seconds the segment may take: the blueprint's ``timeout`` (else the engine's)
        plus the ``step_timeouts`` of its steps that have one; None if unbounded."""
        space = segment.tree.space
        default = getattr(space, "timeout", None) or self.timeout
        per_step: dict[str, float] = getattr(space, "step_timeouts", None) or {}
        specific = [per_step[s.name] for s in segment.steps if s.name in per_step]
        rest = any(s.name not in per_step for s in segment.steps)
        if rest and default is None:
            return None
        return sum(specific) + (default if rest and default else 0.0) or None

    def segment_max_memory(self, segment: Segment) -> int | None:
        """Bytes the segment's build may allocate: the largest ``memory`` its steps ask
        for (``step_resources`` of the blueprint or the ini), a step without one counting
        the blueprint's ``max_memory`` (else the engine's); None if unbounded."""
        space = segment.tree.space
        default = getattr(space, "max_memory", None) or self.max_memory
        limits = [self.step_asks(space, step).get(MEMORY) for step in segment.steps]
        given = [int(m) for m in limits if m]
        if not given:
            return default
        if default and any(not m for m in limits):
            given.append(default)
        return max(given)

    def _limits(self, segment: Segment) -> dict[str, float]:
        limits: dict[str, float] = {}
        timeout = self.segment_timeout(segment)
        if timeout:
            limits["timeout"] = timeout
        memory = self.segment_max_memory(segment)
        if memory:
            limits["max_memory"] = memory
        return limits

    def step_asks(self, space: Any, step: Step) -> dict[str, float]:
        """The worker resources one step's build holds on a cluster: one of each tool it
        needs (``vivado: 1``), then the ini's ``brainsmith_resources`` for the step, then
        the blueprint's ``step_resources`` (each overriding the one before, resource by
        resource). ``memory`` is in bytes; an amount of 0 is not asked for."""
        asked = {tool: 1.0 for tool in step.needs}
        asked.update(self.step_resources.get(step.name, {}))
        blueprint: dict[str, dict[str, float]] = getattr(space, "step_resources", None) or {}
        asked.update(blueprint.get(step.name, {}))
        return {name: amount for name, amount in asked.items() if amount}

    def segment_resources(self, segment: Segment) -> dict[str, float]:
        """The worker resources a segment's build holds on a cluster: for each resource
        the largest amount any of its steps asks (``step_asks``; the steps run one after
        the other), ``memory`` included (bytes)."""
        wanted: dict[str, float] = {}
        for step in segment.steps:
            for name, amount in self.step_asks(segment.tree.space, step).items():
                wanted[name] = max(wanted.get(name, 0.0), amount)
        return wanted

    def unrunnable(self, leaf: Segment) -> str | None:
        """Why the design cannot run on this machine (a step needs a missing tool)."""
        for step in leaf.path_steps():
            missing = [self.tools[t] for t in sorted(step.needs) if self.tools.get(t)]
            if missing:
                return f"step {step.name} cannot run here: {'; '.join(missing)}"
        return None

    # -- the task graph --------------------------------------------------------------
    def _task(self, segment: Segment) -> Task:
        task = self._by_segment.get(segment)
        if task is not None:
            return task
        parent = self._task(segment.parent) if segment.parent is not None else None
        key, components = self._key(segment)
        slot = (segment_label(segment), key)
        # a Python test's tree of a blueprint and the YAML items' tree hold equal
        # segments: one task for both
        task = self._tasks.get(slot)
        if task is None:
            task = Task(slot, segment, key, components, parent, next(self._order))
            self._tasks[slot] = task
            if parent is not None:
                parent.children.append(task)
        self._by_segment[segment] = task
        return task

    def submit(self, leaves: Iterable[Segment]) -> None:
        """Schedule everything these designs need; work starts as the caller waits."""
        new: list[Task] = []
        for leaf in leaves:
            if self.closed or self.unrunnable(leaf):
                continue
            tasks = [self._task(segment) for segment in leaf.chain()]
            for task in tasks:
                task.designs.add(tasks[-1])
                if task.state == "new":
                    task.state = "waiting"
                    new.append(task)
            self._compete(tasks)
        if not new:
            return
        self._prioritize()
        for task in new:
            if task.state == "waiting" and (task.parent is None or task.parent.state == "done"):
                self._make_ready(task)
        for gate in self._pareto.values():
            if not gate.decided and not gate.pending and gate.competitors:
                self._decide(gate)

    def _estimate(self, task: Task) -> float:
        return sum(
            self._durations.get(finn_runner.checkpoint_name(s), DEFAULT_STEP_SECONDS)
            for s in task.segment.steps
        )

    def _prioritize(self) -> None:
        """Longest remaining work first: a task's own estimate plus the longest chain of
        needed work below it (the critical path through it)."""
        needed = [t for t in self._tasks.values() if t.state != "new"]
        for task in sorted(needed, key=lambda t: -t.segment.depth):
            task.estimate = self._estimate(task)
            below = [c.priority for c in task.children if c.state != "new"]
            task.priority = task.estimate + max(below, default=0.0)
        self._ready = [self._entry(t) for t in needed if t.state == "ready"]
        heapq.heapify(self._ready)

    def _entry(self, task: Task) -> tuple[tuple[float, ...], float, int, Task]:
        return (self._promise(task), -task.priority, task.order, task)

    def _push(self, task: Task) -> None:
        heapq.heappush(self._ready, self._entry(task))

    def _make_ready(self, task: Task) -> None:
        parent = task.parent
        if parent is not None and parent.outcome is not None and not parent.outcome.ok:
            cause = parent.outcome.root_cause
            self._finish(task, SegmentOutcome(task.label, task.key, "blocked", cause=cause))
            return
        if task.designs and all(d in self._stopped for d in task.designs):
            stop = self._stopped[min(task.designs, key=_tree_order)]
            self._finish(task, self._pruned(task, stop))
            return
        gate = self._gate_of(task)
        if gate is not None:  # a Pareto gate segment: waits for every competitor
            task.state = "parked"
            gate.parked.append(task)
            return
        if not task.segment.steps:
            self._finish(
                task,
                SegmentOutcome(
                    task.label,
                    task.key,
                    "passthrough",
                    entry=parent.outcome.entry if parent and parent.outcome else None,
                    output_model=parent.outcome.output_model
                    if parent and parent.key and parent.outcome
                    else str(task.segment.model()),
                ),
            )
            return
        task.state = "ready"
        self._push(task)

    def _finish(self, task: Task, outcome: SegmentOutcome) -> None:
        task.outcome = outcome
        task.state = "done"
        if outcome.status in ("built", "failed"):
            self.built.append(outcome)
            if self.events is not None:
                self.events.segment_finish(task.segment, outcome)
        if outcome.ok and outcome.entry is not None and task.segment.steps:
            self._check_estimates(task, outcome.entry)
        for gate in self._settles.pop(task, ()):
            gate.pending.discard(task)
            if not gate.pending and not gate.decided:
                self._decide(gate)
        for child in task.children:
            if child.state == "waiting":
                self._make_ready(child)

    # -- waiting for designs ---------------------------------------------------------
    def chain(self, leaf: Segment) -> list[SegmentOutcome]:
        """Every segment outcome of the design, root first; builds what is missing."""
        self.submit([leaf])
        self._pump()  # whatever finished while the caller was busy frees its worker now
        tasks = [self._task(s) for s in leaf.chain()]
        if tasks[-1].state == "new":  # not submitted: the engine is closed
            raise EngineClosed("the run was stopped before this design was built")
        while tasks[-1].state != "done" and tasks[-1] not in self._stopped:
            if self.closed:
                raise EngineClosed("the run was stopped before this design was built")
            self._advance(tasks)
        stop = self._stopped.get(tasks[-1])
        for task in tasks:  # durations timed since it was pruned say better what it saved
            if task.outcome is not None and task.outcome.kind in (EXPECT, PARETO, BUDGET):
                task.outcome.saved_seconds = round(self._estimate(task), 3)
        if stop is None:
            return [t.outcome for t in tasks if t.outcome is not None]
        # a gate stopped it: what is not done yet is pruned for this design (a segment
        # shared with a design still going is built all the same, for that one)
        return [
            t.outcome if t.state == "done" and t.outcome else self._pruned(t, stop) for t in tasks
        ]

    def design(self, leaf: Segment) -> DesignOutcome:
        """The design's outcome: built (or not), its estimates, its expectations."""
        keys = [self.key(s) for s in leaf.chain()]
        reason = self.unrunnable(leaf)
        if reason:
            skipped = [
                SegmentOutcome(segment_label(s), self.key(s), "skipped") for s in leaf.chain()
            ]
            return DesignOutcome(leaf, "skipped", skipped, keys, reason=reason)
        chain = self.chain(leaf)
        stop = self._stopped.get(self._task(leaf))
        if stop is not None:
            return self._stopped_outcome(leaf, chain, keys, stop)
        failing = next((o for o in chain if not o.ok), None)
        if failing is not None:
            cause = failing.root_cause
            status = {"aborted": "aborted", "cancelled": "cancelled", "error": "error"}.get(
                cause.status, "failed"
            )
            return DesignOutcome(leaf, status, chain, keys, reason=describe_failure(cause))
        estimates = self.estimates(leaf)
        space = leaf.tree.space
        choices = dict(c.describe() for c in leaf.choices())
        checked = [(e, estimates.get(e.metric)) for e in for_design(space.expect, choices)]
        outcome = DesignOutcome(leaf, "passed", chain, keys, estimates, checked)
        if outcome.misses:
            outcome.status = "failed"
            outcome.reason = "expectations not met: " + "; ".join(
                f"{e}: got {_number(v)}" for e, v in outcome.misses
            )
        return outcome

    def _stopped_outcome(
        self, leaf: Segment, chain: list[SegmentOutcome], keys: list[str | None], stop: Stop
    ) -> DesignOutcome:
        """A design a gate stopped: failed on a missed bound, skipped when dominated."""
        estimates = self._known.get(self._task(leaf)) or self.estimates(leaf)
        choices = dict(c.describe() for c in leaf.choices())
        checked = [
            (e, estimates.get(e.metric)) for e in for_design(leaf.tree.space.expect, choices)
        ]
        status = "failed" if stop.gate == EXPECT else "skipped"
        return DesignOutcome(
            leaf, status, chain, keys, estimates, checked, reason=stop.reason, gate=stop.gate
        )

    def run(self) -> None:
        """Build everything submitted (and what drivers submit meanwhile)."""
        while not self.closed:
            self._drive()
            if not any(t.state not in ("new", "done") for t in self._tasks.values()):
                return
            self._advance(None)

    # -- drivers: work that asks for more work (core/folding_search.py) ----------------
    def add_driver(self, driver: Driver) -> None:
        if driver not in self._drivers:
            self._drivers.append(driver)

    def _drive(self) -> None:
        if self._driving or self.closed:
            return
        self._driving = True
        try:
            for driver in list(self._drivers):
                driver.drive()
        finally:
            self._driving = False

    def advance_until(self, done: Callable[[], bool]) -> None:
        """Build until ``done()`` holds (a driver has submitted what the caller needs)."""
        while True:
            self._drive()
            if done():
                return
            if self.closed:
                raise EngineClosed("the run was stopped first")
            if not any(t.state in ("ready", "held", "running") for t in self._tasks.values()):
                raise RuntimeError("brainsmith engine stalled: nothing left to build")
            self._advance(None)

    def outcome(self, segment: Segment) -> SegmentOutcome | None:
        """The segment's outcome once it is done (None before, or if never submitted)."""
        task = self._by_segment.get(segment)
        return task.outcome if task is not None and task.state == "done" else None

    def finished(self, leaf: Segment) -> bool:
        """The design is done: built, failed, or stopped by a gate."""
        task = self._by_segment.get(leaf)
        return task is not None and (task.state == "done" or task in self._stopped)

    def measured(
        self, leaf: Segment, below: Segment | None = None
    ) -> tuple[dict[str, Any], str] | None:
        """The design's estimates and the model they were made from (the output of the
        last segment on its path that wrote estimate reports, only below ``below`` if
        given), once that segment is done."""
        chain = leaf.chain()
        if below is not None and below in chain:
            chain = chain[chain.index(below) + 1 :]
        for segment in reversed(chain):
            task = self._by_segment.get(segment)
            outcome = task.outcome if task is not None and task.state == "done" else None
            if outcome is None or not outcome.ok or outcome.entry is None:
                continue
            found = self._read_estimates(outcome.entry)
            if found is not None and outcome.output_model:
                return found, outcome.output_model
        return None

    def out_of_time(self) -> bool:
        """The time budget (``--brainsmith-budget``) has run out."""
        return self._out_of_time()

    def estimates(self, leaf: Segment) -> dict[str, Any]:
        """The design's FINN estimates, from the last segment that wrote reports."""
        for segment in reversed(leaf.chain()):
            outcome = self._task(segment).outcome
            if outcome is None or outcome.entry is None:
                continue
            found = self._read_estimates(outcome.entry)
            if found is not None:
                return found
        return {}

    def _read_estimates(self, entry: str) -> dict[str, Any] | None:
        if entry not in self._estimates:
            try:
                self._estimates[entry] = finn_runner.read_estimates(Path(entry))
            except (OSError, ValueError):
                self._estimates[entry] = None
        return self._estimates[entry]

    # -- gates (gates.py says what they mean; this is the bookkeeping) -------------------
    def _compete(self, tasks: list[Task]) -> None:
        """A submitted design joins its blueprint's Pareto gate, unless the gate has
        decided already (a design asked for later is not held back by it)."""
        design = tasks[-1]
        settings = design.segment.tree.space.explore
        if settings is None or not settings.pareto:
            return
        if not design.segment.is_leaf or trial_of(design.segment) is not None:
            return  # a folding search's prefix or trial: asked for later, not a competitor
        gate = self._pareto.setdefault(design.segment.tree.space.path, ParetoGate(settings))
        if gate.decided or design in gate.competitors:
            return
        at = next(
            (i for i, t in enumerate(tasks) if i and t.segment.start == settings.before_slot),
            len(tasks),
        )
        pre = tasks[at - 1]  # the last task before its gate segment
        gate.competitors[design] = pre
        if pre.state != "done":
            gate.pending.add(pre)
            self._settles.setdefault(pre, []).append(gate)

    def _gate_of(self, task: Task) -> ParetoGate | None:
        """The undecided Pareto gate this task is a gate segment of, if any."""
        settings = task.segment.tree.space.explore
        if settings is None or not settings.pareto or task.parent is None:
            return None
        if task.segment.start != settings.before_slot:
            return None
        gate = self._pareto.get(task.segment.tree.space.path)
        return gate if gate is not None and not gate.decided else None

    def _check_estimates(self, task: Task, entry: str) -> None:
        """The expect gate: this segment wrote estimate reports, so every design below
        it that still goes on is held to its bounds now; one that misses a bound is
        stopped before its next step."""
        estimates = self._read_estimates(entry)
        if estimates is None:
            return
        space = task.segment.tree.space
        for design in sorted(task.designs, key=_tree_order):
            if design in self._stopped:
                continue
            self._known[design] = estimates
            below = self._below(design, task)
            if not below:
                continue  # the design ends here: judged as every design is
            choices = dict(c.describe() for c in design.segment.choices())
            missed = misses(for_design(space.expect, choices), estimates)
            if missed:
                text = "; ".join(miss_text(e, estimates[e.metric]) for e in missed)
                self._stopped[design] = Stop(
                    EXPECT, f"{text} on estimates; stopped before {below[0].segment.steps[0].name}"
                )

    def _below(self, design: Task, task: Task) -> list[Task]:
        """The tasks with steps on the design's path below ``task``."""
        chain = [self._task(s) for s in design.segment.chain()]
        return [t for t in chain[chain.index(task) + 1 :] if t.segment.steps]

    def _decide(self, gate: ParetoGate) -> None:
        """Every competitor has its estimates (or is out): stop the dominated designs,
        then let the parked gate segments go on (or be pruned)."""
        gate.decided = True
        metrics = gate.settings.pareto
        entrants: list[tuple[Task, dict[str, Any]]] = []
        for design in sorted(gate.competitors, key=_tree_order):
            pre = gate.competitors[design]
            if design in self._stopped or pre.outcome is None or not pre.outcome.ok:
                continue  # failed, or missed a bound: out of the competition
            estimates = self._known.get(design)
            if comparable(estimates, metrics):
                assert estimates is not None
                entrants.append((design, estimates))
        found = dict(entrants)
        before = gate.settings.before or "?"
        for design, by in dominated(entrants, metrics).items():
            reason = dominance_reason(metrics, found[design], found[by], _short(by), before)
            self._stopped[design] = Stop(PARETO, reason)
        parked, gate.parked = gate.parked, []
        for task in parked:
            task.state = "waiting"
            self._make_ready(task)

    def _pruned(self, task: Task, stop: Stop) -> SegmentOutcome:
        return SegmentOutcome(
            task.label,
            task.key,
            "pruned",
            error=stop.reason,
            kind=stop.gate,
            saved_seconds=round(self._estimate(task), 3),
        )

    def _promise(self, task: Task) -> tuple[float, ...]:
        """Best first (``explore.order``): work whose designs have no estimates yet
        comes first (estimates are what tell the promising designs apart), then the
        work of the most promising design below; without an order, none of this."""
        settings = task.segment.tree.space.explore
        if settings is None or settings.order is None:
            return (0.0, 0.0, 0.0)
        known = [d for d in task.designs if d in self._known and d not in self._stopped]
        if not known:
            return (0.0, 0.0, 0.0)
        order, pareto = settings.order, settings.pareto
        best = min(
            order_score(self._known[d], order, pareto, partial(self._rank, d)) for d in known
        )
        return (1.0, *best)

    def _rank(self, design: Task) -> int:
        """How many designs of its blueprint with estimates dominate this one."""
        space = design.segment.tree.space
        metrics = space.explore.pareto if space.explore else ()
        mine = self._known.get(design)
        if not metrics or not comparable(mine, metrics):
            return 0
        assert mine is not None
        return sum(
            1
            for other, theirs in self._known.items()
            if other.segment.tree.space.path == space.path
            and other not in self._stopped
            and comparable(theirs, metrics)
            and dominates(theirs, mine, metrics)
        )

    def _out_of_time(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline

    def _over_budget(self, task: Task) -> SegmentOutcome:
        return SegmentOutcome(
            task.label,
            task.key,
            "cancelled",
            error=f"the time budget ({_seconds(self.budget)}, --brainsmith-budget) ran out "
            "before it started; a later run continues from the cache",
            kind=BUDGET,
            saved_seconds=round(self._estimate(task), 3),
        )

    # -- one turn of the scheduler -----------------------------------------------------
    def _advance(self, target: list[Task] | None) -> None:
        interrupts.raise_pending()  # a Ctrl-C or SIGTERM whose first raise was swallowed
        self._drive()
        if self.workers == 0:
            self._advance_inline(target)
            return
        self._start_ready()
        if not (self._running or self._held or self._ready):
            if target is not None and target[-1].state != "done":
                raise RuntimeError(f"brainsmith engine stalled waiting for {target[-1].label}")
            return
        self._wait_for_workers()
        self._collect()
        self._enforce_deadlines()
        self._retry_held()

    def _pump(self) -> None:
        """Collect finished workers and start what is ready, without waiting."""
        if self.workers == 0 or self.closed:
            return
        self._collect()
        self._enforce_deadlines()
        self._retry_held()
        self._drive()
        self._start_ready()

    def _advance_inline(self, target: list[Task] | None) -> None:
        task = None
        if target is not None:
            task = next((t for t in target if t.state in ("ready", "held")), None)
        if task is None:  # no target, or it waits for a gate: the best other work
            runnable = [t for t in self._tasks.values() if t.state in ("ready", "held")]
            task = min(runnable, key=self._entry, default=None)
        if task is None:
            if target is not None and target[-1].state != "done":
                raise RuntimeError(f"brainsmith engine stalled waiting for {target[-1].label}")
            return
        self._start(task, inline=True)

    def _start_ready(self) -> None:
        while self._ready and not self._draining and len(self._running) < self.workers:
            task = heapq.heappop(self._ready)[-1]
            if task.state == "ready":
                self._start(task, inline=False)

    def _start(self, task: Task, *, inline: bool) -> None:
        try:
            self._start_or_reuse(task, inline=inline)
        except CacheError as exc:  # the cache cannot be read or written: this task's error
            self._unhold(task)
            if task.state != "done":
                self._finish(task, self._error(task, str(exc), kind="cache"))

    def _start_or_reuse(self, task: Task, *, inline: bool) -> None:
        found = self._from_cache(task)
        if found is not None:
            self._finish(task, found)
            return
        if self._out_of_time():  # what is cached is still reused: it costs nothing
            self._unhold(task)
            self._finish(task, self._over_budget(task))
            return
        assert task.key is not None
        lock = self.cache.lock(task.key)
        try:
            if inline:
                asked = time.perf_counter()
                lock.acquire()
                self.waited += time.perf_counter() - asked
            else:
                lock.acquire(timeout=0)
        except LockTimeout:
            self._hold(task)
            return
        except CacheError:
            raise
        except OSError as exc:
            self._finish(
                task, self._error(task, f"cannot lock {task.key} in {self.cache.root}: {exc}")
            )
            return
        self._unhold(task)
        try:
            if self._input_damaged(task):
                lock.release()
                return
            found = self._from_cache(task)  # another process may have built it meanwhile
            if found is None:
                if self.cache.failure(task.key) is not None:
                    self.cache.forget_failure(task.key)
                spec = self._spec(task)
        except BaseException:
            lock.release()
            raise
        if found is not None:
            lock.release()
            self._finish(task, found)
            return
        task.lock, task.spec = lock, spec
        try:
            if self.events is not None:
                self.events.segment_start(task.segment, spec.config, str(spec.staged / "build"))
            if not inline:
                self._launch(task, spec)
                return
            result = build_segment(spec, self.cache)
        except BaseException:  # e.g. Ctrl-C while FINN is imported: nothing may stay locked
            if task not in self._running:
                self._release(task)
            raise
        self._complete(task, result)

    def _launch(self, task: Task, spec: BuildSpec) -> None:
        """Start the task's build on a worker and register it as running."""
        remote = getattr(self.launcher, "remote", False)
        error = None if remote else self._import_finn()
        if error is not None:
            self._release(task)
            self._finish(task, self._error(task, error))
            return
        held = (_lock_fd(t.lock) for t in self._running)
        timeout = spec.limits.get("timeout")
        where: dict[str, Any] = {}
        if remote:
            where = {
                "timeout": timeout,
                "priority": task.priority,
                "resources": self.segment_resources(task.segment),
            }
        # a worker started is one shutdown kills: Ctrl-C waits until it is registered
        # (not for a remote launcher, whose calls may wait on the network; a Dask future
        # left unregistered ends with the client)
        with contextlib.nullcontext() if remote else interrupts.deferred():
            task.worker = self.launcher(
                partial(build_segment, spec, self.cache),
                output=spec.staged / "worker.log",
                max_memory=int(spec.limits["max_memory"]) if "max_memory" in spec.limits else None,
                close_fds=tuple(fd for fd in held if fd is not None),
                **where,
            )
            self.processes += 1
            task.state = "running"
            task.started = time.monotonic()
            # a remote launcher enforces the timeout where the build runs
            task.deadline = task.started + timeout if timeout and not remote else None
            self._running.append(task)
        interrupts.raise_pending()  # what came meanwhile

    def _input_damaged(self, task: Task) -> bool:
        """Check the checkpoint this build resumes from right before using it. If the cache
        found it damaged (and moved the entry aside), the segment that made it is built
        again first and this one waits: a child is never built from, nor charged for, a
        corrupt input."""
        owner = task.parent
        while owner is not None and not owner.segment.steps:  # passthroughs share a key
            owner = owner.parent
        if owner is None or owner.key is None or owner.outcome is None or not owner.outcome.entry:
            return False
        if self.cache.verify_file(owner.key, finn_runner.OUTPUT_MODEL) is None:
            return False
        node: Task | None = task
        while node is not None and node is not owner:  # the task and passthroughs above it
            node.state, node.outcome = "waiting", None
            node = node.parent
        owner.outcome = None
        owner.state = "waiting"
        self._make_ready(owner)
        return True

    def _import_finn(self) -> str | None:
        """FINN once in this process, before the first fork: every worker has it."""
        if self._finn_error is None:
            self.phase = "importing FINN"
            try:
                finn_runner.import_finn()
            except finn_runner.FinnUnavailable as exc:
                self._finn_error = str(exc)
            finally:
                self.phase = ""
        return self._finn_error

    def _spec(self, task: Task) -> BuildSpec:
        segment = task.segment
        space = segment.tree.space
        path_steps = segment.path_steps()
        parent = task.parent.outcome if task.parent is not None and task.parent.key else None
        input_model = (
            Path(parent.output_model) if parent and parent.output_model else segment.model()
        )
        assert task.key is not None and task.components is not None
        return BuildSpec(
            key=task.key,
            label=task.label,
            components=task.components,
            path_steps=path_steps,
            first=len(path_steps) - len(segment.steps),
            input_model=input_model,
            config=segment.config(),
            generate_outputs=list(space.generate_outputs),
            staged=self.cache.new_staging(task.key),
            work_dir=self.cache.fresh_work_dir(task.key),
            run_id=self.run_id,
            keep_step_models=self.keep_step_models,
            limits=self._limits(segment),
            verify=verification.plan_for(segment, self.cache),
        )

    def _hold(self, task: Task) -> None:
        """Another process builds this key: try again shortly, without a worker."""
        now = time.monotonic()
        if task.held_since is None:
            task.held_since = now
        task.state = "held"
        task.retry_at = now + POLL_SECONDS
        if task not in self._held:
            self._held.append(task)

    def _unhold(self, task: Task) -> None:
        if task.held_since is not None:
            self.waited += time.monotonic() - task.held_since
            task.held_since = None
        if task in self._held:
            self._held.remove(task)

    def _retry_held(self) -> None:
        now = time.monotonic()
        for task in list(self._held):
            if task.retry_at > now:
                continue
            timeout = self.segment_timeout(task.segment)
            if timeout and task.held_since is not None and now - task.held_since > timeout:
                self._unhold(task)
                self._finish(
                    task,
                    self._error(
                        task,
                        f"waited {timeout:g} s (its timeout) for another process building "
                        f"it; {_holder(self.cache, task.key)}",
                        kind="timeout",
                    ),
                )
                continue
            self._held.remove(task)
            task.state = "ready"
            self._push(task)

    def _wait_for_workers(self) -> None:
        now = time.monotonic()
        wake = [now + POLL_SECONDS]
        wake += [t.deadline for t in self._running if t.deadline is not None]
        wake += [t.retry_at for t in self._held]
        if self._ready and len(self._running) < self.workers and not self._draining:
            return  # more to start right away
        timeout = max(0.0, min(wake) - now)
        waitables = [w for t in self._running if t.worker for w in t.worker.waitables()]
        if waitables:
            from multiprocessing.connection import wait

            wait(waitables, timeout=timeout)
        else:
            time.sleep(timeout)

    def _collect(self) -> None:
        for task in list(self._running):
            assert task.worker is not None
            if task.worker.poll():
                self._running.remove(task)
                if task.worker.result is not None and not task.worker.reap():
                    self._exiting.append(task.worker)  # answered: its exit is not waited for
                self._complete(task, task.worker.result)
        self._exiting = [w for w in self._exiting if not w.reap()]

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for task in list(self._running):
            if task.deadline is not None and now > task.deadline and task.worker is not None:
                task.worker.kill("timeout")
                self._running.remove(task)
                self._complete(task, None)

    def _complete(self, task: Task, result: dict[str, Any] | None) -> None:
        """A build ended (with ``result``, or its worker without one): finish the task."""
        spec = task.spec
        assert spec is not None and task.key is not None
        try:
            if result is None:
                result = self._result_of_dead_worker(task, spec)
            outcome = self._outcome(task, result)
        finally:
            self._release(task)
        if outcome.status == "built":
            for name, seconds in outcome.step_seconds.items():
                self._durations[name] = seconds
        self._finish(task, outcome)

    def _result_of_dead_worker(self, task: Task, spec: BuildSpec) -> dict[str, Any]:
        worker = task.worker
        assert worker is not None and task.key is not None
        if worker.killed_by_us == "cancel":
            return {"status": "cancelled", "error": "the run stopped before it finished"}
        entry = self.cache.lookup(task.key)
        if entry is not None:  # it published, then died before it could say so
            return {"status": "built", "entry": str(entry.path), **_timing(entry.manifest)}
        seconds = round(time.monotonic() - task.started, 3)
        step = _current_step(self.cache, task.key)
        if worker.killed_by_us == "timeout":
            kind, error = "timeout", f"timed out after {spec.limits['timeout']:g} s (its timeout)"
        else:
            kind, error = worker.exit_cause()
        # what it printed (a crash's own report first), then where the build log ends
        tail = worker.output_tail(lines=12)
        log = finn_runner.build_log(spec.staged)
        with contextlib.suppress(OSError):
            lines = log.read_text(errors="replace").strip().splitlines()[-8:]
            if lines:
                tail = (tail + "\n" if tail else "") + "build log ends:\n" + "\n".join(lines)
        answer = {"seconds": seconds, "step": step, "error": error, "traceback": tail}
        if kind in LASTING_KINDS:
            manifest = manifest_for(spec, seconds, {})
            return record_failure(spec, self.cache, manifest, answer, kind)
        return {**answer, "status": "error", "kind": kind}

    def _outcome(self, task: Task, result: dict[str, Any]) -> SegmentOutcome:
        status = result.get("status", "error")
        if status in ("built", "verified"):  # verified: a cached entry, verified now
            entry = self.cache.lookup(task.key) if status == "verified" else None
            built = (
                _reused(task, entry)
                if entry
                else _entry_outcome(task, "built", task.key, Path(result["entry"]), result)
            )
            return verification.judge(task.segment, built, self.cache, now=True) or self._error(
                task, "its verification did not finish (its worker ended first)", "verification"
            )
        return SegmentOutcome(
            task.label,
            task.key,
            status,
            seconds=result.get("seconds", 0.0),
            log=result.get("log"),
            step=result.get("step"),
            error=result.get("error"),
            traceback=result.get("traceback"),
            kind=result.get("kind"),
            control=result.get("control"),
            step_seconds=result.get("step_seconds", {}),
        )

    def _release(self, task: Task) -> None:
        if task.lock is not None:
            with contextlib.suppress(OSError):
                task.lock.release()
            task.lock = None
        if task.spec is not None:
            self.cache.discard_staging(task.spec.staged)
            with contextlib.suppress(OSError):  # a killed worker leaves its status file
                (self.cache.base / "running" / f"{task.key}.json").unlink(missing_ok=True)

    # -- the cache -------------------------------------------------------------------
    def _from_cache(self, task: Task) -> SegmentOutcome | None:
        assert task.key is not None
        entry = self.cache.lookup(task.key)
        if entry is not None and self._fresh(entry):  # None: not verified yet
            return verification.judge(task.segment, _reused(task, entry), self.cache)
        failure = self.cache.failure(task.key)
        if failure is not None and self._stands(failure, task):
            return _failed_before(task, failure, self.run_id)
        return None

    def _fresh(self, entry: Entry) -> bool:
        if not self.rebuild:
            return True
        return entry.manifest.get("run_id") == self.run_id  # rebuilt earlier in this run

    def _stands(self, failure: Failure, task: Task) -> bool:
        """A recorded failure is the answer unless retrying (once per run: another worker
        may have retried it already), or unless it ran out of a limit now raised."""
        record = failure.record
        if self.retry_failed and record.get("run_id") != self.run_id:
            return False
        recorded = record.get("limits") or {}
        kind = record.get("kind")
        if kind == "timeout":
            now = self.segment_timeout(task.segment)
            return now is not None and now <= recorded.get("timeout", math.inf)
        if kind == "memory":
            memory = self.segment_max_memory(task.segment)
            return memory is not None and memory <= recorded.get("max_memory", math.inf)
        return True

    def _error(self, task: Task, message: str, kind: str = "environment") -> SegmentOutcome:
        return SegmentOutcome(task.label, task.key, "error", error=message, kind=kind)

    # -- durations ---------------------------------------------------------------------
    def _load_durations(self) -> dict[str, float]:
        try:
            data = json.loads((self.cache.base / DURATIONS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return {k: float(v) for k, v in data.items() if isinstance(v, int | float)}

    def _save_durations(self) -> None:
        if not self.built:
            return
        path = self.cache.base / DURATIONS_FILE
        tmp = path.with_name(f"{DURATIONS_FILE}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            merged = {**self._load_durations(), **self._durations}
            tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
            os.replace(tmp, path)

    def pruned(self) -> list[SegmentOutcome]:
        """The segments no design needed any more once the gates had stopped them."""
        return [
            t.outcome
            for t in self._tasks.values()
            if t.outcome is not None and t.outcome.status == "pruned"
        ]

    # -- progress and the end ------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        """Counts of needed segments (done, running, queued), what runs, time left."""
        # called from the status line's thread: take copies first (atomic in CPython)
        tasks, running = list(self._tasks.values()), list(self._running)
        needed = [t for t in tasks if t.state != "new"]
        queued = [t for t in needed if t.state in ("waiting", "ready", "held", "parked")]
        now = time.monotonic()
        left = sum(t.estimate for t in queued)
        left += sum(max(0.0, t.estimate - (now - t.started)) for t in running)
        describe = getattr(self.launcher, "describe", None)
        slots = getattr(self.launcher, "slots", None) or self.workers
        return {
            "done": sum(1 for t in needed if t.state == "done"),
            "running": [t.label for t in running],
            "queued": len(queued),
            "seconds_left": left / max(1, slots) if (queued or running) else 0.0,
            "phase": self.phase,
            **({"cluster": describe()} if describe is not None else {}),
        }

    def shutdown(self, *, cancel: bool = True) -> None:
        """End the run: kill the workers (``cancel``), or let running builds finish
        first (their results may be what another process waits for); nothing queued
        starts any more, and nothing is recorded for what was stopped."""
        self._draining = True
        try:
            while self._running and not cancel:
                interrupts.raise_pending()
                self._wait_for_workers()
                self._collect()
                self._enforce_deadlines()
        finally:
            for task in list(self._running):
                assert task.worker is not None
                task.worker.kill("cancel")
                self._running.remove(task)
                self._complete(task, None)
            for task in self._tasks.values():
                if task.state in ("waiting", "ready", "held", "parked"):
                    task.state = "done"
                    task.outcome = SegmentOutcome(
                        task.label, task.key, "cancelled", error="the run stopped first"
                    )
            for worker in self._exiting:
                worker.reap(timeout=5.0)
            self._exiting.clear()
            self._ready.clear()
            self._held.clear()
            self.closed = True
            self._save_durations()
            for driver in self._drivers:
                driver.close()


def segment_label(segment: Segment) -> str:
    """The segment as a readable path, e.g. ``tfc.blueprint.yaml::first..last::MVAU[rtl]``."""
    return "::".join([segment.tree.space.path.name, *segment.nodeid_parts()])


def describe_failure(outcome: SegmentOutcome) -> str:
    """One line: which segment, where, why."""
    if outcome.status == "cancelled":
        return f"not built: {outcome.error}"
    earlier = " in an earlier run" if outcome.status == "failed-before" and outcome.earlier else ""
    where = f" at step {outcome.step}" if outcome.step else ""
    return f"segment {outcome.segment} failed{earlier}{where}: {outcome.error}"


def _tree_order(task: Task) -> tuple[str, int]:
    """The same order in every process: blueprint, then place in its tree."""
    return (str(task.segment.tree.space.path), task.segment.index)


def _short(design: Task) -> str:
    """A design as its choices read, e.g. ``MVAU=rtl, target_fps=400000``."""
    choices = [c.describe() for c in design.segment.choices()]
    return ", ".join(f"{k}={v}" for k, v in choices) or design.label


def _seconds(value: float | None) -> str:
    if value is None:
        return "none"
    if value >= 3600:
        return f"{value / 3600:g} h"
    if value >= 60:
        return f"{value / 60:g} min"
    return f"{value:g} s"


def _reused(task: Task, entry: Entry) -> SegmentOutcome:
    return _entry_outcome(task, "reused", entry.key, entry.path, entry.manifest)


def _entry_outcome(
    task: Task, status: str, key: str | None, path: Path, timing: dict[str, Any]
) -> SegmentOutcome:
    """The outcome of a segment whose result is the cache entry at ``path`` (built now
    or reused); ``timing`` holds its ``seconds`` and ``step_seconds``."""
    return SegmentOutcome(
        task.label,
        key,
        status,
        seconds=timing.get("seconds", 0.0),
        entry=str(path),
        log=str(finn_runner.build_log(path)),
        output_model=str(path / finn_runner.OUTPUT_MODEL),
        step_seconds=timing.get("step_seconds", {}),
    )


def _failed_before(task: Task, failure: Failure, run_id: str) -> SegmentOutcome:
    record = failure.record
    return SegmentOutcome(
        task.label,
        failure.key,
        "failed-before",
        seconds=record.get("seconds", 0.0),
        log=str(finn_runner.build_log(failure.path)),
        step=record.get("step"),
        error=record.get("error"),
        traceback=record.get("traceback"),
        kind=record.get("kind", "exception"),
        earlier=record.get("run_id") != run_id,
    )


def _timing(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "seconds": manifest.get("seconds", 0.0),
        "step_seconds": manifest.get("step_seconds", {}),
    }


def _current_step(cache: SegmentCache, key: str) -> str | None:
    """The step a dead worker was in, from its status file."""
    try:
        return json.loads((cache.base / "running" / f"{key}.json").read_text()).get("step")
    except (OSError, ValueError):
        return None


def _holder(cache: SegmentCache, key: str | None) -> str:
    try:
        data = json.loads((cache.base / "running" / f"{key}.json").read_text())
    except (OSError, ValueError):
        return "its builder is unknown"
    return f"pid {data.get('pid')} on {data.get('host')} is building it"


def _lock_fd(lock: Any) -> int | None:
    """The file descriptor of a held FileLock (filelock keeps it in its context)."""
    lock = getattr(lock, "_lock", lock)  # the cache's KeyLock wraps a FileLock
    context = getattr(lock, "_context", lock)
    fd = getattr(context, "lock_file_fd", None)
    return fd if isinstance(fd, int) else None


def _number(value: Any) -> str:
    return (
        "not reported"
        if value is None
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )
