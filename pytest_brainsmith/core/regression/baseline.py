"""Regressions against a baseline: what a design's estimates were, what they may become.

A **baseline** is a blueprint's designs as a run left them (outcome, estimates,
verification) and its Pareto front, in one JSON file kept beside the blueprint like a
golden file (``<blueprint>.baseline.json``), in a folder or on object storage (any
fsspec URL, as the remote cache reaches it). A design is known by its blueprint's name and
its choices, never by a segment key (which every code change moves).

A blueprint's ``regress:`` says how much worse each metric may get (``LUT: +2%``,
``estimated_throughput_fps: -0%``, ``BRAM_18K: +0``) and how much of its front's
hypervolume may be lost (``front: hypervolume -1%``). This module compares; it knows
neither pytest nor FINN (``plugin/baseline.py`` makes the tests).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..gates import dominates, number
from ..metrics import NAMES as METRICS
from ..metrics import maximized

FORMAT = "pytest-brainsmith-baseline"
VERSION = 1
SUFFIX = ".baseline.json"
#: The front's objectives when the blueprint names none (the html report's Pareto plot).
DEFAULT_FRONT_METRICS = ("LUT", "estimated_throughput_fps")
#: A design's comparison, worst first (what its baseline status is).
STATUSES = ("regressed", "worse", "mixed", "improved", "same", "new")
#: How far past the baseline front's worst point the hypervolume's reference lies.
REFERENCE_MARGIN = 0.1


class BaselineError(ValueError):
    """A baseline cannot be read or written (the message names the file or URL)."""


# -- tolerances (``regress:``) ----------------------------------------------------------
_TOLERANCE = re.compile(r"^\s*([+-])?\s*(\d+(?:\.\d*)?|\.\d+)\s*(%)?\s*$")
_FRONT = re.compile(r"^\s*hypervolume\s*([+-])?\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


@dataclass(frozen=True)
class Tolerance:
    """How much worse than the baseline a metric may get: ``amount`` in the metric's
    unit, or percent of the baseline value (``relative``)."""

    metric: str
    amount: float
    relative: bool
    text: str  # as the blueprint wrote it

    def allowed(self, baseline: float) -> float:
        return abs(baseline) * self.amount / 100 if self.relative else self.amount

    def __str__(self) -> str:
        return self.text


def _worse_sign(metric: str) -> str:
    return "-" if maximized(metric) else "+"


def parse_tolerance(metric: str, value: Any) -> Tolerance:
    """``+2%``, ``-0%`` (throughput), ``+0``, ``150``: how much worse ``metric`` may get.
    The sign, if given, must point the way the metric gets worse. Raises ValueError."""
    if metric not in METRICS:
        from ..errors import did_you_mean

        hint = did_you_mean(metric, [*METRICS, "front", "gone"])
        raise ValueError(
            f"unknown metric {metric!r}"
            + (f"; {hint}" if hint else f"; metrics: {', '.join(METRICS)}, and front, gone")
        )
    worse = _worse_sign(metric)
    direction = "may drop" if worse == "-" else "may rise"
    example = f"{worse}2%"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f'expected a tolerance such as "{example}" or {worse}0, got {value!r}')
    if isinstance(value, str):
        match = _TOLERANCE.match(value)
        if match is None:
            raise ValueError(
                f"expected a tolerance such as {example} (percent of the baseline) or "
                f"{worse}100 (in the metric's unit), got {value!r}"
            )
        sign, amount, percent = match.group(1), float(match.group(2)), bool(match.group(3))
        text = value.strip().replace(" ", "")
    else:  # YAML reads +0 and -150 as numbers: their sign is what is left of it
        if not math.isfinite(value):
            raise ValueError(f"expected a finite tolerance, got {value!r}")
        sign = "-" if value < 0 else None
        amount, percent = abs(float(value)), False
        text = f"{worse}{number(amount)}"
    if sign is not None and sign != worse:
        better = "higher" if worse == "-" else "lower"
        raise ValueError(
            f"{metric} is better {better}: its tolerance is how much it {direction}, "
            f"e.g. {example}, got {value!r}"
        )
    if sign is None and isinstance(value, str):
        text = worse + text
    return Tolerance(metric, amount, percent, text)


@dataclass(frozen=True)
class FrontTolerance:
    """How much of the front's hypervolume may be lost, in percent, on ``metrics``."""

    metrics: tuple[str, ...]
    percent: float
    text: str

    def __str__(self) -> str:
        return self.text


def parse_front_tolerance(value: Any, metrics: Sequence[str]) -> FrontTolerance:
    """``hypervolume -1%``: the front may lose at most 1% of its hypervolume."""
    match = _FRONT.match(value) if isinstance(value, str) else None
    if match is None or match.group(1) == "+":
        raise ValueError(
            f'expected "hypervolume -N%" (how much of the front\'s hypervolume may be lost), '
            f"got {value!r}"
        )
    percent = float(match.group(2))
    return FrontTolerance(tuple(metrics), percent, f"hypervolume -{number(percent)}%")


@dataclass(frozen=True)
class RegressSettings:
    """A blueprint's ``regress:`` after validation."""

    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    front: FrontTolerance | None = None
    allow_gone: bool = False  # a design of the baseline gone from the blueprint passes
    #: the front's objectives (also when no front tolerance is given: the baseline's front)
    front_metrics: tuple[str, ...] = DEFAULT_FRONT_METRICS


# -- identity ---------------------------------------------------------------------------
def identity(choices: dict[str, Any] | None) -> str:
    """A design within its blueprint: its choices, canonical."""
    return json.dumps(choices or {}, sort_keys=True, separators=(",", ":"), default=str)


def label(choices: dict[str, Any] | None) -> str:
    """``MVAU=rtl, target_fps=400000``"""
    return ", ".join(f"{k}={v}" for k, v in (choices or {}).items()) or "single design"


# -- the document -----------------------------------------------------------------------
@dataclass(frozen=True)
class BaselineDesign:
    """One design as the baseline holds it."""

    choices: dict[str, Any]
    outcome: str
    estimates: dict[str, float]
    verification: str | None = None

    @property
    def label(self) -> str:
        return label(self.choices)


@dataclass
class Baseline:
    """A blueprint's baseline, read from ``source`` (a file, a URL, a results store run)."""

    blueprint: str
    designs: dict[str, BaselineDesign]  # by identity
    source: str
    front_metrics: tuple[str, ...] = DEFAULT_FRONT_METRICS
    toolchain: str | None = None
    #: what every design of the baseline's blueprint had in common (``fixed_choices``)
    fixed: dict[str, Any] = field(default_factory=dict)

    def get(
        self, choices: dict[str, Any], fixed: dict[str, Any] | None = None
    ) -> BaselineDesign | None:
        """The baseline's design with these choices. A branch point that one side no longer
        has (a sweep narrowed to one value, or widened from one) matches on the value the
        other side fixed for it (``fixed``: the blueprint's, ``self.fixed``: the baseline's)."""
        exact = self.designs.get(identity(choices))
        if exact is not None or fixed is None:
            return exact
        found = [
            d
            for d in self.designs.values()
            if all(
                _value(k, choices, fixed) == _value(k, d.choices, self.fixed)
                for k in set(choices) | set(d.choices)
            )
        ]
        return found[0] if len(found) == 1 else None

    def front(self, metrics: Sequence[str] | None = None) -> list[BaselineDesign]:
        """The baseline's passing designs no other passing design dominates."""
        chosen = tuple(metrics or self.front_metrics)
        entrants = [(d, d.estimates) for d in self.designs.values() if d.outcome == "passed"]
        return [d for d, _ in front_of(entrants, chosen)]


_MISSING = object()


def _value(key: str, choices: dict[str, Any], fixed: dict[str, Any]) -> Any:
    if key in choices:
        return choices[key]
    return fixed.get(key, _MISSING)  # never equal to anything, itself included


def fixed_choices(space: Any) -> dict[str, Any]:
    """What a blueprint fixes where another version of it may branch: its FINN config
    fields (a sweep of one value included), a kernel's one backend, its one model. A
    design's identity is its choices; these let a design match across a sweep that grew
    from one value or shrank to one."""
    fixed: dict[str, Any] = dict(space.finn_config)
    for name, values in space.sweeps.items():
        if len(values) == 1:
            fixed[name] = values[0]
    for choice in space.kernels:
        if len(choice.backends) == 1:
            fixed[choice.kernel.name] = choice.backends[0]
    if len(space.models) == 1:
        fixed["model"] = space.models[0].name
    return json.loads(json.dumps(fixed, default=str))


def _metrics_of(estimates: dict[str, Any] | None) -> dict[str, float]:
    return {
        m: float(v) if isinstance(v, float) else v
        for m, v in (estimates or {}).items()
        if m in METRICS and isinstance(v, int | float) and not isinstance(v, bool)
    }


def document(
    blueprint: str,
    records: Iterable[dict[str, Any]],
    *,
    front_metrics: Sequence[str] = DEFAULT_FRONT_METRICS,
    blueprint_file: str | None = None,
    toolchain: str | None = None,
    fixed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A baseline document from design records (``DesignOutcome.record()``, the results
    store's rows): designs sorted by identity, no time stamp, so a baseline committed
    beside its blueprint changes only where a design did."""
    designs = []
    for record in records:
        verification = record.get("verification")
        status = verification.get("status") if isinstance(verification, dict) else verification
        designs.append(
            {
                "choices": record.get("choices") or {},
                "outcome": record.get("outcome") or record.get("engine_outcome") or "unknown",
                "estimates": _metrics_of(record.get("estimates")),
                "verification": None if status in (None, "off") else status,
            }
        )
    designs.sort(key=lambda d: identity(d["choices"]))
    parsed = [_design(d, "", n) for n, d in enumerate(designs)]
    entrants = [(d, d.estimates) for d in parsed if d.outcome == "passed"]
    on_front = [d.choices for d, _ in front_of(entrants, front_metrics)]
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION, "blueprint": blueprint}
    if blueprint_file:
        doc["blueprint_file"] = blueprint_file
    if toolchain:
        doc["toolchain"] = toolchain
    doc["front"] = {"metrics": list(front_metrics), "designs": on_front}
    if fixed:
        doc["fixed"] = fixed
    doc["designs"] = designs
    return doc


def dumps(doc: dict[str, Any]) -> str:
    """The document as text: a design a line, so a diff of a committed baseline shows
    the designs that changed."""
    lines = []
    for name, value in doc.items():
        if name == "designs":
            rows = [json.dumps(d, sort_keys=True) for d in value]
            inner = ",\n".join(f"  {row}" for row in rows)
            lines.append(f' "designs": [\n{inner}\n ]' if rows else ' "designs": []')
        else:
            lines.append(f" {json.dumps(name)}: {json.dumps(value, sort_keys=True)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def parse(text: str | bytes, source: str, blueprint: str | None = None) -> Baseline:
    """A baseline from its JSON text; BaselineError (naming ``source``) for anything that
    is not a whole baseline of this format version, or (``blueprint``) of another blueprint."""
    try:
        doc = json.loads(text)
    except UnicodeDecodeError:
        raise BaselineError(f"{source}: not a baseline: the file is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        cut = " (truncated?)" if exc.pos >= len(text) - 1 else ""
        raise BaselineError(
            f"{source}: not a baseline: invalid JSON at line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}{cut}"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BaselineError(f'{source}: not a pytest-brainsmith baseline (no "format": "{FORMAT}")')
    version = doc.get("version")
    if version != VERSION:
        raise BaselineError(
            f"{source}: baseline format version {version!r}; this pytest-brainsmith reads "
            f"version {VERSION}: write it again with --brainsmith-baseline-update"
        )
    name = doc.get("blueprint")
    if not isinstance(name, str):
        raise BaselineError(f'{source}: "blueprint": expected the blueprint\'s name')
    if blueprint is not None and name != blueprint:
        raise BaselineError(f"{source}: the baseline of blueprint {name!r}, not of {blueprint!r}")
    designs = doc.get("designs")
    if not isinstance(designs, list):
        raise BaselineError(f'{source}: "designs": expected a list of designs')
    parsed: dict[str, BaselineDesign] = {}
    for n, raw in enumerate(designs):
        design = _design(raw, source, n)
        key = identity(design.choices)
        if key in parsed:
            raise BaselineError(f"{source}: designs[{n}]: {design.label} is listed twice")
        parsed[key] = design
    front = doc.get("front") or {}
    metrics = front.get("metrics") if isinstance(front, dict) else None
    if not isinstance(metrics, list) or not metrics or any(m not in METRICS for m in metrics):
        raise BaselineError(f'{source}: "front.metrics": expected a list of estimate metrics')
    toolchain = doc.get("toolchain")
    fixed = doc.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise BaselineError(f'{source}: "fixed": expected a mapping of name: value')
    return Baseline(
        name,
        parsed,
        source,
        tuple(metrics),
        toolchain if isinstance(toolchain, str) else None,
        fixed,
    )


def _design(raw: Any, source: str, n: int) -> BaselineDesign:
    where = f"{source}: designs[{n}]"
    if not isinstance(raw, dict):
        raise BaselineError(f"{where}: expected a mapping with choices, outcome, estimates")
    choices, outcome, estimates = raw.get("choices"), raw.get("outcome"), raw.get("estimates")
    if not isinstance(choices, dict):
        raise BaselineError(f"{where}: choices: expected a mapping of branch point: value")
    if not isinstance(outcome, str):
        raise BaselineError(f"{where}: outcome: expected passed, failed, skipped or error")
    if not isinstance(estimates, dict) or any(
        isinstance(v, bool) or not isinstance(v, int | float) for v in estimates.values()
    ):
        raise BaselineError(f"{where}: estimates: expected a mapping of metric: number")
    verification = raw.get("verification")
    return BaselineDesign(
        choices,
        outcome,
        _metrics_of(estimates),
        verification if isinstance(verification, str) else None,
    )


# -- comparing a design -----------------------------------------------------------------
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
        now = _metrics_of(estimates)
        tolerances = settings.tolerances if settings is not None else {}
        for metric in METRICS:
            if metric in now and metric in base.estimates:
                deltas.append(
                    MetricDelta(metric, base.estimates[metric], now[metric], tolerances.get(metric))
                )
    status = verification if verification not in (None, "off") else None
    return DesignComparison(dict(choices), base, deltas, outcome, status)


# -- the front --------------------------------------------------------------------------
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
    now = front_of([(c, _metrics_of(e)) for c, o, e in designs if o == "passed"], metrics)
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


# -- where a baseline lives -------------------------------------------------------------
def stem(blueprint: Path) -> str:
    """``tfc_sweep.blueprint.yaml`` -> ``tfc_sweep``"""
    name = blueprint.name
    for suffix in (".blueprint.yaml", ".blueprint.yml", ".yaml", ".yml"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_url(location: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location) is not None


def read_text(location: str, timeout: float = 60.0) -> str | None:
    """A baseline's text from a file or an fsspec URL; None if there is none there.
    BaselineError for anything else (unreadable, denied, no answer)."""
    if not is_url(location):
        path = Path(location)
        try:
            return path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError:
            raise BaselineError(f"{location}: not a baseline: the file is not UTF-8 text") from None
        except OSError as exc:
            raise BaselineError(
                f"{location}: cannot read the baseline: {exc.strerror or exc}"
            ) from None
    fs, path = _fs(location, timeout)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None
    except Exception as exc:
        raise BaselineError(f"{location}: cannot read the baseline: {_describe(exc)}") from None
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise BaselineError(f"{location}: not a baseline: the object is not UTF-8 text") from None


def write_text(location: str, text: str, timeout: float = 60.0) -> None:
    """Write a baseline whole: a reader sees the old one or the new one (a file is
    renamed into place; an object store's PUT is atomic)."""
    if not is_url(location):
        path = Path(location)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.partial")
            partial.write_text(text)
            partial.replace(path)
        except OSError as exc:
            raise BaselineError(
                f"{location}: cannot write the baseline: {exc.strerror or exc}"
            ) from None
        return
    fs, path = _fs(location, timeout)
    try:
        fs.pipe_file(path, text.encode())
    except Exception as exc:
        raise BaselineError(f"{location}: cannot write the baseline: {_describe(exc)}") from None


def _fs(location: str, timeout: float) -> tuple[Any, str]:
    from ..remote_cache import RemoteCacheError, check_backend

    try:
        check_backend(location)
    except RemoteCacheError as exc:
        raise BaselineError(str(exc).replace("remote cache", "baseline", 1)) from None
    import fsspec

    protocol = fsspec.core.split_protocol(location)[0]
    options: dict[str, Any] = {}
    if protocol in ("s3", "s3a"):  # bounded calls, as the remote cache makes them
        options["config_kwargs"] = {
            "connect_timeout": timeout,
            "read_timeout": timeout,
            "retries": {"max_attempts": 2},
        }
        options["skip_instance_cache"] = True
    try:
        return fsspec.core.url_to_fs(location, **options)
    except Exception as exc:
        raise BaselineError(f"{location}: cannot reach the baseline: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return f"access denied ({exc})"
    return f"{type(exc).__name__}: {exc}"
