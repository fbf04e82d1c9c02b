"""Starting a ready task: reuse what the cache has, or lock its key and launch its build.

The cache is asked first (``results.CachedAnswers``: this cache, then the remote one);
a key another task of this engine builds waits for it, one another process holds is
``held`` (``key_locks.py``); else the key is locked, asked again (it may have been built
meanwhile), and the build's spec handed to a worker (``Launcher``: a forked process
here, a Dask task on a cluster) or built inline.
"""

from __future__ import annotations

import contextlib
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
from ..launchers import Launcher
from ..memory_budget import MemoryBudget
from ..outcomes import SegmentOutcome
from ..tree import Segment
from ..verify.plan import plan_for
from . import results, states
from .gating import Gating
from .key_locks import KeyLocks
from .limits import Limits, step_names
from .tasks import Task, TaskGraph
from .toolchain_prep import ToolchainPrep


class EngineEvents(Protocol):
    """Told around every segment this engine builds (not when reused)."""

    def segment_start(self, segment: Segment, config: dict[str, Any], build_dir: str) -> None: ...

    def segment_finish(self, segment: Segment, result: SegmentOutcome) -> None: ...


class TaskLoop(Protocol):
    """What the starter tells the scheduler (``scheduler.Scheduler``)."""

    def finish(self, task: Task, outcome: SegmentOutcome) -> None: ...

    def complete(self, task: Task, result: dict[str, Any] | None) -> None: ...

    def make_ready(self, task: Task) -> None: ...


class Starter:
    """Starts ready tasks on the launcher's workers (or inline), through the cache; knows
    what runs and whether one more build fits in memory beside it."""

    def __init__(
        self,
        cache: SegmentCache,
        graph: TaskGraph,
        gating: Gating,
        limits: Limits,
        answers: results.CachedAnswers,
        key_locks: KeyLocks,
        *,
        loop: TaskLoop,
        launcher: Launcher,
        workers: int,
        run_id: str = "",
        keep_step_models: bool = False,
        events: EngineEvents | None = None,
    ) -> None:
        self.cache = cache
        self.graph = graph
        self.gating = gating
        self.limits = limits
        self.answers = answers
        self.key_locks = key_locks
        self.loop = loop
        self.finish: Callable[[Task, SegmentOutcome], None] = loop.finish
        #: starts one segment's build somewhere (settable: a cluster attached)
        self.launcher = launcher
        self.workers = workers  # builds at once
        self.run_id = run_id
        self.keep_step_models = keep_step_models
        self.events = events
        #: which builds fit in memory together, by their recorded peaks (local workers)
        self.memory = MemoryBudget(cache.base, max_memory=limits.max_memory)
        self.prep = ToolchainPrep()
        self.running: list[Task] = []
        self.launched = 0  # builds started on workers
        self._shared = 0  # tasks whose step functions a worker pool was given

    def start(self, task: Task, *, inline: bool) -> None:
        """Reuse, wait for or build the ready (or held) task; ``inline``: build it here."""
        try:
            if not self._reused_or_waits(task):
                lock = self._lock(task, inline=inline)
                if lock is not None:
                    self._build(task, lock, inline=inline)
        except CacheError as exc:  # the cache cannot be read or written: this task's error
            self.key_locks.unhold(task)
            if task.state != "done":
                self.finish(task, results.error(task, str(exc), kind="cache"))

    def _reused_or_waits(self, task: Task) -> bool:
        """The cache has it, a twin builds it, or the time budget is out: nothing to start."""
        found = self.answers.lookup(task)
        if found is not None:
            self.finish(task, found)
            return True
        if self.key_locks.wait_for_twin(task):
            return True
        if self.gating.out_of_time():  # what is cached is still reused: it costs nothing
            self.key_locks.unhold(task)
            self.finish(task, self.gating.over_budget(task))
            return True
        return False

    def _lock(self, task: Task, *, inline: bool) -> Any:
        """The key's lock, held (waited for when ``inline``); None if another process
        holds it (the task is held) or it cannot be taken (the task failed)."""
        assert task.key is not None
        lock = self.cache.lock(task.key)
        try:
            if inline:
                asked = time.perf_counter()
                lock.acquire()
                self.key_locks.waited += time.perf_counter() - asked
            else:
                lock.acquire(timeout=0)
        except LockTimeout:
            self.key_locks.hold(task)
            return None
        except CacheError:
            raise
        except OSError as exc:
            self.finish(
                task, results.error(task, f"cannot lock {task.key} in {self.cache.root}: {exc}")
            )
            return None
        self.key_locks.unhold(task)
        return lock

    def _build(self, task: Task, lock: Any, *, inline: bool) -> None:
        """With the key locked: what another process built meanwhile, else the build."""
        assert task.key is not None
        self.key_locks.claim(task)
        try:
            found = self.answers.lookup(task)  # another process may have built it meanwhile
            if found is None:
                found = self.answers.fetch(task)
            if found is None and self._input_damaged(task):
                self.key_locks.disclaim(task)
                lock.release()
                return
            if found is None:
                if self.cache.failure(task.key) is not None:
                    self.cache.forget_failure(task.key)
                spec = self._spec(task)
                spec.isolation = "inline" if inline else "process"
        except BaseException:
            self.key_locks.disclaim(task)
            lock.release()
            raise
        if found is not None:
            lock.release()
            self.finish(task, found)
            self.key_locks.disclaim(task)
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
                self.release(task)
            raise
        self.loop.complete(task, result)

    def _launch(self, task: Task, spec: BuildSpec) -> None:
        """Start the task's build on a worker and register it as running."""
        remote = self.launcher.remote
        # the lock files a forked process would inherit (this build's too: a pooled
        # process outlives it); closing them there never releases them here
        held = tuple(fd for t in (*self.running, task) if (fd := _lock_fd(t.lock)) is not None)
        if len(self.graph.tasks) != self._shared:
            # every step function known so far, before a process (or the fork server) is forked
            self._shared = len(self.graph.tasks)
            steps = (s for t in self.graph.tasks.values() for s in t.segment.steps)
            self.launcher.share([build_segment, *(s.func for s in steps)])
        self.launcher.spares = max(1, self.workers)  # forked ahead, one per build slot
        error = None if remote else self._prepare_toolchain(held)
        if error is not None:
            self.release(task)
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
            states.move(task, "launched")
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
            states.move(node, "input-damaged")
            node = node.parent
        if rebuild:  # its children waiting now start when it is done
            states.move(owner, "input-damaged")
            self.loop.make_ready(owner)
        return True

    def _prepare_toolchain(self, held: tuple[int, ...] = ()) -> str | None:
        return self.prep.prepare(self.launcher, held)

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
            ancestors=_ancestor_keys(task),
        )

    def release(self, task: Task) -> None:
        """The task's build ended: its key's lock, its staging folder, its status file."""
        self.key_locks.disclaim(task)
        if task.lock is not None:
            with contextlib.suppress(OSError):
                task.lock.release()
            task.lock = None
        if task.spec is not None:
            self.cache.discard_staging(task.spec.staged)
            with contextlib.suppress(OSError):  # a killed worker leaves its status file
                (self.cache.base / "running" / f"{task.key}.json").unlink(missing_ok=True)

    # -- what runs, and what fits beside it --------------------------------------------
    def fits(self, task: Task) -> bool:
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
        return self.launcher.local

    @property
    def toolchain_imports(self) -> int:
        """Compiler imports outside this process (the worker pool's fork server)."""
        return self.launcher.imports

    @property
    def processes(self) -> int:
        """Worker processes that built (one per build)."""
        return self.launcher.started


def _ancestor_keys(task: Task) -> list[str]:
    """The cache keys of the entries above ``task``, nearest first."""
    keys: list[str] = []
    above = task.parent
    while above is not None:
        if above.key and above.key not in keys:
            keys.append(above.key)
        above = above.parent
    return keys


def _lock_fd(lock: Any) -> int | None:
    """The file descriptor of a held FileLock (filelock keeps it in its context)."""
    lock = getattr(lock, "_lock", lock)  # the cache's KeyLock wraps a FileLock
    context = getattr(lock, "_context", lock)
    fd = getattr(context, "lock_file_fd", None)
    return fd if isinstance(fd, int) else None
