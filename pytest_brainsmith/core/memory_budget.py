"""How many segment builds fit in this machine's memory at once.

A build forked from the engine's process shares what that process had (FINN, the
interpreter) and pays for what it allocates beyond: its *extra* peak, measured by the
worker as its peak resident set (``VmHWM``) less its resident set when it was forked.
The engine records each built segment's extra peak under the names of its steps (as it
records their durations), keeping the largest seen, in ``memory.json`` beside the
durations. Before a build starts, the builds running and this one must fit, by those
records, in the memory that was available when the engine started (less a reserve);
a build alone always starts. A step never recorded counts as the largest peak recorded
(nothing recorded yet: nothing is held back, as before any build). With
``max_memory`` (``--brainsmith-max-memory``, a blueprint's ``max_memory``) each build
is limited to that much, so a build counts as at most that.

So on MobileNet-v1 the 1.4 GB front end and its siblings are not started side by side
past what the machine holds, while the small leaves below it run on every core.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import step_history

MEMORY_FILE = "memory.json"
#: Part of the available memory kept free (page cache, the pytest process's growth).
RESERVE = 0.15


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (``MemAvailable``), within
    this process's cgroup limit if it has one; None if unknown."""
    found: int | None = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            room = int(limit) - used
            found = room if found is None else min(found, room)
    return found


def extra_peak() -> dict[str, int]:
    """In a worker, at its end: its peak resident set and what it had when forked."""
    status: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                status[name] = int(value.split()[0]) * 1024
    return status


class MemoryBudget:
    """The builds that may run at once, by their recorded peaks."""

    def __init__(
        self,
        base: Path,
        *,
        max_memory: int | None = None,
        available: int | None = None,
    ) -> None:
        self.path = base / MEMORY_FILE
        self.max_memory = max_memory
        self.peaks = step_history.read(self.path, int)
        self._new: dict[str, int] = {}
        free = available_memory() if available is None else available
        #: bytes the builds may use together; None: unknown, nothing held back
        self.usable = int(free * (1 - RESERVE)) if free else None

    def need(self, steps: Iterable[str]) -> int:
        """Bytes a build of these steps is expected to need beyond its fork."""
        known = [self.peaks[s] for s in steps if s in self.peaks]
        unknown = any(s not in self.peaks for s in steps)
        need = max([*known, max(self.peaks.values(), default=0) if unknown else 0], default=0)
        return min(need, self.max_memory) if self.max_memory else need

    def admits(self, steps: Iterable[str], running: list[Iterable[str]]) -> bool:
        """Whether a build of ``steps`` may start beside the builds ``running``."""
        if not running or self.usable is None:
            return True
        return self.need(steps) + sum(self.need(r) for r in running) <= self.usable

    def workers(self, cores: int) -> int:
        """How many builds of the largest recorded peak fit at once (at most ``cores``)."""
        need = self.need(["*"])
        if not need or self.usable is None:
            return cores
        return max(1, min(cores, self.usable // need))

    def record(self, steps: Iterable[str], result: dict[str, Any]) -> None:
        """A build's extra peak (from its worker's ``memory`` report), under each step."""
        memory = result.get("memory") or {}
        peak, start = memory.get("VmHWM"), memory.get("start_rss")
        if not isinstance(peak, int) or not isinstance(start, int):
            return
        extra = max(0, peak - start)
        for step in steps:
            self._new[step] = max(extra, self._new.get(step, 0))
            self.peaks[step] = max(extra, self.peaks.get(step, 0))

    def save(self) -> None:
        if not self._new:
            return
        step_history.merge(self.path, int, self._new, max)  # the largest peak seen
