"""The task graph: one task per segment a submitted design needs, keyed like its cache entry.

A task's ``state`` follows Dask's scheduler: ``new`` (known, not needed yet) ->
``waiting`` (for its parent) -> ``ready`` (queued) -> ``running`` (on a worker) ->
``done`` (it has an outcome), plus ``held`` while another process (an xdist worker,
another session) or another task of this graph (a twin: the same key under another
choice) builds its key, and ``parked`` while a Pareto gate decides.

A task is named by its place (``identity``: the model, steps and config on its path),
known before anything is built; its cache key (``key``) is known once its parent is
done, from the parent's output content (``keys.py``): tasks under two choices that
made the same model get the same key, and the cache builds it once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..keys import segment_key
from ..tree import Segment

if TYPE_CHECKING:
    from ..launchers import Worker
    from ..outcomes import SegmentOutcome

#: Every state a task can be in, in the order a build goes through them.
STATES = ("new", "waiting", "ready", "held", "parked", "running", "done")
#: The states of a task that is needed and not done yet.
PENDING = ("waiting", "ready", "held", "parked")


class Task:
    """One segment to build, keyed like its cache entry."""

    __slots__ = (
        "slot",
        "segment",
        "ident",
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
        #: the segment's name by its place (``TaskGraph.identity``), known from the start
        self.ident = slot[1]
        #: its cache key: known at once for a segment that reads the model file, else
        #: once its parent is done (``TaskGraph.resolve``); None until then
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
    test's tree of a blueprint and the YAML items' tree) share one task.

    ``stored_output(key)`` gives the digest of the output model of ``key``'s cache
    entry (None: not in the cache): how a key is known before the run reaches it."""

    def __init__(self, stored_output: Callable[[str], str | None] | None = None) -> None:
        self.tasks: dict[tuple[str, str | None], Task] = {}
        self._by_segment: dict[Segment, Task] = {}
        self._idents: dict[Segment, str | None] = {}
        self._order = itertools.count()
        self._stored_output = stored_output or (lambda key: None)

    def identity(self, segment: Segment) -> str | None:
        """The segment's name by its place: a digest of its model, and of the steps and
        config of every segment on its path (a segment without steps has its parent's).
        Never a cache key: the same work in two places has two names."""
        if segment in self._idents:
            return self._idents[segment]
        if not segment.steps:
            value = self.identity(segment.parent) if segment.parent else None
        else:
            above = self.identity(segment.parent) if segment.parent else None
            value = segment_key(
                segment.steps,
                _config(segment),
                parent_key=above,
                model=None if above else segment.model(),
            )[0]
        self._idents[segment] = value
        return value

    def content_key(
        self, segment: Segment, parent_output: str | None
    ) -> tuple[str, dict[str, Any]]:
        """The cache key of running the segment's steps on a model whose content has the
        digest ``parent_output`` (None: on the segment's model file)."""
        return segment_key(
            segment.steps,
            _config(segment),
            parent_output=parent_output,
            model=None if parent_output else segment.model(),
        )

    def resolve(self, task: Task, output_of: Callable[[SegmentOutcome], str | None]) -> None:
        """Key a task whose parent is done, by its parent's output (``output_of`` reads
        its digest from the outcome's entry). Its key stays None if the parent has no
        usable output (a failed parent: the task is blocked)."""
        segment, parent = task.segment, task.parent
        if not segment.steps:  # a passthrough: its parent's output, its parent's key
            task.key, task.components = (parent.key, parent.components) if parent else (None, None)
            return
        if owner(segment) is None:  # it reads the model file
            task.key, task.components = self.content_key(segment, None)
            return
        assert parent is not None
        outcome = parent.outcome
        digest = output_of(outcome) if outcome is not None and outcome.ok else None
        if digest is None:
            task.key, task.components = None, None
            return
        task.key, task.components = self.content_key(segment, digest)

    def key(self, segment: Segment) -> tuple[str | None, dict[str, Any] | None]:
        """The segment's cache key and its components as far as they are known: its
        task's, or from the cache's entries above it (a segment without steps has its
        parent's); (None, None) while the output it reads is not built."""
        task = self._by_segment.get(segment)
        if task is not None and task.key is not None:
            return task.key, task.components
        if not segment.steps:
            return self.key(segment.parent) if segment.parent else (None, None)
        above = owner(segment)
        if above is None:
            return self.content_key(segment, None)
        parent_key = self.key(above)[0]
        digest = self._stored_output(parent_key) if parent_key else None
        if digest is None:
            return None, None
        return self.content_key(segment, digest)

    def task(self, segment: Segment) -> Task:
        """The segment's task, made (with its ancestors') on first use."""
        task = self._by_segment.get(segment)
        if task is not None:
            return task
        parent = self.task(segment.parent) if segment.parent is not None else None
        slot = (segment_label(segment), self.identity(segment))
        task = self.tasks.get(slot)
        if task is None:
            key, components = None, None
            if owner(segment) is None and segment.steps:  # it reads the model file
                key, components = self.content_key(segment, None)
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


def owner(segment: Segment) -> Segment | None:
    """The nearest segment above with steps: whose output this one reads (None: it
    reads the model file)."""
    node = segment.parent
    while node is not None and not node.steps:
        node = node.parent
    return node


def _config(segment: Segment) -> dict[str, Any]:
    """The config a segment's key covers (its steps' part of it: ``keys.py``)."""
    config = segment.config()
    config["generate_outputs"] = segment.tree.space.generate_outputs
    return config


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
