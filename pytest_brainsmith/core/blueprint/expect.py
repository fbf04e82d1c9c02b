"""``expect:``: bounds on every design's estimates, narrowed per choice by ``when``."""

from __future__ import annotations

import math
from typing import Any

from ..errors import did_you_mean
from ..expectations import Expectation, parse_expectation
from .report import KeyPath, Reporter, typename


def _parse(
    metric: Any, text: Any, when: tuple[tuple[str, Any], ...], key: KeyPath, report: Reporter
) -> Expectation:
    try:
        expectation = parse_expectation(str(metric), text, when)
    except ValueError as exc:
        raise report.error(key, str(exc)) from None
    if not math.isfinite(expectation.bound):
        raise report.error(key, f"expected a finite bound, got {text!r}")
    return expectation


def resolve_expect(raw: Any, points: dict[str, list[Any]], report: Reporter) -> list[Expectation]:
    """metric: "<op> <number>" for every design, and ``when:`` entries that hold the
    designs with some choices to other bounds."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise report.error(
            ("expect",), f'expected a mapping of metric: "<op> <number>", got {typename(raw)}'
        )
    result = [
        _parse(metric, text, (), ("expect", metric), report)
        for metric, text in raw.items()
        if metric != "when"
    ]
    narrowed = raw.get("when") or []
    if not isinstance(narrowed, list):
        raise report.error(
            ("expect", "when"),
            'expected a list of {choices: {name: value}, <metric>: "<op> <number>"}, '
            f"got {typename(narrowed)}",
        )
    for n, entry in enumerate(narrowed):
        where = ("expect", "when", n)
        if not isinstance(entry, dict) or not isinstance(entry.get("choices"), dict):
            raise report.error(
                where, "expected a mapping with 'choices: {name: value}' and metrics"
            )
        when = []
        for name, value in entry["choices"].items():
            if name not in points:
                hint = did_you_mean(str(name), points)
                known = ", ".join(points) or "none: this blueprint has no branch point"
                raise report.error(
                    (*where, "choices", name),
                    f"{name!r} is not a branch point of this blueprint"
                    + (f"; {hint}" if hint else f"; branch points: {known}"),
                )
            if value not in points[name]:
                raise report.error(
                    (*where, "choices", name),
                    f"{name} explores {', '.join(map(str, points[name]))}; got {value!r}"[:300],
                )
            when.append((str(name), value))
        metrics = {k: v for k, v in entry.items() if k != "choices"}
        if not metrics:
            raise report.error(
                where, 'expected at least one metric: "<op> <number>" besides choices'
            )
        for metric, text in metrics.items():
            result.append(_parse(metric, text, tuple(when), (*where, metric), report))
    return result
