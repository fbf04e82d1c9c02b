"""The cheapest folding at every throughput, solved exactly on a table of per-node costs.

A folding's resources are the sum of its nodes' and its throughput is the slowest
node's (FINN's estimate pipeline has no FIFOs or width converters yet). So, for a cycle
budget B (the slowest node may take B cycles per frame), the cheapest design is a
multiple-choice knapsack: each unit of choice (a node, or nodes FINN ties) takes one of
its options whose cycles are <= B, at least total cost, within the part's capacity in
LUT, BRAM_18K, URAM and DSP. Where every unit's own cheapest option fits the part
together, that choice is optimal (the cost is separable); else the knapsack is solved as
an integer program (``scipy.optimize.milp``, HiGHS, zero optimality gap). The cost is
one resource, or the largest fraction of the part a design uses (``part``); ties are
broken by the other resources (as fractions of the part), then by the least parallel
option, as FINN's ``SetFolding`` stops at the first folding that meets its target.

The front: the least cost is a non-increasing step function of the budget, so the
budgets where it steps down (the Pareto-optimal designs: none is both cheaper and
faster) are found by bisection over the budgets the options make possible, solving at
O(steps x log budgets) of them. ``fastest``: the least budget at which anything fits.

The table comes from the toolchain (``finn/cost_model.py``: FINN's own per-node
estimates, with the gaps FINN's estimates are known to have charged); nothing here
knows FINN. Needs numpy and scipy (a dependency of the folding search only).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from .parts import RESOURCES

#: the cost ``part``: the largest fraction of the part's LUT/BRAM/URAM/DSP a design uses
PART = "part"
COSTS = (*RESOURCES, PART)
#: resources of a part with no known capacity, for tie-breaking only (a scale per unit)
_SCALE = {"LUT": 100_000.0, "BRAM_18K": 1_000.0, "URAM": 100.0, "DSP": 1_000.0}
SCIPY_MISSING = (
    "the folding solver needs scipy, which is not installed: "
    "pip install 'pytest-brainsmith[search]' (or pip install scipy)"
)


@dataclass
class Design:
    """One folding the solver chose: an option per unit and what the table says of it."""

    choice: list[int]  # option index per unit, into the table's options
    max_cycles: int
    cost: dict[str, float]  # the corrected figures (what the solver minimised)
    finn: dict[str, float]  # FINN's own figures
    value: float  # the objective
    exact: bool = True  # False: the integer program hit its time limit

    def fps(self, clock_ns: float) -> float:
        return 1e9 / clock_ns / self.max_cycles


@dataclass
class Solution:
    """A solved front and how it was solved."""

    front: list[Design]  # fastest first (least max_cycles), each cheaper than the last
    fastest: Design | None
    seconds: float
    solves: int  # knapsacks solved
    programs: int  # of them, integer programs (the others: each unit's cheapest fit)
    budgets: int  # distinct budgets the options make
    notes: list[str] = field(default_factory=list)


class Problem:
    """A table of units and options, a cost, and the capacity a design must fit.

    ``table``: ``{"units": [{"nodes": [...], "options": [{"attrs", "cycles", "finn",
    "cost"}]}]}`` (``cost``/``finn``: LUT, BRAM_18K, URAM, DSP). ``capacity``: per
    resource, the most a design may use (the part's, less any ``expect:`` bound; a
    resource missing is unbounded). ``metric``: ``cost`` (the corrected figures) or
    ``finn`` (FINN's own)."""

    def __init__(
        self,
        table: dict[str, Any],
        objective: str,
        capacity: dict[str, float] | None = None,
        *,
        metric: str = "cost",
        max_cycles: int | None = None,
        time_limit: float = 60.0,
    ) -> None:
        import numpy as np

        if objective not in COSTS:
            raise ValueError(f"unknown cost {objective!r}: one of {', '.join(COSTS)}")
        self.np = np
        self.table = table
        self.objective = objective
        self.metric = metric
        self.time_limit = time_limit
        caps = capacity or {}
        self.cap = np.array([float(caps.get(r, math.inf)) for r in RESOURCES])
        if objective == PART and not np.isfinite(self.cap).any():
            raise ValueError("the cost 'part' needs a part of known capacity")
        scale = [
            self.cap[i] if math.isfinite(self.cap[i]) and self.cap[i] > 0 else _SCALE[r]
            for i, r in enumerate(RESOURCES)
        ]
        self.scale = np.array(scale)
        self.units: list[dict[str, Any]] = []  # per unit: cycles, cost, finn, index arrays
        self.infeasible: str | None = None
        for number, unit in enumerate(table["units"]):
            options = unit["options"]
            cycles = np.array([o["cycles"] for o in options], dtype=np.int64)
            cost = np.array([o[metric] for o in options], dtype=float).reshape(-1, 4)
            finn = np.array([o["finn"] for o in options], dtype=float).reshape(-1, 4)
            keep = (cost <= self.cap + 1e-9).all(axis=1)
            if max_cycles is not None:
                keep &= cycles <= max_cycles
            if not keep.any():
                self.infeasible = (
                    f"unit {number} ({', '.join(unit['nodes'])}) has no setting within "
                    "the capacity" + (" and the cycle bound" if max_cycles else "")
                )
            index = np.flatnonzero(keep)
            index = index[_pareto(cycles[index], cost[index])]
            order = np.lexsort((index, cycles[index]))  # by cycles, then table order
            index = index[order]
            self.units.append(
                {
                    "index": index,
                    "cycles": cycles[index],
                    "cost": cost[index],
                    "finn": finn[index],
                }
            )
        for unit in self.units:
            unit["key"] = self._keys(unit)
            unit["best"] = _running_best(unit["key"]) if len(unit["index"]) else unit["index"]
        self.solves = 0
        self.programs = 0
        self.notes: list[str] = []
        self._cache: dict[int, Design | None] = {}

    # -- what the sweep needs ---------------------------------------------------------
    def budgets(self) -> list[int]:
        """The budgets where a design can change: every option's cycles from the least
        budget every unit can meet upwards."""
        if self.infeasible is not None:
            return []
        low = max(int(u["cycles"][0]) for u in self.units) if self.units else 0
        values = sorted({int(c) for u in self.units for c in u["cycles"] if c >= low})
        return values or [low]

    def _keys(self, unit: dict[str, Any]) -> Any:
        """Per option: (objective, tie-break by the other resources, -cycles)."""
        np = self.np
        cost = unit["cost"]
        fractions = cost / self.scale if len(cost) else cost
        if self.objective == PART:
            primary = fractions.max(axis=1) if len(cost) else np.zeros(0)
        else:
            primary = cost[:, RESOURCES.index(self.objective)]
        secondary = fractions.sum(axis=1) if len(cost) else np.zeros(0)
        return np.stack([primary, secondary, -unit["cycles"].astype(float)], axis=1)

    def solve(self, budget: int) -> Design | None:
        """The cheapest design whose every unit takes at most ``budget`` cycles, within
        the capacity (None: none fits)."""
        if budget in self._cache:
            return self._cache[budget]
        np = self.np
        self.solves += 1
        counts = [int(np.searchsorted(u["cycles"], budget, side="right")) for u in self.units]
        if self.infeasible is not None or any(n == 0 for n in counts):
            self._cache[budget] = None
            return None
        design = None
        if self.objective != PART:  # each unit's own cheapest: optimal if it fits
            picks = [int(u["best"][n - 1]) for u, n in zip(self.units, counts, strict=True)]
            design = self._design(picks)
            if not self._fits(picks):
                design = None
        if design is None:
            design = self._program(counts)
        self._cache[budget] = design
        return design

    def _fits(self, picks: list[int]) -> bool:
        total = sum(u["cost"][p] for u, p in zip(self.units, picks, strict=True))
        return bool((total <= self.cap + 1e-6).all())

    def _design(self, picks: list[int], exact: bool = True) -> Design:
        np = self.np
        cost = np.zeros(4)
        finn = np.zeros(4)
        cycles = 0
        for unit, pick in zip(self.units, picks, strict=True):
            cost += unit["cost"][pick]
            finn += unit["finn"][pick]
            cycles = max(cycles, int(unit["cycles"][pick]))
        if self.objective == PART:
            value = float((cost / self.scale)[np.isfinite(self.cap)].max())
        else:
            value = float(cost[RESOURCES.index(self.objective)])
        return Design(
            choice=[int(u["index"][p]) for u, p in zip(self.units, picks, strict=True)],
            max_cycles=cycles,
            cost=dict(zip(RESOURCES, map(float, cost), strict=True)),
            finn=dict(zip(RESOURCES, map(float, finn), strict=True)),
            value=value,
            exact=exact,
        )

    def _program(self, counts: list[int]) -> Design | None:
        """The knapsack at a budget as an integer program: least objective, then (a
        second program) least of the other resources at that objective."""
        try:
            from scipy.optimize import Bounds, LinearConstraint, milp
            from scipy.sparse import csr_matrix
        except ImportError as exc:  # pragma: no cover - scipy comes with numpy stacks
            raise RuntimeError(SCIPY_MISSING) from exc
        np = self.np
        self.programs += 1
        keys = [u["key"][:n] for u, n in zip(self.units, counts, strict=True)]
        costs = [u["cost"][:n] for u, n in zip(self.units, counts, strict=True)]
        n_vars = sum(counts)
        part = self.objective == PART
        total = n_vars + (1 if part else 0)
        rows, cols = [], []
        start = 0
        for number, count in enumerate(counts):
            rows += [number] * count
            cols += range(start, start + count)
            start += count
        one = csr_matrix(
            (np.ones(n_vars), (rows, cols)), shape=(len(counts), total)
        )  # one option per unit
        stacked = np.vstack(costs)
        finite = np.flatnonzero(np.isfinite(self.cap))
        constraints = [LinearConstraint(one, 1, 1)]
        if len(finite):
            matrix = stacked[:, finite].T
            if part:
                matrix = np.hstack([matrix / self.scale[finite, None], -np.ones((len(finite), 1))])
                constraints.append(LinearConstraint(matrix, -np.inf, 0))
                cap_matrix = np.hstack([stacked[:, finite].T, np.zeros((len(finite), 1))])
                constraints.append(LinearConstraint(cap_matrix, -np.inf, self.cap[finite]))
            else:
                constraints.append(LinearConstraint(matrix, -np.inf, self.cap[finite]))
        integrality = np.ones(total)
        lower, upper = np.zeros(total), np.ones(total)
        if part:
            integrality[-1] = 0
            upper[-1] = np.inf
        key = np.vstack(keys)
        if part:  # minimise t, the largest fraction (the last variable)
            primary = np.zeros(total)
            primary[-1] = 1.0
            secondary = np.append(key[:, 1], 0.0)
        else:
            primary, secondary = key[:, 0], key[:, 1]
        options = {"mip_rel_gap": 0.0, "time_limit": self.time_limit, "presolve": True}
        bounds = Bounds(lower, upper)
        first = milp(
            primary,
            constraints=constraints,
            integrality=integrality,
            bounds=bounds,
            options=options,
        )
        if first.x is None:
            if first.status == 1:
                self.notes.append("an integer program hit its time limit without a design")
            return None
        exact = first.status == 0
        best = float(first.fun)
        # the same objective (to within rounding), then the least of the other resources
        at_best = LinearConstraint(primary[None, :], -np.inf, best + 1e-7 * max(1.0, abs(best)))
        second = milp(
            secondary,
            constraints=[*constraints, at_best],
            integrality=integrality,
            bounds=bounds,
            options=options,
        )
        x = second.x if second.x is not None else first.x
        exact = exact and second.status in (0,)
        picks, start = [], 0
        for count in counts:
            picks.append(int(np.argmax(x[start : start + count])))
            start += count
        return self._design(picks, exact=exact)


def _pareto(cycles: Any, cost: Any) -> Any:
    """Indexes of the options no other option matches or beats in cycles and every
    resource (a dominated option is never needed, whatever the budget or cost)."""
    import numpy as np

    n = len(cycles)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    points = np.column_stack([cycles.astype(float), cost])
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        if not keep[i]:
            continue
        no_worse = (points <= points[i]).all(axis=1)
        better = (points < points[i]).any(axis=1)
        equal = no_worse & ~better
        dominated_by = no_worse & better
        dominated_by[i] = False
        if dominated_by.any():
            keep[i] = False
            continue
        equal[i] = False
        keep[np.flatnonzero(equal)[np.flatnonzero(equal) > i]] = False  # duplicates: first
    return np.flatnonzero(keep)


def _running_best(keys: Any) -> Any:
    """For each prefix of the options (sorted by cycles), the index of its best option
    by (objective, tie-break, -cycles)."""
    import numpy as np

    best = np.zeros(len(keys), dtype=np.int64)
    current = 0
    for i in range(len(keys)):
        if tuple(keys[i]) < tuple(keys[current]):
            current = i
        best[i] = current
    return best


def solve_front(problem: Problem, targets: list[int] | None = None) -> Solution:
    """The Pareto front of (objective, max cycles): bisection over the budgets for the
    budgets where the least cost steps down; ``targets``: budgets to solve at as well
    (their designs join the front when not dominated)."""
    started = time.perf_counter()
    budgets = problem.budgets()
    values: dict[int, float] = {}

    def value(index: int) -> float:
        if index not in values:
            design = problem.solve(budgets[index])
            values[index] = math.inf if design is None else design.value
        return values[index]

    steps: list[int] = []
    if budgets:
        stack = [(0, len(budgets) - 1)]
        steps.append(0)  # the least budget: the fastest design, if anything fits there
        while stack:
            low, high = stack.pop()
            if high <= low or _same(value(low), value(high)):
                continue
            if high == low + 1:
                steps.append(high)
                continue
            middle = (low + high) // 2
            stack += [(middle, high), (low, middle)]
    designs = [problem.solve(budgets[i]) for i in sorted(set(steps))]
    for target in targets or []:
        fitting = [b for b in budgets if b <= target]
        if fitting:
            designs.append(problem.solve(fitting[-1]))
    front = _front([d for d in designs if d is not None])
    fastest = front[0] if front else None
    return Solution(
        front=front,
        fastest=fastest,
        seconds=time.perf_counter() - started,
        solves=problem.solves,
        programs=problem.programs,
        budgets=len(budgets),
        notes=list(dict.fromkeys(problem.notes)),
    )


def _same(a: float, b: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def _front(designs: list[Design]) -> list[Design]:
    """Designs no other is both as fast and as cheap as (fastest first; of equal ones,
    the first)."""
    ordered = sorted(designs, key=lambda d: (d.max_cycles, d.value))
    front: list[Design] = []
    for design in ordered:
        if front and (design.value >= front[-1].value - 1e-9 * max(1.0, abs(design.value))):
            continue
        front.append(design)
    return front


def pick(front: list[Design], count: int, targets: list[int] = ()) -> list[Design]:  # type: ignore[assignment]
    """``count`` designs of the front to build, in the order they are built: the
    cheapest meeting each target budget (in the targets' order), the fastest, then the
    rest spread evenly over the front in log cycles (farthest first)."""
    chosen: list[Design] = []

    def add(design: Design | None) -> None:
        if design is not None and design not in chosen and len(chosen) < count:
            chosen.append(design)

    for target in targets:
        meeting = [d for d in front if d.max_cycles <= target]
        add(min(meeting, key=lambda d: (d.value, -d.max_cycles)) if meeting else None)
    add(front[0] if front else None)
    add(front[-1] if front else None)
    while len(chosen) < min(count, len(front)):
        logs = [math.log(d.max_cycles) for d in chosen]
        rest = [d for d in front if d not in chosen]
        far = max(rest, key=lambda d: min(abs(math.log(d.max_cycles) - x) for x in logs))
        add(far)
    return chosen


def folding_of(table: dict[str, Any], design: Design) -> dict[str, dict[str, Any]]:
    """The design as FINN's folding (node -> attributes)."""
    folding: dict[str, dict[str, Any]] = {}
    for unit, index in zip(table["units"], design.choice, strict=True):
        for node, attrs in unit["options"][index]["attrs"].items():
            if attrs:
                folding.setdefault(node, {}).update(attrs)
    return {node: dict(sorted(a.items())) for node, a in sorted(folding.items())}


def predicted(design: Design, clock_ns: float) -> dict[str, Any]:
    """What the table says of a design, as JSON (a trial's record keeps it beside FINN's
    estimates of the built design)."""
    return {
        "max_cycles": design.max_cycles,
        "estimated_throughput_fps": design.fps(clock_ns),
        "finn": design.finn,
        "corrected": design.cost,
        "exact": design.exact,
    }


def plan(
    table: dict[str, Any],
    *,
    objective: str,
    capacity: dict[str, float] | None,
    clock_ns: float,
    max_cycles: int | None = None,
    targets: list[int] = (),  # type: ignore[assignment]
    metric: str = "cost",
) -> dict[str, Any]:
    """The designs to build, in order (every design of the front: the cheapest meeting
    each target budget first, then the fastest, the slowest and the rest spread over the
    front), as foldings with what the table predicts of each; the whole front and how it
    was solved (JSON: the folding search keeps it)."""
    problem = Problem(table, objective, capacity, metric=metric, max_cycles=max_cycles)
    solution = solve_front(problem, targets=list(targets))
    order = pick(solution.front, len(solution.front), list(targets))
    options = sum(len(u["options"]) for u in table["units"])
    why = problem.infeasible
    if not solution.front and why is None:
        why = "no folding fits the capacity" + (" and the throughput bound" if max_cycles else "")
    return {
        "designs": [
            {"folding": folding_of(table, d), "model": predicted(d, clock_ns)} for d in order
        ],
        "front": [predicted(d, clock_ns) for d in solution.front],
        "why": why,
        "corrections": list(table.get("corrections", [])),
        "stats": {
            "units": len(table["units"]),
            "options": options,
            "budgets": solution.budgets,
            "solves": solution.solves,
            "programs": solution.programs,
            "seconds": round(solution.seconds, 3),
            "notes": solution.notes,
        },
    }
