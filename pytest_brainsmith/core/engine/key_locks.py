"""Tasks that wait, without a worker, for a key someone else is building.

Another process (an xdist worker, another session) holds the key's lock: the task is
``held`` and tries the lock again every ``POLL_SECONDS``, up to its timeout. Another
task of this engine builds the same key (a twin: a choice that made the same model):
the task waits for that one and then reuses what it built, without a lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..cache import SegmentCache
from ..outcomes import SegmentOutcome
from . import results, states
from .limits import Limits
from .tasks import Task

#: How often held tasks are tried again and running workers looked at, at most.
POLL_SECONDS = 0.25


class KeyLocks:
    """The keys this engine builds, the twins waiting for them, and the tasks held by
    another process's lock."""

    def __init__(
        self,
        cache: SegmentCache,
        limits: Limits,
        *,
        requeue: Callable[[Task], None],
        finish: Callable[[Task, SegmentOutcome], None],
    ) -> None:
        self.cache = cache
        self.limits = limits
        self._requeue = requeue  # back in the ready queue
        self._finish = finish
        self.held: list[Task] = []
        #: keys this engine builds now, and the twins that wait for them (same key)
        self.building: dict[str, Task] = {}
        self.twins: dict[str, list[Task]] = {}
        self.waited = 0.0  # seconds tasks were held by another process's build

    # -- twins: the same key in this engine ----------------------------------------------
    def wait_for_twin(self, task: Task) -> bool:
        """If another task of this engine builds ``task``'s key, ``task`` waits for it."""
        assert task.key is not None
        builder = self.building.get(task.key)
        if builder is None or builder is task:
            return False
        self.unhold(task)
        states.move(task, "twin-building")
        self.twins.setdefault(task.key, []).append(task)
        return True

    def claim(self, task: Task) -> None:
        """``task`` builds its key now."""
        assert task.key is not None
        self.building[task.key] = task

    def disclaim(self, task: Task) -> None:
        if task.key is not None and self.building.get(task.key) is task:
            del self.building[task.key]

    def twin_done(self, task: Task) -> None:
        """``task`` is done: its twins reuse (or retry) what it did."""
        if task.key is not None and self.building.get(task.key) in (task, None):
            for twin in self.twins.pop(task.key, []):
                if twin.state == "held":
                    states.move(twin, "twin-done")
                    self._requeue(twin)

    # -- held by another process -----------------------------------------------------------
    def hold(self, task: Task) -> None:
        """Another process builds this key: try again shortly, without a worker."""
        now = time.monotonic()
        if task.held_since is None:
            task.held_since = now
        states.move(task, "lock-busy")
        task.retry_at = now + POLL_SECONDS
        if task not in self.held:
            self.held.append(task)

    def unhold(self, task: Task) -> None:
        if task.held_since is not None:
            self.waited += time.monotonic() - task.held_since
            task.held_since = None
        if task in self.held:
            self.held.remove(task)

    def retry(self) -> None:
        """Held tasks whose time came go back in the ready queue; one held past its
        timeout ends with an error naming who holds the lock."""
        now = time.monotonic()
        for task in list(self.held):
            if task.retry_at > now:
                continue
            timeout = self.limits.segment_timeout(task.segment)
            if timeout and task.held_since is not None and now - task.held_since > timeout:
                self.unhold(task)
                self._finish(
                    task,
                    results.error(
                        task,
                        f"waited {timeout:g} s (its timeout) for another process building "
                        f"it; {results.holder(self.cache, task.key)}",
                        kind="timeout",
                    ),
                )
                continue
            self.held.remove(task)
            states.move(task, "retry")
            self._requeue(task)

    def wake_times(self) -> list[float]:
        """When held tasks are to be tried again."""
        return [t.retry_at for t in self.held]
