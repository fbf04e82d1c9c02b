"""The scheduler: the turn loop that moves tasks from waiting to done.

A task waits for its parent, is then queued with the longest remaining work first (its
own expected duration plus the longest chain below it, ``limits.Durations``), and runs
on a worker (``Launcher``: a forked process here, a Dask task on a cluster) when one is
free. Before it builds, the cache is asked (``results.CachedAnswers``); while another
process holds the key's lock the task is ``held`` and tried again shortly, without
taking a worker. Gates (``gating.py``) may stop a design's work at any turn.

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

import contextlib
import heapq
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from filelock import Timeout as LockTimeout

from .. import interrupts, toolchain
from ..build_spec import BuildSpec
from ..builder import build_segment
from ..cache import CacheError, SegmentCache
from ..memory_budget import MemoryBudget
from ..outcomes import SegmentOutcome
from ..tree import Segment
from ..verify.plan import plan_for
from ..worker_pool import WorkerPool
from ..workers import Worker
from . import results
from .gating import Gating
from .limits import Durations, Limits, step_names
from .tasks import PENDING, Task, TaskGraph

#: How often held tasks are tried again and running workers looked at, at most.
POLL_SECONDS = 0.25


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


class Scheduler:
    """Runs the task graph's needed tasks on the launcher's workers, through the cache."""

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
        self.launcher = launcher
        self.workers = workers
        self.run_id = run_id
        self.keep_step_models = keep_step_models
        self.events = events
        #: which builds fit in memory together, by their recorded peaks (local workers)
        self.memory = MemoryBudget(cache.base, max_memory=limits.max_memory)
        self._ready: list[tuple[tuple[float, ...], float, int, Task]] = []
        self._held: list[Task] = []
        #: keys this engine builds now, and the twins that wait for them (same key)
        self._building: dict[str, Task] = {}
        self._twins: dict[str, list[Task]] = {}
        self.running: list[Task] = []
        self._exiting: list[Worker] = []  # workers that answered and are still exiting
        self._toolchain_error: str | None = None
        self._prepared = False
        self._drivers: list[Driver] = []
        self._driving = False
        self._draining = False
        self.closed = False
        self.phase = ""  # what the engine itself is doing, for the status line
        #: what this engine built (or failed to build) in this run
        self.built: list[SegmentOutcome] = []
        self.waited = 0.0  # seconds tasks were held by another process's build
        self.launched = 0  # builds started on workers
        self._shared = 0  # tasks whose step functions a worker pool was given

    # -- submitting ------------------------------------------------------------------
    def submit(self, chains: list[list[Task]]) -> None:
        """Schedule these designs' tasks (each chain root first); work starts as the
        caller waits."""
        new: list[Task] = []
        for tasks in chains:
            for task in tasks:
                task.designs.add(tasks[-1])
                if task.state == "new":
                    task.state = "waiting"
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
                self._make_ready(task)
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

    def _make_ready(self, task: Task) -> None:
        parent = task.parent
        if parent is not None and parent.outcome is not None and not parent.outcome.ok:
            cause = parent.outcome.root_cause
            self.finish(task, SegmentOutcome(task.label, None, "blocked", cause=cause))
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
            task.state = "parked"
            gate.parked.append(task)
            return
        if not task.segment.steps:
            self.finish(
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
        remote = self.answers.remote
        if remote is not None and not self.answers.rebuild and task.parent is not None:
            assert task.key is not None
            remote.prefetch([task.key])  # its download starts while it waits for a worker
        task.state = "ready"
        self._push(task)

    def _unpark(self, parked: list[Task]) -> None:
        for task in parked:
            task.state = "waiting"
            self._make_ready(task)

    def finish(self, task: Task, outcome: SegmentOutcome) -> None:
        """The task is done with ``outcome``: gates learn its estimates, its children
        may start."""
        task.outcome = outcome
        task.state = "done"
        if outcome.status in ("built", "failed") and not outcome.elsewhere:
            self.built.append(outcome)
            if self.events is not None:
                self.events.segment_finish(task.segment, outcome)
        if outcome.ok and outcome.entry is not None and task.segment.steps:
            self.gating.check_estimates(task, outcome.entry)
        for gate in self.gating.settled_by(task):
            if not gate.decided:
                self._unpark(self.gating.decide(gate))
        if task.key is not None and self._building.get(task.key) in (task, None):
            for twin in self._twins.pop(task.key, []):  # they reuse (or retry) what it did
                if twin.state == "held":
                    twin.state = "ready"
                    self._push(twin)
        for child in task.children:
            if child.state == "waiting":
                self._make_ready(child)

    # -- drivers: work that asks for more work (core/folding_search.py) ----------------
    def add_driver(self, driver: Driver) -> None:
        if driver not in self._drivers:
            self._drivers.append(driver)

    def drive(self) -> None:
        if self._driving or self.closed:
            return
        self._driving = True
        try:
            for driver in list(self._drivers):
                driver.drive()
        finally:
            self._driving = False

    # -- one turn --------------------------------------------------------------------
    def advance(self, target: list[Task] | None) -> None:
        """One turn: start what is ready, wait for a worker, collect what ended."""
        interrupts.raise_pending()  # a Ctrl-C or SIGTERM whose first raise was swallowed
        self.drive()
        if self.workers == 0:
            self._advance_inline(target)
            return
        self._start_ready()
        if not (self.running or self._held or self._ready):
            if target is not None and target[-1].state != "done":
                raise RuntimeError(f"brainsmith engine stalled waiting for {target[-1].label}")
            return
        self._wait_for_workers()
        self._collect()
        self._enforce_deadlines()
        self._retry_held()

    def pump(self) -> None:
        """Collect finished workers and start what is ready, without waiting."""
        if self.workers == 0 or self.closed:
            return
        self._collect()
        self._enforce_deadlines()
        self._retry_held()
        self.drive()
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
        self._start(task, inline=True)

    def _fits(self, task: Task) -> bool:
        """The task's build fits in memory beside the running ones (always on a cluster,
        whose workers have memory of their own)."""
        if not self.local:
            return True
        running = [step_names(t.segment) for t in self.running]
        return self.memory.admits(step_names(task.segment), running)

    def slots(self, cores: int) -> int:
        """How many builds can run at once: ``cores``, or as many as fit in memory."""
        return self.memory.workers(cores) if self.local else cores

    @property
    def local(self) -> bool:
        """Builds run in processes forked here (fresh or pooled), sharing this memory."""
        return self.launcher is Worker or isinstance(self.launcher, WorkerPool)

    @property
    def toolchain_imports(self) -> int:
        """Compiler imports outside this process (the worker pool's fork server)."""
        return self.launcher.imports if isinstance(self.launcher, WorkerPool) else 0

    @property
    def processes(self) -> int:
        """Worker processes that built (one per build)."""
        if isinstance(self.launcher, WorkerPool):
            return self.launcher.started
        return self.launched

    def _start_ready(self) -> None:
        while self._ready and not self._draining and len(self.running) < self.workers:
            if not self._fits(self._ready[0][-1]):
                break  # the next build waits for memory (core/memory_budget.py)
            task = heapq.heappop(self._ready)[-1]
            if task.state == "ready":
                self._start(task, inline=False)

    def _start(self, task: Task, *, inline: bool) -> None:
        try:
            self._start_or_reuse(task, inline=inline)
        except CacheError as exc:  # the cache cannot be read or written: this task's error
            self._unhold(task)
            if task.state != "done":
                self.finish(task, results.error(task, str(exc), kind="cache"))

    def _start_or_reuse(self, task: Task, *, inline: bool) -> None:
        found = self.answers.lookup(task)
        if found is not None:
            self.finish(task, found)
            return
        assert task.key is not None
        builder = self._building.get(task.key)
        if builder is not None and builder is not task:  # a twin builds it: wait for it
            self._unhold(task)
            task.state = "held"
            self._twins.setdefault(task.key, []).append(task)
            return
        if self.gating.out_of_time():  # what is cached is still reused: it costs nothing
            self._unhold(task)
            self.finish(task, self.gating.over_budget(task))
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
            self.finish(
                task, results.error(task, f"cannot lock {task.key} in {self.cache.root}: {exc}")
            )
            return
        self._unhold(task)
        self._building[task.key] = task
        try:
            found = self.answers.lookup(task)  # another process may have built it meanwhile
            if found is None:
                found = self.answers.fetch(task)
            if found is None and self._input_damaged(task):
                self._building.pop(task.key, None)
                lock.release()
                return
            if found is None:
                if self.cache.failure(task.key) is not None:
                    self.cache.forget_failure(task.key)
                spec = self._spec(task)
                spec.isolation = "inline" if inline else "process"
        except BaseException:
            self._building.pop(task.key, None)
            lock.release()
            raise
        if found is not None:
            lock.release()
            self.finish(task, found)
            self._building.pop(task.key, None)
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
            if task not in self.running:
                self._release(task)
            raise
        self._complete(task, result)

    def _launch(self, task: Task, spec: BuildSpec) -> None:
        """Start the task's build on a worker and register it as running."""
        remote = getattr(self.launcher, "remote", False)
        # the lock files a forked process would inherit (this build's too: a pooled
        # process outlives it); closing them there never releases them here
        held = tuple(fd for t in (*self.running, task) if (fd := _lock_fd(t.lock)) is not None)
        if isinstance(self.launcher, WorkerPool) and len(self.graph.tasks) != self._shared:
            # every step function known so far, before a process (or the fork server) is forked
            self._shared = len(self.graph.tasks)
            steps = (s for t in self.graph.tasks.values() for s in t.segment.steps)
            self.launcher.share([build_segment, *(s.func for s in steps)])
        if isinstance(self.launcher, WorkerPool):
            self.launcher.spares = max(1, self.workers)  # forked ahead, one per build slot
        error = None if remote else self._prepare_toolchain(held)
        if error is not None:
            self._release(task)
            self.finish(task, results.error(task, error))
            return
        timeout = spec.limits.get("timeout")
        where: dict[str, Any] = {}
        if remote:
            where = {
                "timeout": timeout,
                "priority": task.priority,
                "resources": self.limits.segment_resources(task.segment),
            }
        # a worker started is one shutdown kills: Ctrl-C waits until it is registered
        # (not for a remote launcher, whose calls may wait on the network; a Dask future
        # left unregistered ends with the client)
        with contextlib.nullcontext() if remote else interrupts.deferred():
            task.worker = self.launcher(
                partial(build_segment, spec, self.cache),
                output=spec.staged / "worker.log",
                max_memory=int(spec.limits["max_memory"]) if "max_memory" in spec.limits else None,
                close_fds=held,
                **where,
            )
            self.launched += 1
            task.state = "running"
            task.started = time.monotonic()
            # a remote launcher enforces the timeout where the build runs
            task.deadline = task.started + timeout if timeout and not remote else None
            self.running.append(task)
        interrupts.raise_pending()  # what came meanwhile

    def _input_damaged(self, task: Task) -> bool:
        """Check the checkpoint this build resumes from right before using it. If it cannot
        be had (damaged: the entry was moved aside; left on a remote cache that lost it or
        stopped answering), the segment that made it is built again first and this one
        waits, as does every other child asking meanwhile: a child is never built from,
        nor charged for, a corrupt or missing input. The rebuilt segment keeps its earlier
        outcome until it is done again, so that designs already answered keep theirs."""
        owner = task.parent
        while owner is not None and not owner.segment.steps:  # passthroughs share a key
            owner = owner.parent
        if owner is None or owner.key is None:
            return False
        rebuild = owner.state == "done"
        if rebuild:
            if owner.outcome is None or not owner.outcome.entry:
                return False
            if self.cache.verify_file(owner.key, toolchain.current().output_model) is None:
                return False
        node: Task | None = task
        while node is not None and node is not owner:  # the task and passthroughs above it
            node.state = "waiting"
            node = node.parent
        if rebuild:  # its children waiting now start when it is done
            owner.state = "waiting"
            self._make_ready(owner)
        return True

    def _prepare_toolchain(self, held: tuple[int, ...] = ()) -> str | None:
        """The compiler (FINN) imported once before the first fork: in the pool's fork
        server (``fork_server.py``), else in this process. Why it cannot be, if so."""
        if self._toolchain_error is None and not self._prepared:
            compiler = toolchain.current()
            self.phase = f"importing {compiler.name}"
            try:
                if isinstance(self.launcher, WorkerPool):
                    self._toolchain_error = self.launcher.prepare(held)
                else:
                    compiler.prepare()
            except toolchain.ToolchainUnavailable as exc:
                self._toolchain_error = str(exc)
            finally:
                self.phase = ""
            self._prepared = self._toolchain_error is None
        return self._toolchain_error

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
            limits=self.limits.for_build(segment),
            verify=plan_for(segment, self.cache),
        )

    # -- held by another process -------------------------------------------------------
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
            timeout = self.limits.segment_timeout(task.segment)
            if timeout and task.held_since is not None and now - task.held_since > timeout:
                self._unhold(task)
                self.finish(
                    task,
                    results.error(
                        task,
                        f"waited {timeout:g} s (its timeout) for another process building "
                        f"it; {results.holder(self.cache, task.key)}",
                        kind="timeout",
                    ),
                )
                continue
            self._held.remove(task)
            task.state = "ready"
            self._push(task)

    # -- running workers ---------------------------------------------------------------
    def _wait_for_workers(self) -> None:
        now = time.monotonic()
        wake = [now + POLL_SECONDS]
        wake += [t.deadline for t in self.running if t.deadline is not None]
        wake += [t.retry_at for t in self._held]
        if self._ready and len(self.running) < self.workers and not self._draining:
            if self._fits(self._ready[0][-1]):
                return  # more to start right away
        timeout = max(0.0, min(wake) - now)
        waitables = [w for t in self.running if t.worker for w in t.worker.waitables()]
        if waitables:
            from multiprocessing.connection import wait

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
                self._complete(task, task.worker.result)
        self._exiting = [w for w in self._exiting if not w.reap()]

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for task in list(self.running):
            if task.deadline is not None and now > task.deadline and task.worker is not None:
                task.worker.kill("timeout")
                self.running.remove(task)
                self._complete(task, None)

    def _complete(self, task: Task, result: dict[str, Any] | None) -> None:
        """A build ended (with ``result``, or its worker without one): finish the task."""
        spec = task.spec
        assert spec is not None and task.key is not None
        try:
            if result is None:
                result = results.dead_worker_result(task, spec, self.cache)
            outcome = results.outcome_of(task, result, self.cache, self.run_id)
        finally:
            self._release(task)
        ours = not outcome.elsewhere  # a cached entry verified now may be another's build
        if outcome.status == "built" and ours:
            self.durations.record(outcome.step_seconds, task.segment.model().name)
            self.memory.record(step_names(task.segment), result)
        if self.answers.remote is not None and outcome.status in ("built", "failed") and ours:
            self.answers.remote.built(task.key, outcome.status)
        elif self.answers.remote is not None and result.get("status") == "verified":
            self.answers.remote.built(task.key, "verified")  # its new verification record
        self.finish(task, outcome)

    def _release(self, task: Task) -> None:
        if task.key is not None and self._building.get(task.key) is task:
            del self._building[task.key]
        if task.lock is not None:
            with contextlib.suppress(OSError):
                task.lock.release()
            task.lock = None
        if task.spec is not None:
            self.cache.discard_staging(task.spec.staged)
            with contextlib.suppress(OSError):  # a killed worker leaves its status file
                (self.cache.base / "running" / f"{task.key}.json").unlink(missing_ok=True)

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
                self._complete(task, None)
            for task in self.graph.in_state(*PENDING):
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
            if self.built:
                self.durations.save()
                self.memory.save()
            for driver in self._drivers:
                driver.close()
            if self.answers.remote is not None:  # the uploads still pending
                self.answers.remote.close()
            if isinstance(self.launcher, WorkerPool):
                self.launcher.close()


def _lock_fd(lock: Any) -> int | None:
    """The file descriptor of a held FileLock (filelock keeps it in its context)."""
    lock = getattr(lock, "_lock", lock)  # the cache's KeyLock wraps a FileLock
    context = getattr(lock, "_context", lock)
    fd = getattr(context, "lock_file_fd", None)
    return fd if isinstance(fd, int) else None
