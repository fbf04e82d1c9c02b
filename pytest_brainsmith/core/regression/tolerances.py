"""How much worse than the baseline a design may get: a blueprint's ``regress:`` parsed.

Each metric's tolerance (``LUT: +2%``, ``estimated_throughput_fps: -0%``, ``BRAM_18K:
+0``) is in the metric's unit or in percent of the baseline value, its sign the way the
metric gets worse; the front's (``front: hypervolume -1%``) is how much of its
hypervolume may be lost. ``blueprint/regress.py`` reads the key and reports where it
is wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import did_you_mean
from ..gates import number
from ..metrics import NAMES as METRICS
from ..metrics import maximized
from .fronts import DEFAULT_FRONT_METRICS

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
