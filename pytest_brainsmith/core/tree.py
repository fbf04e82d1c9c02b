"""DesignSpace -> execution tree.

Each variation point (the model when a blueprint names several, a branch point in
the steps, a kernel backend choice, a config sweep) becomes a level of the tree, placed right before the first step
that can observe it, so designs that differ only in a late choice share every
earlier step. A node (segment) runs the steps between two levels; a root-to-leaf
path is one design. Where a blueprint has gates (``expect:`` bounds or an ``explore:``
section), a segment also ends, without branching, right after a step that writes
estimate reports and before the Pareto gate's step: a gate can only stop a design
between two segments.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .blueprint import MODEL_CHOICE, DesignSpace
from .registry import Step
from .segment_states import STATUS_COLORS
from .toolchain import KERNEL_BACKENDS
from .toolchain import current as toolchain

_UNSAFE = re.compile(r"[^\w.+\-]")


@dataclass(frozen=True)
class Choice:
    """One alternative at a variation point."""

    kind: str  # "model" | "step" | "kernel" | "config"
    key: str  # "model" / the branch point's steps ("a|b") / kernel name / config field
    value: Any  # ModelChoice / Step or None (skip) / backend / config value
    label: (
        str  # readable, -k friendly: "model[tfc]", "streamline", "MVAU[rtl]", "target_fps[100000]"
    )

    def describe(self) -> tuple[str, Any]:
        """(name, value) as a user reads it, e.g. ("target_fps", 100000)."""
        if self.kind == "step":
            return (self.key, "skip" if self.value is None else self.value.name)
        if self.kind == "model":
            return (self.key, self.value.name)
        return (self.key, self.value)


@dataclass(frozen=True)
class Level:
    position: int  # index of the slot before which the tree branches here
    kind: str
    key: str
    choices: tuple[Choice, ...]


def value_label(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return value.stem
    if value is None:
        return "none"
    text = repr(value) if isinstance(value, float) else str(value)
    return _UNSAFE.sub("_", text) or "_"


def _unique(labels: list[str]) -> list[str]:
    if len(set(labels)) == len(labels):
        return labels
    return [f"{label}-{i}" for i, label in enumerate(labels)]


def build_levels(space: DesignSpace) -> list[Level]:
    """The variation points in tree order."""
    order: list[tuple[int, int, int, Level]] = []

    def first_reader(config_field: str) -> int:
        return next(i for i, slot in enumerate(space.slots) if slot.may_read(config_field))

    if len(space.models) > 1:  # before everything: each model is its own subtree
        labels = _unique([f"{MODEL_CHOICE}[{value_label(m.name)}]" for m in space.models])
        choices = tuple(
            Choice("model", MODEL_CHOICE, m, lb) for m, lb in zip(space.models, labels, strict=True)
        )
        order.append((0, -1, 0, Level(0, "model", MODEL_CHOICE, choices)))
    for n, kernel_choice in enumerate(space.kernels):
        if len(kernel_choice.backends) < 2:
            continue
        name = kernel_choice.kernel.name
        labels = [f"{name}[{b}]" for b in kernel_choice.backends]
        choices = tuple(
            Choice("kernel", name, b, lb)
            for b, lb in zip(kernel_choice.backends, labels, strict=True)
        )
        position = first_reader(toolchain().field_read(KERNEL_BACKENDS))
        order.append((position, 0, n, Level(position, "kernel", name, choices)))
    for n, (fname, values) in enumerate(space.sweeps.items()):
        if len(values) < 2:
            continue
        labels = _unique([f"{fname}[{value_label(v)}]" for v in values])
        choices = tuple(
            Choice("config", fname, v, lb) for v, lb in zip(values, labels, strict=True)
        )
        position = first_reader(fname)
        order.append((position, 1, n, Level(position, "config", fname, choices)))
    for index, slot in enumerate(space.slots):
        if not slot.is_branch:
            continue
        name = slot.branch_name  # a design's choices say {"minimize_bit_width": "skip"}
        labels = [s.name if s is not None else f"skip[{name}]" for s in slot.options]
        choices = tuple(
            Choice("step", name, s, lb) for s, lb in zip(slot.options, labels, strict=True)
        )
        order.append((index, 2, index, Level(index, "step", name, choices)))
    order.sort(key=lambda item: item[:3])
    return [item[3] for item in order]


class Segment:
    """A node of the execution tree: the steps run between two branch points."""

    __slots__ = (
        "tree",
        "parent",
        "choice",
        "steps",
        "children",
        "designs",
        "depth",
        "index",
        "start",
    )

    def __init__(
        self,
        tree: ExecutionTree,
        parent: Segment | None,
        choice: Choice | None,
        steps: tuple[Step, ...],
        depth: int,
        start: int = 0,
    ) -> None:
        self.tree = tree
        self.parent = parent
        self.choice = choice
        self.steps = steps
        self.children: list[Segment] = []
        self.designs = 1
        self.depth = depth
        self.index = 0
        self.start = start  # the pipeline slot where this segment begins

    @property
    def name(self) -> str:
        if self.choice is not None:
            return self.choice.label
        if not self.steps:
            return "start"
        if len(self.steps) == 1:
            return self.steps[0].name
        return f"{self.steps[0].name}..{self.steps[-1].name}"

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def chain(self) -> list[Segment]:
        """Root first, this segment last."""
        chain: list[Segment] = []
        node: Segment | None = self
        while node is not None:
            chain.append(node)
            node = node.parent
        chain.reverse()
        return chain

    def choices(self) -> list[Choice]:
        return [s.choice for s in self.chain() if s.choice is not None]

    def path_steps(self) -> list[Step]:
        """Every step from the start of the pipeline to the end of this segment."""
        return [step for segment in self.chain() for step in segment.steps]

    def model(self) -> Path:
        """The input model of this segment's designs (the one chosen on its path)."""
        for choice in reversed(self.choices()):
            if choice.kind == "model":
                return choice.value.path
        return self.tree.space.model

    def config(self) -> dict[str, Any]:
        """The FINN config in force for this segment (fixed values plus choices so far)."""
        space = self.tree.space
        config = dict(space.finn_config)
        for fname, values in space.sweeps.items():
            if len(values) == 1:
                config[fname] = values[0]
        backends = {k.kernel.name: k.backends[0] for k in space.kernels if len(k.backends) == 1}
        for choice in self.choices():
            if choice.kind == "config":
                config[choice.key] = choice.value
            elif choice.kind == "kernel":
                backends[choice.key] = choice.value
        if backends:
            config[KERNEL_BACKENDS] = dict(sorted(backends.items()))
        trial = trial_of(self)
        if trial is not None:  # a folding search's trial and the segments below it
            config["folding_config_file"] = trial.folding_file
            config["target_fps"] = None
        return config

    def walk(self) -> Iterator[Segment]:
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def leaves(self) -> Iterator[Segment]:
        return (node for node in self.walk() if node.is_leaf)

    def nodeid_parts(self) -> list[str]:
        return [s.name for s in self.chain()]

    def __repr__(self) -> str:
        return f"<Segment {'::'.join(self.nodeid_parts())} steps={[s.name for s in self.steps]}>"


class TrialSegment(Segment):
    """A folding search's trial: the pipeline from the search's start slot, below a
    prefix of the tree, built with the trial's folding as ``folding_config_file`` and no
    ``target_fps`` (FINN's own folding stays off). Where the tree cuts the pipeline
    after the start (after the estimates, for the gates), the trial is a chain of
    segments too (``trial_path``). It is not one of the prefix's children: trials are
    asked for while the run goes on."""

    __slots__ = ("number", "folding", "folding_file", "predicted")

    def __init__(
        self,
        prefix: Segment,
        number: int,
        folding: dict[str, Any],
        folding_file: Path,
        end: int | None = None,
    ) -> None:
        tree = prefix.tree
        space = tree.space
        assert space.folding is not None
        start = space.folding.start_slot
        label = f"trial-{number}"
        choice = Choice("folding", "folding", label, f"folding[{label}]")
        steps = tree._segment_steps(start, len(space.slots) if end is None else end)
        super().__init__(tree, prefix, choice, steps, prefix.depth + 1, start=start)
        # after every segment of the tree (records sort by it), in trial order
        self.index = 1_000_000_000 + prefix.index * 1_000_000 + number
        self.number = number
        self.folding = folding
        self.folding_file = folding_file
        #: what the exact search's cost model predicts of it (None: not predicted)
        self.predicted: dict[str, Any] | None = None


def trial_path(prefix: Segment, number: int, folding: dict[str, Any], path: Path) -> Segment:
    """A trial's design: its ``TrialSegment`` and, where the tree cuts the pipeline after
    the search's start, one segment per piece; returns the leaf."""
    tree = prefix.tree
    assert tree.space.folding is not None
    start, n_slots = tree.space.folding.start_slot, len(tree.space.slots)
    ends = [c for c in tree.cuts() if c > start] + [n_slots]
    node: Segment = TrialSegment(prefix, number, folding, path, end=ends[0])
    for begin, end in zip(ends, ends[1:], strict=False):
        child = Segment(tree, node, None, tree._segment_steps(begin, end), node.depth + 1, begin)
        child.index = node.index
        node = child
    return node


def trial_of(segment: Segment) -> TrialSegment | None:
    """The folding search trial a segment belongs to, if any."""
    node: Segment | None = segment
    while node is not None:
        if isinstance(node, TrialSegment):
            return node
        node = node.parent
    return None


@dataclass(frozen=True)
class TreeStats:
    designs: int
    segments: int
    steps_executed: int
    steps_naive: int

    @property
    def saving_percent(self) -> float:
        if not self.steps_naive:
            return 0.0
        return 100.0 * (1 - self.steps_executed / self.steps_naive)

    def as_dict(self) -> dict[str, Any]:
        return {
            "designs": self.designs,
            "segments": self.segments,
            "steps_executed": self.steps_executed,
            "steps_naive": self.steps_naive,
            "saving_percent": round(self.saving_percent, 1),
        }


class ExecutionTree:
    """The execution tree of one design space."""

    def __init__(self, space: DesignSpace) -> None:
        self.space = space
        self.levels = build_levels(space)
        self.root = self._build()
        self._prefixes: list[Segment] | None = None

    def _segment_steps(self, start: int, end: int) -> tuple[Step, ...]:
        steps = []
        for slot in self.space.slots[start:end]:
            step = slot.options[0]
            if step is not None:
                steps.append(step)
        return tuple(steps)

    def cuts(self) -> list[int]:
        """Where the tree ends a segment without branching, so that the engine's gates
        can stop a design there: right after each step that writes estimate reports
        (when the blueprint has bounds or an ``explore:`` section) and before the
        Pareto gate's step; and where a folding search's trials start. Positions are slot indices; none where a level already is."""
        space = self.space
        explore = getattr(space, "explore", None)
        folding = getattr(space, "folding", None)
        cuts: set[int] = set()
        if space.expect or explore:
            cuts = {
                index + 1
                for index, slot in enumerate(space.slots)
                if any(s is not None and s.estimates for s in slot.options)
            }
        if explore is not None and explore.before_slot is not None:
            cuts.add(explore.before_slot)
        if folding is not None:  # a folding search's trials branch off here
            cuts.add(folding.start_slot)
        n_slots = len(space.slots)
        taken = {level.position for level in self.levels}
        return sorted(c for c in cuts if 0 < c < n_slots and c not in taken)

    def _build(self) -> Segment:
        n_slots = len(self.space.slots)
        events: list[tuple[int, Level | None]] = [(level.position, level) for level in self.levels]
        events += [(position, None) for position in self.cuts()]  # None: a cut
        events.sort(key=lambda e: e[0])  # stable: levels keep their order
        first = events[0][0] if events else n_slots
        root = Segment(self, None, None, self._segment_steps(0, first), 0)
        frontier = [root]
        for depth, (position, level) in enumerate(events, start=1):
            end = events[depth][0] if depth < len(events) else n_slots
            if level is None:
                steps = self._segment_steps(position, end)
                next_frontier = []
                for parent in frontier:
                    child = Segment(self, parent, None, steps, depth, start=position)
                    parent.children.append(child)
                    next_frontier.append(child)
                frontier = next_frontier
                continue
            start = level.position + (1 if level.kind == "step" else 0)
            tail = self._segment_steps(start, end)
            per_choice = []
            for choice in level.choices:
                head: tuple[Step, ...] = ()
                if level.kind == "step" and choice.value is not None:
                    head = (choice.value,)
                per_choice.append((choice, head + tail))
            next_frontier = []
            for parent in frontier:
                for choice, steps in per_choice:
                    child = Segment(self, parent, choice, steps, depth, start=position)
                    parent.children.append(child)
                    next_frontier.append(child)
            frontier = next_frontier
        # designs below each node, and a stable preorder index
        for index, node in enumerate(root.walk()):
            node.index = index
        for node in reversed(list(root.walk())):
            if node.children:
                node.designs = sum(c.designs for c in node.children)
        return root

    def folding_prefixes(self) -> list[Segment]:
        """Where a folding search's trials branch off: on every path, the segment
        that ends right before the search's start slot (one search per prefix)."""
        if self._prefixes is None:
            self._prefixes = self._folding_prefixes()
        return self._prefixes

    def _folding_prefixes(self) -> list[Segment]:
        folding = getattr(self.space, "folding", None)
        if folding is None:
            return []
        start = folding.start_slot
        return [
            node
            for node in self.root.walk()
            if (node.parent is None or node.start < start)
            and node.children
            and all(c.start == start for c in node.children)
        ]

    def segments(self) -> Iterator[Segment]:
        return self.root.walk()

    def designs(self) -> Iterator[Segment]:
        return self.root.leaves()

    def stats(self) -> TreeStats:
        segments = executed = naive = 0
        for node in self.root.walk():
            segments += 1
            executed += len(node.steps)
            naive += len(node.steps) * node.designs
        return TreeStats(self.root.designs, segments, executed, naive)

    # -- exports ---------------------------------------------------------------------
    def to_dict(self, status: dict[int, str] | None = None) -> dict[str, Any]:
        def node(segment: Segment) -> dict[str, Any]:
            data: dict[str, Any] = {
                "name": segment.name,
                "steps": [s.qualified for s in segment.steps],
                "designs": segment.designs,
            }
            if segment.choice is not None:
                data["choice"] = dict([segment.choice.describe()])
            if status is not None and segment.index in status:
                data["status"] = status[segment.index]
            if segment.children:
                data["children"] = [node(c) for c in segment.children]
            return data

        return {
            "blueprint": str(self.space.path),
            "name": self.space.name,
            "stats": self.stats().as_dict(),
            "root": node(self.root),
        }

    def to_json(self, status: dict[int, str] | None = None) -> str:
        return json.dumps(self.to_dict(status), indent=2, default=str)

    def to_dot(self, status: dict[int, str] | None = None) -> str:
        return dot_from_dict(self.to_dict(status))


def build_execution_tree(space: DesignSpace) -> ExecutionTree:
    return ExecutionTree(space)


def _dot_string(lines: list[str]) -> str:
    """A quoted DOT string whose lines are joined by DOT's own newline escape."""
    escaped = [line.replace("\\", "\\\\").replace('"', '\\"') for line in lines]
    return '"' + "\\n".join(escaped) + '"'


def dot_from_dict(tree: dict[str, Any]) -> str:
    """Graphviz DOT of a tree in ``to_dict`` shape (also the shape records.py builds)."""
    lines = [
        f"digraph {_dot_string([tree['name']])} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica"];',
    ]
    counter = 0

    def visit(node: dict[str, Any], parent: int | None) -> None:
        nonlocal counter
        ident, counter = counter, counter + 1
        steps = [s.rsplit(":", 1)[-1] for s in node["steps"]] or ["(no steps)"]
        label = [node["name"], "—", *steps] if node.get("choice") else steps
        attrs = f"label={_dot_string(label)}"
        state = node.get("status")
        if state in STATUS_COLORS:
            attrs += f", fillcolor={STATUS_COLORS[state]}, tooltip={_dot_string([state])}"
        lines.append(f"  s{ident} [{attrs}];")
        if parent is not None:
            lines.append(f"  s{parent} -> s{ident} [label={_dot_string([node['name']])}];")
        for child in node.get("children", []):
            visit(child, ident)

    visit(tree["root"], None)
    lines.append("}")
    return "\n".join(lines) + "\n"
