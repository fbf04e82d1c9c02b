"""``timeout``, ``step_timeouts``, ``max_memory``, ``step_resources``: bounds the
execution engine puts on each segment's build, and what it holds on a cluster.
Durations are seconds or strings like ``90s``/``2h``; sizes are bytes or strings like
``4G``. Step names are the pipeline's (by short name)."""

from __future__ import annotations

import math
import re
from typing import Any

from ..errors import did_you_mean
from ..registry import Registry
from ..units import parse_duration, parse_memory_limit
from .report import FileReport, MergedReport, Reporter, typename
from .space import StepSlot, pipeline_step, pipeline_steps


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
        return parse_memory_limit(value)
    except (ValueError, OverflowError) as exc:
        raise report.error(("max_memory",), str(exc)[:200]) from None


#: The resource that is also the memory limit of a segment's build (bytes).
MEMORY = "memory"
#: Resources pytest-brainsmith itself asks for; a close misspelling is warned about.
KNOWN_RESOURCES = (MEMORY, "vivado", "vitis_hls")
#: What Dask's ``--resources "NAME=AMOUNT,..."`` can declare.
_RESOURCE_NAME = re.compile(r"^[A-Za-z_][\w.-]*$")


def resolve_step_timeouts(
    raw: dict[Any, Any] | None, slots: list[StepSlot], registry: Registry, report: MergedReport
) -> dict[str, float]:
    """Step name -> seconds, keyed by the step's short name; every step must be in
    the pipeline (``finn:streamline`` and ``step_streamline`` name ``streamline``)."""
    in_pipeline = pipeline_steps(slots)
    result: dict[str, float] = {}
    written_by: dict[str, FileReport] = {}  # who set each step's timeout
    for name, value in (raw or {}).items():
        key = ("step_timeouts", name)
        step = pipeline_step(name, key, in_pipeline, registry, report)
        if step in written_by and written_by[step] is report.at(key):
            raise report.error(key, f"step {step!r} is given a timeout twice")
        written_by[step] = report.at(key)  # a child's spelling overrides its parent's
        result[step] = _duration(value, key, report)
    return result


def resolve_step_resources(
    raw: dict[Any, Any] | None, slots: list[StepSlot], registry: Registry, report: MergedReport
) -> dict[str, dict[str, float]]:
    """Step short name -> the worker resources its build holds on a Dask cluster
    (``{vivado: 1, memory: 16G}``). ``memory`` is a size, in bytes here: it is also the
    memory limit of the segments that run the step. An amount of 0 asks for none of
    it (to drop an inherited or the ini's)."""
    in_pipeline = pipeline_steps(slots)
    result: dict[str, dict[str, float]] = {}
    written_by: dict[str, FileReport] = {}
    for name, asked in (raw or {}).items():
        key = ("step_resources", name)
        step = pipeline_step(name, key, in_pipeline, registry, report)
        if step in written_by and written_by[step] is report.at(key):
            raise report.error(key, f"step {step!r} is given resources twice")
        written_by[step] = report.at(key)
        if not isinstance(asked, dict):  # check_file saw each file's; this is the merge's
            raise report.error(
                key, f"expected a mapping of resource: amount, got {typename(asked)}"
            )
        amounts = result.setdefault(step, {})
        for resource, value in asked.items():
            amounts[_resource_name(resource, (*key, resource), report)] = resource_amount(
                resource, value, (*key, resource), report
            )
    return result


def _resource_name(name: Any, key: tuple[Any, ...], report: Reporter) -> str:
    if not isinstance(name, str) or not _RESOURCE_NAME.match(name):
        raise report.error(
            key,
            f"expected a resource name (letters, digits, _ . -) such as vivado or memory, "
            f"got {str(name)[:60]!r}",
        )
    if name not in KNOWN_RESOURCES:
        hint = did_you_mean(name, KNOWN_RESOURCES)
        if hint:
            report.warn(
                key,
                "not a resource pytest-brainsmith asks for itself; Dask workers must "
                "declare it as written",
                hint,
            )
    return name


def resource_amount(name: str, value: Any, key: tuple[Any, ...], report: Reporter) -> float:
    """How much of resource ``name`` is asked for: a size for ``memory`` (bytes), a
    number of at least 0 for any other."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        expected = "a size such as 16G" if name == MEMORY else "a number such as 1"
        raise report.error(key, f"expected {expected}, got {typename(value)}")
    if name == MEMORY:
        if value in (0, "0"):
            return 0.0
        try:
            return float(parse_memory_limit(value))
        except (ValueError, OverflowError) as exc:
            raise report.error(key, str(exc)[:200]) from None
    try:
        amount = float(value)  # a string too: YAML reads 32e9 as one
    except ValueError:
        raise report.error(key, f"expected a number such as 1, got {str(value)[:60]!r}") from None
    if not math.isfinite(amount) or amount < 0:
        raise report.error(key, f"expected a finite number of at least 0, got {value!r}")
    return amount
