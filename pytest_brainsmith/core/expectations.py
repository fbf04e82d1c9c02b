"""Expectations on a design's estimates (``expect:`` in a blueprint), e.g.
``LUT: "<= 20000"``: parsed at collection, checked after a design builds."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import did_you_mean
from .metrics import NAMES as METRICS

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    "==": operator.eq,
    "!=": operator.ne,
}
_PATTERN = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*([-+]?(?:\d[\d_]*)(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Expectation:
    metric: str
    op: str
    bound: float
    when: tuple[tuple[str, Any], ...] = ()  # only for designs with these choices

    def applies_to(self, choices: dict[str, Any]) -> bool:
        return all(key in choices and choices[key] == value for key, value in self.when)

    def holds(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.bound)

    def __str__(self) -> str:
        bound = int(self.bound) if self.bound == int(self.bound) else self.bound
        when = ", ".join(f"{k}={v}" for k, v in self.when)
        return f"{self.metric} {self.op} {bound}" + (f" (when {when})" if when else "")


def for_design(expectations: list[Expectation], choices: dict[str, Any]) -> list[Expectation]:
    """The expectations a design is held to: the general ones, each replaced by a
    narrower one on the same metric whose ``when`` matches the design."""
    chosen: dict[str, Expectation] = {}
    for expectation in expectations:  # general first, then the ``when`` entries in order
        if expectation.applies_to(choices):
            chosen[expectation.metric] = expectation
    return list(chosen.values())


def parse_expectation(
    metric: str, text: object, when: tuple[tuple[str, Any], ...] = ()
) -> Expectation:
    """Parse ``"<= 20000"``; raise ValueError with what was expected."""
    if metric not in METRICS:
        hint = did_you_mean(metric, METRICS)
        raise ValueError(
            f"unknown metric {metric!r}"
            + (f"; {hint}" if hint else f"; known metrics: {', '.join(METRICS)}")
        )
    match = _PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f'expected "<op> <number>" with op one of {" ".join(_OPERATORS)}, got {text!r}'
        )
    return Expectation(metric, match.group(1), float(match.group(2).replace("_", "")), when)
