"""What a trial must fit: the ``expect:`` bounds of its designs and the part's capacity.

The exact solver keeps every design within them (``solver_bounds``), Optuna ranks a
trial that misses one below every feasible one (``constraints``), and a built trial
beyond the part is infeasible (``beyond_part``).
"""

from __future__ import annotations

import math
from typing import Any

from ..expectations import Expectation, for_design
from ..tree import Segment
from .parts import RESOURCES


def expect_bounds(prefix: Segment) -> list[Expectation]:
    """The ``expect:`` bounds of the designs below ``prefix``."""
    space = prefix.tree.space
    choices = dict(c.describe() for c in prefix.choices())
    return for_design(space.expect, choices)


def solver_bounds(
    bounds: list[Expectation], capacity: dict[str, int] | None, clock: float
) -> tuple[dict[str, float] | None, int | None]:
    """The capacity the solver keeps designs within: the part's, less the ``expect:``
    bounds on resources; and the most cycles an ``expect:`` throughput bound allows.
    (Other bounds are checked on the built designs only.)"""
    within: dict[str, float] = dict(capacity or {})
    max_cycles: int | None = None
    for bound in bounds:
        if bound.metric in RESOURCES and bound.op in ("<=", "<"):
            limit = bound.bound if bound.op == "<=" else bound.bound - 1e-6
            within[bound.metric] = min(within.get(bound.metric, math.inf), limit)
        cycles = None
        if bound.metric == "estimated_throughput_fps" and bound.op in (">=", ">"):
            exact = 1e9 / clock / bound.bound
            cycles = math.floor(exact) - (1 if bound.op == ">" and exact.is_integer() else 0)
        elif bound.metric == "max_cycles" and bound.op in ("<=", "<"):
            cycles = math.floor(bound.bound) - (1 if bound.op == "<" else 0)
        if cycles is not None:
            max_cycles = cycles if max_cycles is None else min(max_cycles, cycles)
    return (within or None), max_cycles


def constraints(
    estimates: dict[str, Any], bounds: list[Expectation], capacity: dict[str, int] | None
) -> dict[str, float]:
    """Optuna's constraints (<= 0 is feasible): the ``expect:`` bounds and the part's
    capacity, relative."""
    found = {str(e): _violation(e, estimates.get(e.metric)) for e in bounds}
    for metric, limit in (capacity or {}).items():
        value = estimates.get(metric)
        if isinstance(value, int | float) and limit > 0:
            found[f"{metric} <= {limit} (the part)"] = (value - limit) / limit
    return found


def beyond_part(estimates: dict[str, Any], capacity: dict[str, int] | None) -> list[str]:
    """What a design's estimates use beyond the part's capacity (empty: it fits)."""
    found = []
    for metric, limit in (capacity or {}).items():
        value = estimates.get(metric)
        if isinstance(value, int | float) and value > limit:
            found.append(f"{metric} {value:,.0f} > {limit:,} (the part's)")
    return found


def _violation(expectation: Expectation, value: Any) -> float:
    """How far a value is from meeting a bound, relative to the bound (<= 0: met)."""
    if not isinstance(value, int | float):
        return 1.0
    if expectation.op in ("==", "!="):
        return 0.0 if expectation.holds(value) else 1.0
    gap = value - expectation.bound if expectation.op in ("<=", "<") else expectation.bound - value
    if not expectation.holds(value):
        gap = max(gap, 1e-9)
    return gap / (abs(expectation.bound) or 1.0)
