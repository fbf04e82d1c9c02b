"""The engine's front: what pytest items, ``explore()`` and folding searches ask of it.

``Engine`` wires the parts (``tasks``, ``limits``, ``gating``, ``results``,
``scheduler``) and answers in segments and designs; it holds no logic of its own
beyond waiting for the answer the caller wants. Callers reach a part directly for
what is that part's (``engine.limits``, ``engine.gating``, ``engine.starter``,
``engine.key_locks``, ``engine.scheduler``, ``engine.answers``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..cache import SegmentCache
from ..cache.execution_memo import ExecutionMemo
from ..gates import BUDGET, EXPECT, PARETO
from ..launchers import Launcher, WorkerPool, available_cores
from ..outcomes import DesignOutcome, SegmentOutcome
from ..tree import Segment
from . import results
from .equivalence import Equivalent, Facts, representative
from .gating import Gating
from .launching import EngineEvents
from .limits import Durations, Limits
from .scheduler import Scheduler
from .tasks import PENDING, TaskGraph, segment_label

if TYPE_CHECKING:
    from ..cache.remote.tier import RemoteCache


class EngineClosed(RuntimeError):
    """The engine was shut down (the run was interrupted) while a design was waited for."""


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
        remote: RemoteCache | None = None,
    ) -> None:
        self.cache = cache
        self.run_id = run_id
        #: designs' executions in Python (``design.execute``), kept by content
        self.executions = ExecutionMemo(cache.base)
        self.limits = Limits(timeout, max_memory, step_resources or {}, tools or {})
        self.durations = Durations(cache.base)
        #: entries' output digests: what their children's keys are made of
        self.digests = results.OutputDigests(cache)
        self.graph = TaskGraph(stored_output=self.digests.stored)
        self.estimates_of = results.Estimates()
        self.gating = Gating(self.graph, self.estimates_of, self.durations, budget)
        #: what the caches (this one, the remote one) answer for a task
        self.answers = results.CachedAnswers(
            cache,
            self.limits,
            rebuild=rebuild,
            retry_failed=retry_failed,
            run_id=run_id,
            remote=remote,
        )
        self.scheduler = Scheduler(
            cache,
            self.graph,
            self.gating,
            self.limits,
            self.durations,
            self.answers,
            #: starts one segment's build somewhere: here a process of its own, forked
            #: ahead from a zygote that never builds (``WorkerPool``)
            launcher=launcher or WorkerPool(share=[cache]),
            workers=available_cores() if workers is None else max(0, workers),
            run_id=run_id,
            keep_step_models=keep_step_models,
            events=events,
            digests=self.digests,
        )
        #: starts ready tasks: its ``launcher`` and ``workers`` (a cluster attached sets
        #: them), the builds ``running``, worker ``processes`` started
        self.starter = self.scheduler.starter
        #: keys another process or task builds (``waited``: seconds held by them)
        self.key_locks = self.scheduler.key_locks

    @property
    def closed(self) -> bool:
        return self.scheduler.closed

    # -- keys and limits ---------------------------------------------------------------
    def key(self, segment: Segment) -> str | None:
        """The segment's cache key (a segment without steps has its parent's), as far
        as it is known: it is made of its parent's output content, so it is None while
        the parent is neither built nor in the cache."""
        return self.graph.key(segment)[0]

    # -- asking for designs --------------------------------------------------------------
    def submit(self, leaves: Iterable[Segment]) -> None:
        """Schedule everything these designs need; work starts as the caller waits."""
        if self.closed:
            return
        chains = [
            [self.graph.task(segment) for segment in leaf.chain()]
            for leaf in leaves
            if not self.limits.unrunnable(leaf)
        ]
        self.scheduler.submit(chains)

    def chain(self, leaf: Segment) -> list[SegmentOutcome]:
        """Every segment outcome of the design, root first; builds what is missing."""
        self.submit([leaf])
        self.scheduler.pump()  # whatever finished while the caller was busy frees its worker
        tasks = [self.graph.task(s) for s in leaf.chain()]
        if tasks[-1].state == "new":  # not submitted: the engine is closed
            raise EngineClosed("the run was stopped before this design was built")
        stopped = self.gating.stopped
        while tasks[-1].state != "done" and tasks[-1] not in stopped:
            if self.closed:
                raise EngineClosed("the run was stopped before this design was built")
            self.scheduler.advance(tasks)
        stop = stopped.get(tasks[-1])
        for task in tasks:  # durations timed since it was pruned say better what it saved
            if task.outcome is not None and task.outcome.kind in (EXPECT, PARETO, BUDGET):
                task.outcome.saved_seconds = round(self.durations.of(task.segment), 3)
        if stop is None:
            return [t.outcome for t in tasks if t.outcome is not None]
        # a gate stopped it: what is not done yet is pruned for this design (a segment
        # shared with a design still going is built all the same, for that one)
        return [
            t.outcome if t.state == "done" and t.outcome else self.gating.pruned(t, stop)
            for t in tasks
        ]

    def design(self, leaf: Segment) -> DesignOutcome:
        """The design's outcome: built (or not), its estimates, its expectations."""
        outcome = self._design(leaf)
        outcome.executions = self.executions
        return outcome

    def _design(self, leaf: Segment) -> DesignOutcome:
        reason = self.limits.unrunnable(leaf)
        if reason:
            keys = [self.key(s) for s in leaf.chain()]
            skipped = [
                SegmentOutcome(segment_label(s), key, "skipped")
                for s, key in zip(leaf.chain(), keys, strict=True)
            ]
            return DesignOutcome(leaf, "skipped", skipped, keys, reason=reason)
        chain = self.chain(leaf)
        task = self.graph.task(leaf)
        keys = [self.key(s) for s in leaf.chain()]  # known now that they are built
        stop = self.gating.stopped.get(task)
        if stop is not None:
            estimates = self.gating.known.get(task) or self.estimates(leaf)
            return results.stopped(leaf, chain, keys, stop, estimates)
        outcome = results.judged(leaf, chain, keys, self.estimates(leaf))
        if outcome.failure is None and outcome.status in ("passed", "failed"):
            outcome.equivalent = self.equivalent(leaf)
        return outcome

    def equivalent(self, leaf: Segment) -> Equivalent | None:
        """The earlier design of its tree that this built design equals (a choice on
        its path changed nothing), waiting for that design's segments if they are
        still being built; None if there is none (``equivalence.py``)."""
        facts = Facts(
            settle=self._settle,
            digest=self.digests.of_outcome,
            key=self.key,
            estimates=lambda s: self.estimates_of.of_chain([self.outcome(x) for x in s.chain()]),
        )
        return representative(leaf, facts)

    def _settle(self, segment: Segment) -> SegmentOutcome | None:
        """The segment's outcome, waited for if a submitted design needs it."""
        task = self.graph.find(segment)
        if task is None or task.state == "new":
            return None
        while task.state != "done":
            if self.closed or task in self.gating.stopped or self.gating.all_stopped(task):
                return None
            try:
                self.scheduler.advance([task])
            except RuntimeError:  # it waits for something that will not come
                return None
        return task.outcome

    def run(self) -> None:
        """Build everything submitted (and what drivers submit meanwhile)."""
        while not self.closed:
            self.scheduler.drivers.drive()
            if not any(t.state not in ("new", "done") for t in self.graph.tasks.values()):
                return
            self.scheduler.advance(None)

    def advance_until(self, done: Callable[[], bool]) -> None:
        """Build until ``done()`` holds (a driver has submitted what the caller needs)."""
        while True:
            self.scheduler.drivers.drive()
            if done():
                return
            if self.closed:
                raise EngineClosed("the run was stopped first")
            if not self.graph.in_state("ready", "held", "running"):
                raise RuntimeError("brainsmith engine stalled: nothing left to build")
            self.scheduler.advance(None)

    # -- what is known ---------------------------------------------------------------
    def outcome(self, segment: Segment) -> SegmentOutcome | None:
        """The segment's outcome once it is done (None before, or if never submitted)."""
        task = self.graph.find(segment)
        return task.outcome if task is not None and task.state == "done" else None

    def finished(self, leaf: Segment) -> bool:
        """The design is done: built, failed, or stopped by a gate."""
        task = self.graph.find(leaf)
        return task is not None and (task.state == "done" or task in self.gating.stopped)

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
            outcome = self.outcome(segment)
            if outcome is None or not outcome.ok or outcome.entry is None:
                continue
            found = self.estimates_of.of_entry(outcome.entry)
            if found is not None and outcome.output_model:
                return found, outcome.output_model
        return None

    def estimates(self, leaf: Segment) -> dict[str, Any]:
        """The design's FINN estimates, from the last segment that wrote reports."""
        return self.estimates_of.of_chain([self.graph.task(s).outcome for s in leaf.chain()])

    def pruned(self) -> list[SegmentOutcome]:
        """The segments no design needed any more once the gates had stopped them."""
        return [
            t.outcome
            for t in self.graph.tasks.values()
            if t.outcome is not None and t.outcome.status == "pruned"
        ]

    # -- progress and the end ------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        """Counts of needed segments (done, running, queued), what runs, time left."""
        # called from the status line's thread: take copies first (atomic in CPython)
        tasks, running = list(self.graph.tasks.values()), list(self.starter.running)
        needed = [t for t in tasks if t.state != "new"]
        queued = [t for t in needed if t.state in PENDING]
        now = time.monotonic()
        left = sum(t.estimate for t in queued)
        left += sum(max(0.0, t.estimate - (now - t.started)) for t in running)
        launcher = self.starter.launcher
        described = launcher.describe()
        # as many at once as the cluster has, or as fit in memory here (memory_budget.py)
        slots = self.starter.slots(launcher.slots or self.starter.workers)
        # no faster than the longest chain still to build (a big root builds alone)
        chain = [t.priority - (now - t.started) for t in running]
        chain += [t.priority for t in queued if t.parent is None or t.parent.state == "done"]
        left = max(left / max(1, slots), max(chain, default=0.0))
        return {
            "done": sum(1 for t in needed if t.state == "done"),
            "running": [t.label for t in running],
            "queued": len(queued),
            "seconds_left": left if (queued or running) else 0.0,
            "phase": self.starter.prep.phase,
            **({"cluster": described} if described is not None else {}),
        }

    def shutdown(self, *, cancel: bool = True) -> None:
        """End the run: kill the workers (``cancel``), or let running builds finish
        first (their results may be what another process waits for); nothing queued
        starts any more, and nothing is recorded for what was stopped."""
        self.scheduler.shutdown(cancel=cancel)
