"""``timeout``, ``step_timeouts``, ``max_memory``: bounds the execution engine puts
on each segment's build. Durations are seconds or strings like ``90s``/``2h``; sizes
are bytes or strings like ``4G``. Step names are the pipeline's (by short name)."""

from __future__ import annotations

from typing import Any

from ..errors import RegistryError, did_you_mean
from ..registry import Registry
from ..units import parse_duration, parse_size
from .report import FileReport, MergedReport, Reporter, typename
from .space import StepSlot


def _duration(value: Any, key: tuple[Any, ...], report: Reporter) -> float:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise report.error(key, f"expected a duration such as 90s or 2h, got {typename(value)}")
    try:
        return parse_duration(value)
    except (ValueError, OverflowError) as exc:
        raise report.error(key, str(exc)[:200]) from None


def resolve_timeout(data: dict[Any, Any], report: Reporter) -> float | None:
    if data.get("timeout") is None:
        return None
    return _duration(data["timeout"], ("timeout",), report)


def resolve_max_memory(data: dict[Any, Any], report: Reporter) -> int | None:
    value = data.get("max_memory")
    if value is None:
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise report.error(
            ("max_memory",), f"expected a size such as 4G or 512M, got {typename(value)}"
        )
    try:
        return parse_size(value)
    except (ValueError, OverflowError) as exc:
        raise report.error(("max_memory",), str(exc)[:200]) from None


def resolve_step_timeouts(
    raw: dict[Any, Any] | None, slots: list[StepSlot], registry: Registry, report: MergedReport
) -> dict[str, float]:
    """Step name -> seconds, keyed by the step's short name; every step must be in
    the pipeline (``finn:streamline`` and ``step_streamline`` name ``streamline``)."""
    in_pipeline = {s.qualified: s.name for slot in slots for s in slot.options if s is not None}
    names = sorted(set(in_pipeline.values()))
    result: dict[str, float] = {}
    written_by: dict[str, FileReport] = {}  # who set each step's timeout
    for name, value in (raw or {}).items():
        key = ("step_timeouts", name)
        step = None
        if isinstance(name, str):
            try:
                step = registry.step(name)
            except RegistryError:
                step = None
        if step is None or step.qualified not in in_pipeline:
            raise report.error(
                key,
                f"{name!r} is not a step of the pipeline"[:200],
                did_you_mean(str(name).split(":")[-1].removeprefix("step_"), names)
                or f"steps: {', '.join(names)}",
            )
        if step.name in written_by and written_by[step.name] is report.at(key):
            raise report.error(key, f"step {step.name!r} is given a timeout twice")
        written_by[step.name] = report.at(key)  # a child's spelling overrides its parent's
        result[step.name] = _duration(value, key, report)
    return result
