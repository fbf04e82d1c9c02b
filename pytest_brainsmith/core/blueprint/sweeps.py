"""``design_space.finn_config``: FINN config fields swept over alternative values."""

from __future__ import annotations

from typing import Any

from .report import Reporter
from .space import StepSlot
from .validate import check_types


def resolve_sweeps(
    raw: dict[str, list[Any]], config: dict[str, Any], report: Reporter
) -> dict[str, list[Any]]:
    """Check each alternative's type; a swept field drops its fixed value (a sweep
    overrides an inherited fixed value)."""
    sweeps = dict(raw)
    for fname, values in sweeps.items():
        key = ("design_space", "finn_config", fname)
        for i, value in enumerate(values):
            check_types({fname: value}, (*key, i), report, whole_key=True)
        if len({repr(v) for v in values}) != len(values):
            raise report.error(key, "lists the same value twice")
        if fname == "synth_clk_period_ns" and any(v is not None and v <= 0 for v in values):
            raise report.error(key, "expected positive clock periods in ns")
        config.pop(fname, None)
    return sweeps


def check_readers(sweeps: dict[str, list[Any]], slots: list[StepSlot], report: Reporter) -> None:
    """A sweep that no step reads would build identical designs."""
    for fname in sweeps:
        if not any(slot.may_read(fname) for slot in slots):
            raise report.error(
                ("design_space", "finn_config", fname),
                f"no step of the pipeline reads {fname}; every alternative would build the same design",
            )
