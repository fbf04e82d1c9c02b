"""A design and a front against the baseline: each metric's change, and the verdict.

A design is compared with the baseline's design of the same choices: every metric both
report, those ``regress:`` lists gated by their tolerance (``compare_design``). The
blueprint's front is compared with the baseline's by hypervolume (``compare_front``),
and the baseline's designs the blueprint no longer has are listed (``gone``). Nothing
here knows pytest (``plugin/baseline.py`` makes the tests).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..gates import dominates, number
from ..metrics import NAMES as METRICS
from ..metrics import maximized
from .baseline import Baseline, BaselineDesign, identity, label, metrics_of
from .fronts import Normalisation, front_of
from .tolerances import FrontTolerance, RegressSettings, Tolerance

#: A design's comparison, worst first (what its baseline status is).
STATUSES = ("regressed", "worse", "mixed", "improved", "same", "new")


@dataclass(frozen=True)
class MetricDelta:
    """One metric of a design against the baseline."""

    metric: str
    baseline: float
    value: float
    tolerance: Tolerance | None  # None: the metric is shown, not gated

    @property
    def change(self) -> float:
        return self.value - self.baseline

    @property
    def percent(self) -> float | None:
        return self.change / abs(self.baseline) * 100 if self.baseline else None

    @property
    def worse_by(self) -> float:
        """How much worse than the baseline (negative: better)."""
        return -self.change if maximized(self.metric) else self.change

    @property
    def verdict(self) -> str:
        """better | same | worse (within its tolerance, or not gated) | regressed"""
        if self.worse_by < 0:
            return "better"
        if self.worse_by == 0:
            return "same"
        if self.tolerance is not None and self.worse_by > self.tolerance.allowed(self.baseline):
            return "regressed"
        return "worse"

    def change_text(self) -> str:
        """``+10.9%`` (or ``+3`` from a baseline of 0)."""
        if self.percent is None:
            return f"{'+' if self.change >= 0 else '-'}{number(abs(self.change))}"
        return f"{self.percent:+.1f}%"

    def text(self) -> str:
        """``LUT 2,616 -> 2,900 (+10.9%, tolerance +2%)``"""
        bound = f", tolerance {self.tolerance}" if self.tolerance is not None else ""
        return (
            f"{self.metric} {number(self.baseline)} -> {number(self.value)} "
            f"({self.change_text()}{bound})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "baseline": self.baseline,
            "value": self.value,
            "change": self.change_text(),
            "percent": None if self.percent is None else round(self.percent, 3),
            "tolerance": None if self.tolerance is None else str(self.tolerance),
            "verdict": self.verdict,
        }


@dataclass
class DesignComparison:
    """A design against its baseline: each metric's delta, and the verdict."""

    choices: dict[str, Any]
    baseline: BaselineDesign | None
    deltas: list[MetricDelta]
    outcome: str | None = None
    verification: str | None = None

    @property
    def regressions(self) -> list[MetricDelta]:
        return [d for d in self.deltas if d.verdict == "regressed"]

    @property
    def status(self) -> str:
        """regressed | worse (every change within its tolerance) | mixed (better and
        worse) | improved | same | new"""
        if self.baseline is None:
            return "new"
        verdicts = {d.verdict for d in self.deltas}
        if self.outcome == "passed" and self.baseline.outcome != "passed":
            verdicts.add("better")
        if "regressed" in verdicts:
            return "regressed"
        if "worse" in verdicts:
            return "mixed" if "better" in verdicts else "worse"
        return "improved" if "better" in verdicts else "same"

    def worst(self) -> MetricDelta | None:
        """The change most past its tolerance (or, if none is past, the worst change)."""
        worse = [d for d in self.deltas if d.verdict in ("regressed", "worse")]
        return max(worse, key=_badness, default=None)

    def best(self) -> MetricDelta | None:
        better = [d for d in self.deltas if d.verdict == "better"]
        return max(better, key=lambda d: -_badness(d), default=None)

    def summary(self) -> str:
        """One line: ``regressed: LUT 2,616 -> 2,900 (+10.9%, tolerance +2%)``."""
        status = self.status
        if status == "new":
            return "new: not in the baseline"
        if status == "same":
            return "same as the baseline"
        if status == "regressed":
            return "regressed: " + "; ".join(d.text() for d in self.regressions)
        if status == "improved":
            better = [d.text() for d in self.deltas if d.verdict == "better"]
            if self.outcome == "passed" and self.baseline and self.baseline.outcome != "passed":
                better.insert(0, f"outcome {self.baseline.outcome} -> passed")
            return "improved: " + "; ".join(better)
        changed = [d.text() for d in self.deltas if d.verdict in ("better", "worse")]
        return f"{'changed' if status == 'mixed' else 'worse'} within tolerance: " + "; ".join(
            changed
        )

    def lines(self) -> list[str]:
        """Every changed metric, one a line, for a failure's details."""
        out = []
        if self.baseline is not None and self.outcome and self.outcome != self.baseline.outcome:
            out.append(f"  outcome: {self.baseline.outcome} -> {self.outcome}")
        if self.baseline is not None and self.verification != self.baseline.verification:
            out.append(
                f"  verification: {self.baseline.verification or 'off'} -> {self.verification or 'off'}"
            )
        for delta in self.deltas:
            if delta.verdict == "same":
                continue
            mark = {"regressed": "REGRESSED", "worse": "worse, within tolerance"}.get(
                delta.verdict, delta.verdict
            )
            if delta.verdict == "worse" and delta.tolerance is None:
                mark = "worse (not gated)"
            out.append(f"  {delta.text()}: {mark}")
        return out

    def as_dict(self, source: str | None = None) -> dict[str, Any]:
        worst = self.worst()
        data: dict[str, Any] = {
            "status": self.status,
            "summary": self.summary(),
            "deltas": [d.as_dict() for d in self.deltas if d.verdict != "same"],
            "worst": worst.as_dict() if worst is not None else None,
        }
        if self.baseline is not None:
            data["baseline_outcome"] = self.baseline.outcome
            data["baseline_verification"] = self.baseline.verification
        if source:
            data["source"] = source
        return data


def _badness(delta: MetricDelta) -> float:
    """How bad a change is, comparable across metrics: past the tolerance first, then
    relative change (percent), then absolute."""
    allowed = delta.tolerance.allowed(delta.baseline) if delta.tolerance else math.inf
    past = delta.worse_by > allowed
    relative = (
        delta.worse_by / abs(delta.baseline)
        if delta.baseline
        else math.copysign(1e9, delta.worse_by)
    )
    return (2e12 if past else 0.0) + relative


def compare_design(
    baseline: Baseline | None,
    choices: dict[str, Any],
    outcome: str | None,
    estimates: dict[str, Any],
    verification: str | None,
    settings: RegressSettings | None,
    fixed: dict[str, Any] | None = None,
) -> DesignComparison:
    """A design against the baseline's design of the same choices. Every metric both
    report is compared; those ``regress:`` lists are gated by their tolerance."""
    base = baseline.get(choices, fixed) if baseline is not None else None
    deltas = []
    if base is not None:
        now = metrics_of(estimates)
        tolerances = settings.tolerances if settings is not None else {}
        for metric in METRICS:
            if metric in now and metric in base.estimates:
                deltas.append(
                    MetricDelta(metric, base.estimates[metric], now[metric], tolerances.get(metric))
                )
    status = verification if verification not in (None, "off") else None
    return DesignComparison(dict(choices), base, deltas, outcome, status)


@dataclass
class FrontComparison:
    """A blueprint's front against the baseline's."""

    metrics: tuple[str, ...]
    baseline_front: list[tuple[dict[str, Any], dict[str, Any]]]  # (choices, estimates)
    front: list[tuple[dict[str, Any], dict[str, Any]]]
    baseline_hypervolume: float
    hypervolume: float
    tolerance: FrontTolerance | None

    @property
    def percent(self) -> float | None:
        if self.baseline_hypervolume == 0:
            return None
        return (self.hypervolume - self.baseline_hypervolume) / self.baseline_hypervolume * 100

    @property
    def lost(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Designs of the baseline's front that no design of this front matches or beats."""
        return [
            (choices, est)
            for choices, est in self.baseline_front
            if not any(
                dominates(now, est, self.metrics) or all(now[m] == est[m] for m in self.metrics)
                for _, now in self.front
            )
        ]

    @property
    def verdict(self) -> str:
        """regressed | worse (within tolerance) | improved | same"""
        if self.percent is None:
            return "improved" if self.hypervolume > 0 else "same"
        if self.percent < 0:
            limit = self.tolerance.percent if self.tolerance is not None else math.inf
            # a hair of float noise is not a loss
            return "regressed" if -self.percent > limit + 1e-9 else "worse"
        return "improved" if self.percent > 1e-9 else "same"

    def change_text(self) -> str:
        return "new front" if self.percent is None else f"{self.percent:+.2f}%"

    def summary(self) -> str:
        """``hypervolume 0.8123 -> 0.7020 (-13.58%, tolerance -1%) on LUT,
        estimated_throughput_fps: regressed``"""
        bound = f", tolerance -{number(self.tolerance.percent)}%" if self.tolerance else ""
        return (
            f"hypervolume {self.baseline_hypervolume:.4f} -> {self.hypervolume:.4f} "
            f"({self.change_text()}{bound}) on {', '.join(self.metrics)}: {self.verdict}"
        )

    def lines(self) -> list[str]:
        out = [self.summary()]
        for choices, est in self.lost:
            values = ", ".join(f"{m} {number(est[m])}" for m in self.metrics)
            out.append(f"  lost from the front: {label(choices)} ({values})")
        gained = [
            (c, e)
            for c, e in self.front
            if not any(all(e[m] == b[m] for m in self.metrics) for _, b in self.baseline_front)
        ]
        for choices, est in gained:
            values = ", ".join(f"{m} {number(est[m])}" for m in self.metrics)
            out.append(f"  new on the front: {label(choices)} ({values})")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "metrics": list(self.metrics),
            "baseline_hypervolume": round(self.baseline_hypervolume, 6),
            "hypervolume": round(self.hypervolume, 6),
            "percent": None if self.percent is None else round(self.percent, 4),
            "tolerance": None if self.tolerance is None else str(self.tolerance),
            "verdict": self.verdict,
            "summary": self.summary(),
            "baseline_front": [{"choices": c, "estimates": e} for c, e in self.baseline_front],
            "front": [{"choices": c, "estimates": e} for c, e in self.front],
            "lost": [label(c) for c, _ in self.lost],
        }


def compare_front(
    baseline: Baseline,
    designs: Iterable[tuple[dict[str, Any], str, dict[str, Any]]],
    metrics: Sequence[str],
    tolerance: FrontTolerance | None,
) -> FrontComparison:
    """The front of ``designs`` (choices, outcome, estimates; passing ones compete)
    against the baseline's, both measured by one hypervolume normalised on the
    baseline's front."""
    metrics = tuple(metrics)
    base = front_of(
        [(d.choices, d.estimates) for d in baseline.designs.values() if d.outcome == "passed"],
        metrics,
    )
    now = front_of([(c, metrics_of(e)) for c, o, e in designs if o == "passed"], metrics)
    scale = Normalisation(metrics, [e for _, e in base])
    return FrontComparison(
        metrics,
        base,
        now,
        scale.hypervolume(e for _, e in base),
        scale.hypervolume(e for _, e in now),
        tolerance,
    )


def gone(
    baseline: Baseline, current: Iterable[dict[str, Any]], fixed: dict[str, Any] | None = None
) -> list[BaselineDesign]:
    """The baseline's designs no design of the blueprint matches (``Baseline.get``)."""
    present = set()
    for choices in current:
        found = baseline.get(choices, fixed)
        if found is not None:
            present.add(identity(found.choices))
    return [d for key, d in sorted(baseline.designs.items()) if key not in present]
