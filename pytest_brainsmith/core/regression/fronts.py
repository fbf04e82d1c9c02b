"""Pareto fronts and their hypervolume, for a front's gate against its baseline.

A front is the designs (the passing ones: the callers choose) that report every metric
of the front and that no other dominates. Two fronts are measured by one hypervolume,
exact, each objective normalised on the baseline's front (``Normalisation``) so that
every metric weighs alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..gates import dominates
from ..metrics import maximized

#: The front's objectives when the blueprint names none (the html report's Pareto plot).
DEFAULT_FRONT_METRICS = ("LUT", "estimated_throughput_fps")
#: How far past the baseline front's worst point the hypervolume's reference lies.
REFERENCE_MARGIN = 0.1


def front_of(
    entrants: Sequence[tuple[Any, dict[str, Any]]], metrics: Sequence[str]
) -> list[tuple[Any, dict[str, Any]]]:
    """The entrants (key, estimates) that report every metric and no other dominates;
    of equal ones, the first."""
    measured = [
        (key, est)
        for key, est in entrants
        if all(
            isinstance(est.get(m), int | float) and not isinstance(est.get(m), bool)
            for m in metrics
        )
    ]
    front: list[tuple[Any, dict[str, Any]]] = []
    for key, est in measured:
        if any(dominates(other, est, metrics) for _, other in measured):
            continue
        if any(all(est[m] == kept[m] for m in metrics) for _, kept in front):
            continue
        front.append((key, est))
    return front


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """The volume dominated by ``points`` (every objective minimized) up to
    ``reference``; points not strictly better than it on every objective add nothing.
    Exact, by slicing along the last objective (fronts here hold tens of designs)."""
    inside = [tuple(p) for p in points if all(x < r for x, r in zip(p, reference, strict=True))]
    if not inside:
        return 0.0
    if len(reference) == 1:
        return reference[0] - min(p[0] for p in inside)
    inside.sort(key=lambda p: p[-1])
    volume = 0.0
    for n, point in enumerate(inside):
        upper = inside[n + 1][-1] if n + 1 < len(inside) else reference[-1]
        if upper > point[-1]:
            volume += (upper - point[-1]) * hypervolume(
                [p[:-1] for p in inside[: n + 1]], reference[:-1]
            )
    return volume


class Normalisation:
    """Objectives mapped onto [0, 1] by a front (0: its best value of each metric, 1: its
    worst), all minimized, so one hypervolume weighs every metric alike. Made from the
    baseline's front and applied to both fronts, so they are measured alike."""

    def __init__(self, metrics: Sequence[str], front: Sequence[dict[str, Any]]) -> None:
        self.metrics = tuple(metrics)
        self.ideal: list[float] = []
        self.span: list[float] = []
        for metric in self.metrics:
            values = [self._directed(e[metric], metric) for e in front] or [0.0]
            best, worst = min(values), max(values)
            self.ideal.append(best)
            self.span.append(worst - best or abs(best) or 1.0)

    @staticmethod
    def _directed(value: float, metric: str) -> float:
        return -float(value) if maximized(metric) else float(value)

    def point(self, estimates: dict[str, Any]) -> tuple[float, ...]:
        return tuple(
            (self._directed(estimates[m], m) - ideal) / span
            for m, ideal, span in zip(self.metrics, self.ideal, self.span, strict=True)
        )

    @property
    def reference(self) -> tuple[float, ...]:
        return tuple(1.0 + REFERENCE_MARGIN for _ in self.metrics)

    def hypervolume(self, front: Iterable[dict[str, Any]]) -> float:
        return hypervolume([self.point(e) for e in front], self.reference)
