"""The task graph: one task per segment a submitted design needs, keyed like its cache entry.

A task's ``state`` follows Dask's scheduler: ``new`` (known, not needed yet) ->
``waiting`` (for its parent) -> ``ready`` (queued) -> ``running`` (on a worker) ->
``done`` (it has an outcome), plus ``held`` while another process (an xdist worker,
another session) holds the key's lock, and ``parked`` while a Pareto gate decides.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from ..keys import segment_key
from ..tree import Segment

if TYPE_CHECKING:
    from ..outcomes import SegmentOutcome
    from ..workers import Worker

#: Every state a task can be in, in the order a build goes through them.
STATES = ("new", "waiting", "ready", "held", "parked", "running", "done")
#: The states of a task that is needed and not done yet.
PENDING = ("waiting", "ready", "held", "parked")


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
        self.state = "new"  # one of STATES
        self.outcome: SegmentOutcome | None = None
        self.priority = 0.0
        self.estimate = 0.0
        self.order = order
        self.retry_at = 0.0
        self.held_since: float | None = None
        self.worker: Worker | None = None
        self.lock: Any = None
        self.spec: Any = None  # the BuildSpec of its running build
        self.deadline: float | None = None
        self.started = 0.0
        #: the submitted designs (their leaf tasks) that need this segment
        self.designs: set[Task] = set()

    @property
    def label(self) -> str:
        return self.slot[0]


class TaskGraph:
    """The tasks of one engine, found by segment: equal segments of two trees (a Python
    test's tree of a blueprint and the YAML items' tree) share one task."""

    def __init__(self) -> None:
        self.tasks: dict[tuple[str, str | None], Task] = {}
        self._by_segment: dict[Segment, Task] = {}
        self._keys: dict[Segment, tuple[str | None, dict[str, Any] | None]] = {}
        self._order = itertools.count()

    def key(self, segment: Segment) -> tuple[str | None, dict[str, Any] | None]:
        """The segment's cache key and its components (a segment without steps has its
        parent's)."""
        if segment in self._keys:
            return self._keys[segment]
        if not segment.steps:
            value = self.key(segment.parent) if segment.parent else (None, None)
        else:
            parent_key = self.key(segment.parent)[0] if segment.parent else None
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

    def task(self, segment: Segment) -> Task:
        """The segment's task, made (with its ancestors') on first use."""
        task = self._by_segment.get(segment)
        if task is not None:
            return task
        parent = self.task(segment.parent) if segment.parent is not None else None
        key, components = self.key(segment)
        slot = (segment_label(segment), key)
        task = self.tasks.get(slot)
        if task is None:
            task = Task(slot, segment, key, components, parent, next(self._order))
            self.tasks[slot] = task
            if parent is not None:
                parent.children.append(task)
        self._by_segment[segment] = task
        return task

    def find(self, segment: Segment) -> Task | None:
        """The segment's task if it was ever asked for."""
        return self._by_segment.get(segment)

    def needed(self) -> list[Task]:
        """The tasks some submitted design needs."""
        return [t for t in self.tasks.values() if t.state != "new"]

    def in_state(self, *states: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.state in states]


def segment_label(segment: Segment) -> str:
    """The segment as a readable path, e.g. ``tfc.blueprint.yaml::first..last::MVAU[rtl]``."""
    return "::".join([segment.tree.space.path.name, *segment.nodeid_parts()])


def tree_order(task: Task) -> tuple[str, int]:
    """The same order in every process: blueprint, then place in its tree."""
    return (str(task.segment.tree.space.path), task.segment.index)


def short(design: Task) -> str:
    """A design as its choices read, e.g. ``MVAU=rtl, target_fps=400000``."""
    choices = [c.describe() for c in design.segment.choices()]
    return ", ".join(f"{k}={v}" for k, v in choices) or design.label
