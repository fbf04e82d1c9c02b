"""``explore:``: how the engine spends its expensive steps. ``pareto`` names the
estimates on which designs compete, ``before`` the step a dominated design does not
reach, ``order`` what "most promising" means when ordering independent work."""

from __future__ import annotations

from typing import Any

from ..errors import RegistryError, did_you_mean
from ..metrics import NAMES as METRICS
from ..registry import Registry
from .report import Reporter, typename
from .space import ExploreSettings, StepSlot

EXPLORE_KEYS = ("pareto", "before", "order")
#: ``order: pareto``: by Pareto rank on the ``pareto`` metrics.
PARETO_ORDER = "pareto"


def _metric(value: Any, key: tuple[Any, ...], report: Reporter) -> str:
    if not isinstance(value, str) or value not in METRICS:
        hint = did_you_mean(str(value), METRICS) if isinstance(value, str) else None
        raise report.error(
            key,
            f"expected an estimate metric, got {value!r}"[:200],
            hint or f"metrics: {', '.join(METRICS)}",
        )
    return value


def resolve_explore(
    raw: dict[Any, Any] | None, slots: list[StepSlot], registry: Registry, report: Reporter
) -> ExploreSettings | None:
    if not raw:
        return None
    for name in raw:
        if name not in EXPLORE_KEYS:
            raise report.error(
                ("explore", name),
                "unknown key",
                did_you_mean(str(name), EXPLORE_KEYS) or f"allowed keys: {', '.join(EXPLORE_KEYS)}",
            )
    pareto: tuple[str, ...] = ()
    if raw.get("pareto") is not None:
        value = raw["pareto"]
        if not isinstance(value, list) or not value:
            raise report.error(
                ("explore", "pareto"),
                f"expected a non-empty list of estimate metrics, got {typename(value)}",
                "e.g. [LUT, estimated_throughput_fps]",
            )
        pareto = tuple(_metric(m, ("explore", "pareto", i), report) for i, m in enumerate(value))
        if len(set(pareto)) != len(pareto):
            raise report.error(("explore", "pareto"), "lists the same metric twice")
    before, position = _before(raw.get("before"), pareto, slots, registry, report)
    order = raw.get("order")
    if order is not None:
        if order == PARETO_ORDER:
            if not pareto:
                raise report.error(
                    ("explore", "order"), "order: pareto needs explore.pareto (its metrics)"
                )
        else:
            order = _metric(order, ("explore", "order"), report)
    elif pareto:
        order = PARETO_ORDER
    return ExploreSettings(pareto=pareto, before=before, before_slot=position, order=order)


def _before(
    value: Any,
    pareto: tuple[str, ...],
    slots: list[StepSlot],
    registry: Registry,
    report: Reporter,
) -> tuple[str | None, int | None]:
    """The step a dominated design stops before, and its slot in the pipeline; some
    step before it must write FINN's estimate reports (they are what is compared)."""
    key = ("explore", "before")
    if value is None:
        if pareto:
            raise report.error(
                ("explore",),
                "explore.pareto needs 'before: STEP', the step dominated designs do not reach",
                "e.g. before: hw_codegen",
            )
        return None, None
    if not pareto:
        raise report.error(key, "'before' is where the Pareto gate stops designs: add 'pareto'")
    names = sorted({s.name for slot in slots for s in slot.options if s is not None})
    step = None
    if isinstance(value, str):
        try:
            step = registry.step(value)
        except RegistryError:
            step = None
    position = next(
        (
            i
            for i, slot in enumerate(slots)
            if step is not None
            and any(s is not None and s.qualified == step.qualified for s in slot.options)
        ),
        None,
    )
    if step is None or position is None:
        raise report.error(
            key,
            f"{value!r} is not a step of the pipeline"[:200],
            did_you_mean(str(value).split(":")[-1].removeprefix("step_"), names)
            or f"steps: {', '.join(names)}",
        )
    if not any(s is not None and s.estimates for slot in slots[:position] for s in slot.options):
        raise report.error(
            key,
            f"no step before {step.name} writes FINN's estimate reports, so there is "
            "nothing to compare designs on",
            "put generate_estimate_reports (or a step registered with estimates=True) before it",
        )
    return step.name, position
