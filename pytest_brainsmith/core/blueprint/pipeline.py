"""The pipeline of a blueprint: its step list after operations, numbered and cut.

A step listed more than once (user blueprints run ``specialize_layers`` twice) gets
an occurrence number, which gives each time its own FINN checkpoint name and cache
key; a branch point over the same steps as an earlier one is named ``a|b#2`` in a
design's choices. ``start_step``/``stop_step`` may name a step inside a branch point
(the cut keeps the branch point); a repeated step means its first occurrence (for
``stop_step``, the first at or after ``start_step``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import RegistryError
from ..registry import Registry, Step
from .extends import StepsSpec
from .report import FileReport, Reporter, dotted, typename
from .space import StepSlot, default_steps
from .step_operations import SlotSpec, apply_operation, parse_entry


def resolve_pipeline(
    spec: StepsSpec,
    output: str,
    registry: Registry,
    top: FileReport,
    data: dict[Any, Any],
    report: Reporter,
) -> list[StepSlot]:
    key = ("design_space", "steps")
    if spec.base is None:
        slots = [parse_entry(name, key, registry, top) for name in default_steps(output)]
    else:
        slots = [parse_entry(entry, where, registry, file) for where, entry, file in spec.base]
    for where, op, file in spec.operations:
        slots = apply_operation(slots, op, where, registry, file)
    resolved = _numbered(slots)
    start = _position(resolved, "start_step", data, registry, report, 0)
    stop = _position(resolved, "stop_step", data, registry, report, start or 0)
    resolved = resolved[start or 0 : None if stop is None else stop + 1]
    if not resolved:
        raise report.error(key, "the pipeline has no steps")
    return resolved


def _numbered(slots: list[SlotSpec]) -> list[StepSlot]:
    """Number repeated steps and repeated branch points, in pipeline order."""
    counts: dict[str, int] = {}
    branch_counts: dict[str, int] = {}
    result = []
    for slot in slots:
        options: list[Step | None] = []
        for step in slot.options:
            if step is not None:
                counts[step.qualified] = counts.get(step.qualified, 0) + 1
                if counts[step.qualified] > 1:
                    step = dataclasses.replace(step, occurrence=counts[step.qualified])
            options.append(step)
        name = ""
        if slot.is_branch:
            base = "|".join(s.name for s in slot.options if s is not None)
            branch_counts[base] = branch_counts.get(base, 0) + 1
            name = base if branch_counts[base] == 1 else f"{base}#{branch_counts[base]}"
        result.append(StepSlot(tuple(options), dotted(slot.key), name))
    return result


def _position(
    slots: list[StepSlot],
    bound: str,
    data: dict[Any, Any],
    registry: Registry,
    report: Reporter,
    after: int,
) -> int | None:
    """Where ``start_step``/``stop_step`` cuts: the first slot from ``after`` on that
    holds the step (for stop_step, the first at or after start_step)."""
    if bound not in data:
        return None
    name = data[bound]
    if not isinstance(name, str):
        raise report.error((bound,), f"expected a step name, got {typename(name)}")
    try:
        step = registry.step(name)
    except RegistryError as exc:
        raise report.error((bound,), str(exc)) from None
    for index in range(after, len(slots)):
        if any(s is not None and s.qualified == step.qualified for s in slots[index].options):
            return index
    where = " after start_step" if after else ""
    raise report.error((bound,), f"{name!r} is not a step of the pipeline{where}")
