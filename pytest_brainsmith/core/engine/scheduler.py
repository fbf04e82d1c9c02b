"""The scheduler: the turn loop that moves tasks from waiting to done.

A task waits for its parent, is then queued with the longest remaining work first (its
own expected duration plus the longest chain below it, ``limits.Durations``), and runs
on a worker (``Launcher``: a forked process here, a Dask task on a cluster) when one is
free (``launching.Starter``: the cache asked first, the key locked, the build launched).
While another process holds the key's lock the task is ``held`` and tried again shortly,
without taking a worker (``key_locks.py``). Gates (``gating.py``) may stop a design's
work at any turn. Every state change goes through the table of ``states.py``.

A task's cache key is made when it becomes ready, from its parent's output content
(``tasks.TaskGraph.resolve``): two tasks under choices that made the same model get
the same key. The second one (a twin) then waits for the first one's build, without
a worker, and reuses its entry: the work below a choice that changed nothing is done
once.

There is no thread: a turn runs whenever the caller waits for a design, so every
worker is forked from the caller's main thread and a Ctrl-C reaches the caller, which
ends the workers (``shutdown``). With ``workers=0`` segments are built inline, in the
caller, in the order they are asked for (for pdb). Drivers (a folding search) are
called on every turn and may submit more work.
"""

from __future__ import annotations

import heapq
import time
from multiprocessing.connection import wait
from typing import Any

from .. import interrupts
from ..cache import SegmentCache
from ..launchers import Launcher, Worker
from ..outcomes import SegmentOutcome
from . import results, states
from .drivers import Drivers
from .gating import Gating
from .key_locks import POLL_SECONDS, KeyLocks
from .launching import EngineEvents, Starter
from .limits import Durations, Limits, step_names
from .tasks import PENDING, Task, TaskGraph


class Scheduler:
    """Moves the task graph's needed tasks from waiting to done: the ready queue, the
    turns, what ended; ``starter`` starts them, ``key_locks`` holds what waits for a key."""

    def __init__(
        self,
        cache: SegmentCache,
        graph: TaskGraph,
        gating: Gating,
        limits: Limits,
        durations: Durations,
        answers: results.CachedAnswers,
        *,
        launcher: Launcher,
        workers: int,
        run_id: str = "",
        keep_step_models: bool = False,
        events: EngineEvents | None = None,
        digests: results.OutputDigests | None = None,
    ) -> None:
        self.cache = cache
        #: the output digests of entries, which key the children (``tasks.py``)
        self.digests = digests or results.OutputDigests(cache)
        self.graph = graph
        self.gating = gating
        self.limits = limits
        self.durations = durations
        self.answers = answers
        self.run_id = run_id
        self.events = events
        self.key_locks = KeyLocks(cache, limits, requeue=self._push, finish=self.finish)
        self.starter = Starter(
            cache,
            graph,
            gating,
            limits,
            answers,
            self.key_locks,
            loop=self,
            launcher=launcher,
            workers=workers,
            run_id=run_id,
            keep_step_models=keep_step_models,
            events=events,
        )
        self.running = self.starter.running  # the same list: the builds on workers now
        self._ready: list[tuple[tuple[float, ...], float, int, Task]] = []
        self._exiting: list[Worker] = []  # workers that answered and are still exiting
        #: work that asks for more work on every turn (a folding search)
        self.drivers = Drivers()
        self._draining = False
        self.closed = False
        #: what this engine built (or failed to build) in this run
        self.built: list[SegmentOutcome] = []

    # -- submitting ------------------------------------------------------------------
    def submit(self, chains: list[list[Task]]) -> None:
        """Schedule these designs' tasks (each chain root first); work starts as the
        caller waits."""
        new: list[Task] = []
        for tasks in chains:
            for task in tasks:
                task.designs.add(tasks[-1])
                if task.state == "new":
                    states.move(task, "needed")
                    new.append(task)
            self.gating.compete(tasks)
        if not new:
            return
        remote = self.answers.remote
        if remote is not None and not self.answers.rebuild:  # downloads start ahead
            remote.prefetch([t.key for t in new if t.key and t.segment.steps])
        self._prioritize()
        for task in new:
            if task.state == "waiting" and (task.parent is None or task.parent.state == "done"):
                self.make_ready(task)
        for gate in self.gating.undecided():
            if not gate.decided:  # an earlier one's parked segments may have decided it
                self._unpark(self.gating.decide(gate))

    def _prioritize(self) -> None:
        """Longest remaining work first: a task's own estimate plus the longest chain of
        needed work below it (the critical path through it)."""
        needed = self.graph.needed()
        for task in sorted(needed, key=lambda t: -t.segment.depth):
            task.estimate = self.durations.of(task.segment)
            below = [c.priority for c in task.children if c.state != "new"]
            task.priority = task.estimate + max(below, default=0.0)
        self._ready = [self._entry(t) for t in needed if t.state == "ready"]
        heapq.heapify(self._ready)

    def _entry(self, task: Task) -> tuple[tuple[float, ...], float, int, Task]:
        return (self.gating.promise(task), -task.priority, task.order, task)

    def _push(self, task: Task) -> None:
        heapq.heappush(self._ready, self._entry(task))

    def make_ready(self, task: Task) -> None:
        """The waiting task's parent is done (or it has none): key it and queue it, unless
        its parent failed, a gate stopped it, parks it, or it has no steps."""
        parent = task.parent
        if parent is not None and parent.outcome is not None and not parent.outcome.ok:
            self.finish(task, results.blocked(task))
            return
        self.graph.resolve(task, self.digests.of_outcome)  # its parent is done: its key
        if task.key is None and task.segment.steps:
            assert parent is not None and parent.outcome is not None
            why = f"the output of {parent.label} has no readable digest in {parent.outcome.entry}"
            self.finish(task, results.error(task, why, kind="cache"))
            return
        stop = self.gating.all_stopped(task)
        if stop is not None:
            self.finish(task, self.gating.pruned(task, stop))
            return
        gate = self.gating.gate_of(task)
        if gate is not None:  # a Pareto gate segment: waits for every competitor
            states.move(task, "parked")
            gate.parked.append(task)
            return
        if not task.segment.steps:
            self.finish(task, results.passthrough(task))
            return
        remote = self.answers.remote
        if remote is not None and not self.answers.rebuild and task.parent is not None:
            assert task.key is not None
            remote.prefetch([task.key])  # its download starts while it waits for a worker
        states.move(task, "queued")
        self._push(task)

    def _unpark(self, parked: list[Task]) -> None:
        for task in parked:
            states.move(task, "unparked")
            self.make_ready(task)

    def finish(self, task: Task, outcome: SegmentOutcome) -> None:
        """The task is done with ``outcome``: gates learn its estimates, its children
        may start."""
        states.move(task, "finished")
        task.outcome = outcome
        if outcome.status in ("built", "failed") and not outcome.elsewhere:
            self.built.append(outcome)
            if self.events is not None:
                self.events.segment_finish(task.segment, outcome)
        if outcome.ok and outcome.entry is not None and task.segment.steps:
            self.gating.check_estimates(task, outcome.entry)
        for gate in self.gating.settled_by(task):
            if not gate.decided:
                self._unpark(self.gating.decide(gate))
        self.key_locks.twin_done(task)
        for child in task.children:
            if child.state == "waiting":
                self.make_ready(child)

    # -- one turn --------------------------------------------------------------------
    def advance(self, target: list[Task] | None) -> None:
        """One turn: start what is ready, wait for a worker, collect what ended."""
        interrupts.raise_pending()  # a Ctrl-C or SIGTERM whose first raise was swallowed
        self.drivers.drive()
        if self.starter.workers == 0:
            self._advance_inline(target)
            return
        self._start_ready()
        if not (self.running or self.key_locks.held or self._ready):
            if target is not None and target[-1].state != "done":
                raise RuntimeError(f"brainsmith engine stalled waiting for {target[-1].label}")
            return
        self._wait_for_workers()
        self._collect()
        self._enforce_deadlines()
        self.key_locks.retry()

    def pump(self) -> None:
        """Collect finished workers and start what is ready, without waiting."""
        if self.starter.workers == 0 or self.closed:
            return
        self._collect()
        self._enforce_deadlines()
        self.key_locks.retry()
        self.drivers.drive()
        self._start_ready()

    def _advance_inline(self, target: list[Task] | None) -> None:
        task = None
        if target is not None:
            task = next((t for t in target if t.state in ("ready", "held")), None)
        if task is None:  # no target, or it waits for a gate: the best other work
            runnable = self.graph.in_state("ready", "held")
            task = min(runnable, key=self._entry, default=None)
        if task is None:
            if target is not None and target[-1].state != "done":
                raise RuntimeError(f"brainsmith engine stalled waiting for {target[-1].label}")
            return
        self.starter.start(task, inline=True)

    def _start_ready(self) -> None:
        while self._ready and not self._draining and len(self.running) < self.starter.workers:
            if not self.starter.fits(self._ready[0][-1]):
                break  # the next build waits for memory (core/memory_budget.py)
            task = heapq.heappop(self._ready)[-1]
            if task.state == "ready":
                self.starter.start(task, inline=False)

    # -- running workers ---------------------------------------------------------------
    def _wait_for_workers(self) -> None:
        now = time.monotonic()
        wake = [now + POLL_SECONDS]
        wake += [t.deadline for t in self.running if t.deadline is not None]
        wake += self.key_locks.wake_times()
        if self._ready and len(self.running) < self.starter.workers and not self._draining:
            if self.starter.fits(self._ready[0][-1]):
                return  # more to start right away
        timeout = max(0.0, min(wake) - now)
        waitables = [w for t in self.running if t.worker for w in t.worker.waitables()]
        if waitables:
            wait(waitables, timeout=timeout)
        else:
            time.sleep(timeout)

    def _collect(self) -> None:
        for task in list(self.running):
            assert task.worker is not None
            if task.worker.poll():
                self.running.remove(task)
                if task.worker.result is not None and not task.worker.reap():
                    self._exiting.append(task.worker)  # answered: its exit is not waited for
                self.complete(task, task.worker.result)
        self._exiting = [w for w in self._exiting if not w.reap()]

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for task in list(self.running):
            if task.deadline is not None and now > task.deadline and task.worker is not None:
                task.worker.kill("timeout")
                self.running.remove(task)
                self.complete(task, None)

    def complete(self, task: Task, result: dict[str, Any] | None) -> None:
        """A build ended (with ``result``, or its worker without one): finish the task."""
        spec = task.spec
        assert spec is not None and task.key is not None
        try:
            if result is None:
                result = results.dead_worker_result(task, spec, self.cache)
            outcome = results.outcome_of(task, result, self.cache, self.run_id)
        finally:
            self.starter.release(task)
        ours = not outcome.elsewhere  # a cached entry verified now may be another's build
        if outcome.status == "built" and ours:
            self.durations.record(outcome.step_seconds, task.segment.model().name)
            self.starter.memory.record(step_names(task.segment), result)
        if self.answers.remote is not None and outcome.status in ("built", "failed") and ours:
            self.answers.remote.built(task.key, outcome.status)
        elif self.answers.remote is not None and result.get("status") == "verified":
            self.answers.remote.built(task.key, "verified")  # its new verification record
        self.finish(task, outcome)

    # -- the end -----------------------------------------------------------------------
    def shutdown(self, *, cancel: bool = True) -> None:
        """End the run: kill the workers (``cancel``), or let running builds finish
        first (their results may be what another process waits for); nothing queued
        starts any more, and nothing is recorded for what was stopped."""
        self._draining = True
        try:
            while self.running and not cancel:
                interrupts.raise_pending()
                self._wait_for_workers()
                self._collect()
                self._enforce_deadlines()
        finally:
            for task in list(self.running):
                assert task.worker is not None
                task.worker.kill("cancel")
                self.running.remove(task)
                self.complete(task, None)
            for task in self.graph.in_state(*PENDING):
                states.move(task, "finished")
                task.outcome = SegmentOutcome(
                    task.label, task.key, "cancelled", error="the run stopped first"
                )
            for worker in self._exiting:
                worker.reap(timeout=5.0)
            self._exiting.clear()
            self._ready.clear()
            self.key_locks.held.clear()
            self.closed = True
            if self.built:
                self.durations.save()
                self.starter.memory.save()
            self.drivers.close()
            if self.answers.remote is not None:  # the uploads still pending
                self.answers.remote.close()
            self.starter.launcher.close()
