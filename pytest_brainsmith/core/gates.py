"""Gates: where the engine stops spending on a design, decided from FINN's estimates.

- ``expect``: a design whose estimates already miss one of its ``expect:`` bounds
  builds nothing further (it fails with the miss and where it stopped);
- ``pareto``: once every competing design has its estimates, a design dominated on
  the ``explore.pareto`` metrics does not reach ``explore.before`` (it is skipped,
  naming one design that dominates it);
- ``budget``: after ``--brainsmith-budget`` no new segment starts.

Every decision here is a pure function of the competing designs and their estimates
(which come from cache entries, byte for byte the same whoever built them), so each
process of a run (the pool, every xdist worker) decides the same. The engine keeps
the bookkeeping (which designs are stopped, which tasks wait); this module says what
"dominated", "a miss" and "most promising" mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .expectations import Expectation
from .metrics import maximized

EXPECT = "expect"
PARETO = "pareto"
BUDGET = "budget"
#: The gates in the order the reports list them.
GATES = (EXPECT, PARETO, BUDGET)

_NEGATED = {"<=": ">", ">=": "<", "<": ">=", ">": "<=", "==": "!=", "!=": "=="}

K = TypeVar("K")


@dataclass(frozen=True)
class Stop:
    """Why a design builds nothing further: the gate and one line for the user."""

    gate: str
    reason: str


def number(value: Any) -> str:
    """``35012.0`` -> ``35,012``; ``0.125`` -> ``0.125``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.6g}"


def misses(expectations: Sequence[Expectation], estimates: dict[str, Any]) -> list[Expectation]:
    """The bounds these estimates already miss. A metric not reported yet is not a
    miss here (a later step may report it); the design's final check says so."""
    return [
        e
        for e in expectations
        if isinstance(estimates.get(e.metric), int | float) and not e.holds(estimates[e.metric])
    ]


def miss_text(expectation: Expectation, value: float) -> str:
    """``LUT 35,012 > 30,000``: the value, the negated operator, the bound."""
    return f"{expectation.metric} {number(value)} {_NEGATED[expectation.op]} {number(expectation.bound)}"


def comparable(estimates: dict[str, Any] | None, metrics: Sequence[str]) -> bool:
    return estimates is not None and all(
        isinstance(estimates.get(m), int | float) and not isinstance(estimates.get(m), bool)
        for m in metrics
    )


def dominates(a: dict[str, Any], b: dict[str, Any], metrics: Sequence[str]) -> bool:
    """``a`` is at least as good as ``b`` on every metric and better on one."""
    strictly = False
    for metric in metrics:
        x, y = (a[metric], b[metric]) if maximized(metric) else (b[metric], a[metric])
        if x < y:
            return False
        strictly = strictly or x > y
    return strictly


def dominated(entrants: Sequence[tuple[K, dict[str, Any]]], metrics: Sequence[str]) -> dict[K, K]:
    """Each dominated entrant -> one design that dominates it: the first, in the
    entrants' order, of the non-dominated designs that do (one always does)."""
    front = [
        (key, est)
        for key, est in entrants
        if not any(dominates(other, est, metrics) for _, other in entrants)
    ]
    result: dict[K, K] = {}
    for key, est in entrants:
        by = next((k for k, other in front if dominates(other, est, metrics)), None)
        if by is not None:
            result[key] = by
    return result


def dominance_reason(
    metrics: Sequence[str],
    mine: dict[str, Any],
    theirs: dict[str, Any],
    who: str,
    before: str,
) -> str:
    """``dominated by MVAU=rtl, target_fps=400000 (LUT 3,211 vs 3,900; ...); stopped
    before hw_codegen``"""
    values = "; ".join(f"{m} {number(theirs[m])} vs {number(mine[m])}" for m in metrics)
    return f"dominated by {who} ({values}); stopped before {before}"


def order_score(
    estimates: dict[str, Any], order: str, pareto: Sequence[str], rank: Callable[[], int]
) -> tuple[float, float]:
    """How promising a design is, smaller first: by the ``order`` metric, or (``order:
    pareto``) by how many designs with estimates dominate it, then the first metric."""
    if order == PARETO:
        first = pareto[0]
        return float(rank()), _directed(estimates.get(first), first)
    return _directed(estimates.get(order), order), 0.0


def _directed(value: Any, metric: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return float("inf")  # not reported: least promising
    return -float(value) if maximized(metric) else float(value)
