"""The gates' bookkeeping: which designs are stopped, which gate segments are parked.

``core/gates.py`` says what the gates mean (a miss, "dominated", "most promising");
this module applies them to the engine's tasks as estimates arrive:

- the expect gate: when a segment that wrote FINN's estimate reports is done, every
  design below it that already misses an ``expect:`` bound is stopped;
- a blueprint's Pareto gate parks the segments that start at ``explore.before``
  (state ``parked``) until every competing design has its estimates, then stops the
  dominated ones;
- ``explore.order`` puts the most promising designs' work first (``promise``);
- after the time budget (``--brainsmith-budget``) no new segment starts.

A segment whose designs are all stopped is ``pruned``, never built; one shared with a
design still going is built as usual.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ..blueprint import ExploreSettings
from ..expectations import for_design
from ..gates import (
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
from ..outcomes import SegmentOutcome
from ..tree import trial_of
from .limits import Durations
from .results import Estimates
from .tasks import Task, TaskGraph, short, tree_order


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


class Gating:
    """The designs the gates stopped, and why; what each design is known to estimate."""

    def __init__(
        self,
        graph: TaskGraph,
        estimates: Estimates,
        durations: Durations,
        budget: float | None = None,
    ) -> None:
        self.graph = graph
        self.estimates = estimates
        self.durations = durations
        #: seconds after which no new segment starts (--brainsmith-budget)
        self.budget = budget
        self._deadline = time.monotonic() + budget if budget else None
        self.stopped: dict[Task, Stop] = {}  # designs a gate stopped
        self.known: dict[Task, dict[str, Any]] = {}  # designs' estimates, once known
        self._pareto: dict[Path, ParetoGate] = {}  # per blueprint
        self._settles: dict[Task, list[ParetoGate]] = {}  # pre task -> gates waiting on it

    # -- the Pareto gate ---------------------------------------------------------------
    def compete(self, tasks: list[Task]) -> None:
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

    def gate_of(self, task: Task) -> ParetoGate | None:
        """The undecided Pareto gate this task is a gate segment of, if any."""
        settings = task.segment.tree.space.explore
        if settings is None or not settings.pareto or task.parent is None:
            return None
        if task.segment.start != settings.before_slot:
            return None
        gate = self._pareto.get(task.segment.tree.space.path)
        return gate if gate is not None and not gate.decided else None

    def undecided(self) -> list[ParetoGate]:
        """The gates that can decide now: every competitor already has its estimates."""
        return [
            g for g in self._pareto.values() if not g.decided and not g.pending and g.competitors
        ]

    def settled_by(self, task: Task) -> list[ParetoGate]:
        """The gates that were waiting for ``task`` and can now decide."""
        ready = []
        for gate in self._settles.pop(task, ()):
            gate.pending.discard(task)
            if not gate.pending and not gate.decided:
                ready.append(gate)
        return ready

    def decide(self, gate: ParetoGate) -> list[Task]:
        """Every competitor has its estimates (or is out): stop the dominated designs;
        return the parked gate segments, to go on (or be pruned)."""
        gate.decided = True
        metrics = gate.settings.pareto
        entrants: list[tuple[Task, dict[str, Any]]] = []
        for design in sorted(gate.competitors, key=tree_order):
            pre = gate.competitors[design]
            if design in self.stopped or pre.outcome is None or not pre.outcome.ok:
                continue  # failed, or missed a bound: out of the competition
            estimates = self.known.get(design)
            if comparable(estimates, metrics):
                assert estimates is not None
                entrants.append((design, estimates))
        found = dict(entrants)
        before = gate.settings.before or "?"
        for design, by in dominated(entrants, metrics).items():
            reason = dominance_reason(metrics, found[design], found[by], short(by), before)
            self.stopped[design] = Stop(PARETO, reason)
        parked, gate.parked = gate.parked, []
        return parked

    # -- the expect gate ---------------------------------------------------------------
    def check_estimates(self, task: Task, entry: str) -> None:
        """The expect gate: this segment wrote estimate reports, so every design below
        it that still goes on is held to its bounds now; one that misses a bound is
        stopped before its next step."""
        estimates = self.estimates.of_entry(entry)
        if estimates is None:
            return
        space = task.segment.tree.space
        for design in sorted(task.designs, key=tree_order):
            if design in self.stopped:
                continue
            self.known[design] = estimates
            below = self._below(design, task)
            if not below:
                continue  # the design ends here: judged as every design is
            choices = dict(c.describe() for c in design.segment.choices())
            missed = misses(for_design(space.expect, choices), estimates)
            if missed:
                text = "; ".join(miss_text(e, estimates[e.metric]) for e in missed)
                self.stopped[design] = Stop(
                    EXPECT, f"{text} on estimates; stopped before {below[0].segment.steps[0].name}"
                )

    def _below(self, design: Task, task: Task) -> list[Task]:
        """The tasks with steps on the design's path below ``task``."""
        chain = [self.graph.task(s) for s in design.segment.chain()]
        return [t for t in chain[chain.index(task) + 1 :] if t.segment.steps]

    # -- stopped work ------------------------------------------------------------------
    def all_stopped(self, task: Task) -> Stop | None:
        """Why nobody needs the task any more: every design that needs it is stopped."""
        if task.designs and all(d in self.stopped for d in task.designs):
            return self.stopped[min(task.designs, key=tree_order)]
        return None

    def pruned(self, task: Task, stop: Stop) -> SegmentOutcome:
        return SegmentOutcome(
            task.label,
            task.key,
            "pruned",
            error=stop.reason,
            kind=stop.gate,
            saved_seconds=round(self.durations.of(task.segment), 3),
        )

    # -- best first --------------------------------------------------------------------
    def promise(self, task: Task) -> tuple[float, ...]:
        """Best first (``explore.order``): work whose designs have no estimates yet
        comes first (estimates are what tell the promising designs apart), then the
        work of the most promising design below; without an order, none of this."""
        settings = task.segment.tree.space.explore
        if settings is None or settings.order is None:
            return (0.0, 0.0, 0.0)
        known = [d for d in task.designs if d in self.known and d not in self.stopped]
        if not known:
            return (0.0, 0.0, 0.0)
        order, pareto = settings.order, settings.pareto
        best = min(order_score(self.known[d], order, pareto, partial(self._rank, d)) for d in known)
        return (1.0, *best)

    def _rank(self, design: Task) -> int:
        """How many designs of its blueprint with estimates dominate this one."""
        space = design.segment.tree.space
        metrics = space.explore.pareto if space.explore else ()
        mine = self.known.get(design)
        if not metrics or not comparable(mine, metrics):
            return 0
        assert mine is not None
        return sum(
            1
            for other, theirs in self.known.items()
            if other.segment.tree.space.path == space.path
            and other not in self.stopped
            and comparable(theirs, metrics)
            and dominates(theirs, mine, metrics)
        )

    # -- the time budget ---------------------------------------------------------------
    def out_of_time(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline

    def over_budget(self, task: Task) -> SegmentOutcome:
        return SegmentOutcome(
            task.label,
            task.key,
            "cancelled",
            error=f"the time budget ({_seconds(self.budget)}, --brainsmith-budget) ran out "
            "before it started; a later run continues from the cache",
            kind=BUDGET,
            saved_seconds=round(self.durations.of(task.segment), 3),
        )


def _seconds(value: float | None) -> str:
    if value is None:
        return "none"
    if value >= 3600:
        return f"{value / 3600:g} h"
    if value >= 60:
        return f"{value / 60:g} min"
    return f"{value:g} s"
