"""``design_space.folding``: a search over per-layer foldings: FINN's cost model solved
exactly (``search: exact``, the default) or sampled with Optuna (``search: optuna``).

    design_space:
      folding:
        search: exact            # exact | optuna
        trials: 16               # designs built on FINN (exact: of the solved front)
        objectives: [min LUT, max estimated_throughput_fps]   # exact: min LUT, BRAM_18K,
                                 # URAM, DSP or part (the largest fraction of the part)
        targets: [500, 1800]     # exact: throughputs whose cheapest design is built first
        estimates: corrected     # exact: corrected (FINN's known gaps charged) | finn
        seed: 0                  # optuna: same seed, same trials
        sampler: nsga2           # optuna: nsga2 | tpe | random
        batch: 16                # trials asked (built) together
        attributes: {ram_style: [auto, distributed]}
        warm_start: true         # start from FINN's foldings of the blueprint's designs

The search space is read from the model after the steps every trial shares (those
before ``target_fps_parallelization``, else before ``apply_folding_config``); a trial
runs from there to the end of the pipeline with its folding as ``folding_config_file``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ..errors import did_you_mean
from ..metrics import NAMES as METRICS
from ..toolchain import KERNEL_BACKENDS
from ..toolchain import current as toolchain
from .report import Reporter, typename
from .space import DesignSpace, FoldingSearchSettings, StepSlot

FOLDING_KEYS = (
    "search",
    "trials",
    "objectives",
    "seed",
    "sampler",
    "batch",
    "attributes",
    "warm_start",
    "targets",
    "estimates",
)
SEARCHES = ("exact", "optuna")
SAMPLERS = ("nsga2", "tpe", "random")
#: what the exact search can minimise at each throughput (``part``: the largest fraction
#: of the part's LUT, BRAM_18K, URAM and DSP a design uses)
EXACT_COSTS = ("LUT", "BRAM_18K", "URAM", "DSP", "part")
THROUGHPUT = "estimated_throughput_fps"
ESTIMATES = ("corrected", "finn")
DIRECTIONS = {"min": "minimize", "max": "maximize"}
#: the steps a trial starts at: the first of these in the pipeline
FOLDING_STEPS = ("target_fps_parallelization", "apply_folding_config")
#: the Python package the search needs (a dependency of this feature only)
OPTUNA_MISSING = (
    "the folding search needs Optuna, which is not installed: "
    "pip install 'pytest-brainsmith[search]' (or pip install optuna)"
)
SCIPY_MISSING = (
    "the exact folding search needs scipy, which is not installed: "
    "pip install 'pytest-brainsmith[search]' (or pip install scipy)"
)
MAX_TRIALS = 100_000


def _int(raw: dict[Any, Any], name: str, default: int, low: int, report: Reporter) -> int:
    value = raw.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= MAX_TRIALS:
        raise report.error(
            ("design_space", "folding", name),
            f"expected an integer from {low} to {MAX_TRIALS:,}, got {value!r}"[:200],
        )
    return value


def _objective(value: Any, index: int, report: Reporter, exact: bool) -> tuple[str, str]:
    key = ("design_space", "folding", "objectives", index)
    parts = value.split() if isinstance(value, str) else []
    if len(parts) != 2 or parts[0] not in DIRECTIONS:
        raise report.error(
            key,
            f"expected 'min METRIC' or 'max METRIC', got {value!r}"[:200],
            "e.g. objectives: [min LUT, max estimated_throughput_fps]",
        )
    if exact:
        if (parts[0] == "min" and parts[1] in EXACT_COSTS) or value.split() == ["max", THROUGHPUT]:
            return DIRECTIONS[parts[0]], parts[1]
        raise report.error(
            key,
            f"the exact search minimises a cost at each throughput: 'min' one of "
            f"{', '.join(EXACT_COSTS)}, or 'max {THROUGHPUT}'; got {value!r}"[:300],
            did_you_mean(parts[1], EXACT_COSTS)
            or "search: optuna samples foldings on any estimate metrics",
        )
    if parts[1] not in METRICS:
        raise report.error(
            key,
            f"{parts[1]!r} is not an estimate metric"[:200],
            did_you_mean(parts[1], METRICS) or f"metrics: {', '.join(METRICS)}",
        )
    return DIRECTIONS[parts[0]], parts[1]


def _attributes(value: Any, report: Reporter) -> dict[str, tuple[str, ...]]:
    key = ("design_space", "folding", "attributes")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise report.error(key, f"expected a mapping of attribute: [values], got {typename(value)}")
    result: dict[str, tuple[str, ...]] = {}
    for name, values in value.items():
        known = toolchain().folding.attributes
        if name not in known:
            raise report.error(
                (*key, name),
                "not a node attribute the search can set",
                did_you_mean(str(name), known) or f"attributes: {', '.join(known)}",
            )
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) for v in values)
            or len(set(values)) != len(values)
        ):
            raise report.error(
                (*key, name), "expected a non-empty list of distinct values, e.g. [auto, block]"
            )
        result[str(name)] = tuple(values)
    return result


def resolve_folding(
    raw: Any, slots: list[StepSlot], report: Reporter
) -> FoldingSearchSettings | None:
    if raw is None:
        return None
    key = ("design_space", "folding")
    if not isinstance(raw, dict):
        raise report.error(
            key, f"expected a mapping (search, trials, objectives, ...), got {typename(raw)}"
        )
    for name in raw:
        if name not in FOLDING_KEYS:
            raise report.error(
                (*key, name),
                "unknown key",
                did_you_mean(str(name), FOLDING_KEYS) or f"allowed keys: {', '.join(FOLDING_KEYS)}",
            )
    search = raw.get("search", "exact")
    if search not in SEARCHES:
        raise report.error(
            (*key, "search"),
            f"expected one of {', '.join(SEARCHES)}, got {search!r}"[:200],
            did_you_mean(str(search), SEARCHES),
        )
    exact = search == "exact"
    trials = _int(raw, "trials", 100, 1, report)
    batch = _int(raw, "batch", 16, 1, report)
    seed = _int(raw, "seed", 0, 0, report)
    sampler = raw.get("sampler", "nsga2")
    if sampler not in SAMPLERS:
        raise report.error(
            (*key, "sampler"),
            f"expected one of {', '.join(SAMPLERS)}, got {sampler!r}"[:200],
        )
    objectives_raw = raw.get("objectives", ["min LUT", "max estimated_throughput_fps"])
    if not isinstance(objectives_raw, list) or not objectives_raw:
        raise report.error(
            (*key, "objectives"),
            f"expected a list such as [min LUT, max estimated_throughput_fps], "
            f"got {typename(objectives_raw)}",
        )
    objectives = tuple(_objective(v, i, report, exact) for i, v in enumerate(objectives_raw))
    if len({m for _, m in objectives}) != len(objectives):
        raise report.error((*key, "objectives"), "lists the same metric twice")
    if exact and sorted(d for d, _ in objectives) != ["maximize", "minimize"]:
        raise report.error(
            (*key, "objectives"),
            f"the exact search needs one cost to minimise and 'max {THROUGHPUT}'",
            "e.g. objectives: [min LUT, max estimated_throughput_fps]",
        )
    targets = _targets(raw.get("targets"), report)
    estimates = raw.get("estimates", "corrected")
    if estimates not in ESTIMATES:
        raise report.error(
            (*key, "estimates"), f"expected one of {', '.join(ESTIMATES)}, got {estimates!r}"[:200]
        )
    for name in ("targets", "estimates"):
        if name in raw and not exact:
            raise report.error((*key, name), "only the exact search (search: exact) reads it")
    attributes = _attributes(raw.get("attributes"), report)
    warm_start = raw.get("warm_start", True)
    if not isinstance(warm_start, bool):
        raise report.error(
            (*key, "warm_start"), f"expected true or false, got {warm_start!r}"[:200]
        )
    start = _start(slots, report)
    if not exact and importlib.util.find_spec("optuna") is None:
        raise report.error((*key, "search"), OPTUNA_MISSING)
    if exact and importlib.util.find_spec("scipy") is None:
        raise report.error((*key, "search"), SCIPY_MISSING)
    return FoldingSearchSettings(
        trials=trials,
        objectives=objectives,
        seed=seed,
        sampler=sampler,
        batch=batch,
        attributes=attributes,
        start_slot=start,
        warm_start=warm_start,
        search=search,
        targets=targets,
        estimates=estimates,
    )


def _targets(value: Any, report: Reporter) -> tuple[float, ...]:
    key = ("design_space", "folding", "targets")
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise report.error(
            key,
            f"expected a list of throughputs in frames/s (positive numbers), got {value!r}"[:200],
            "e.g. targets: [500, 1800]",
        )
    return tuple(float(v) for v in value)


def _start(slots: list[StepSlot], report: Reporter) -> int:
    """The slot a trial starts at; after it the pipeline must apply the folding and
    write estimate reports (the objectives are read from them)."""
    key = ("design_space", "folding")

    def position(name: str) -> int | None:
        return next(
            (
                i
                for i, slot in enumerate(slots)
                if any(s is not None and s.name == name and s.is_finn for s in slot.options)
            ),
            None,
        )

    apply = position("apply_folding_config")
    if apply is None:
        raise report.error(
            key,
            "the pipeline has no apply_folding_config step to apply a trial's folding",
            "add FINN's apply_folding_config (and target_fps_parallelization before it)",
        )
    if slots[apply].is_branch:
        raise report.error(key, "apply_folding_config is a branch point: a trial needs it")
    if not any(s is not None and s.estimates for slot in slots[apply:] for s in slot.options):
        raise report.error(
            key,
            "no step after apply_folding_config writes FINN's estimate reports, so a trial "
            "has nothing to be judged on",
            "add generate_estimate_reports after it",
        )
    target = position("target_fps_parallelization")
    return target if target is not None and target < apply else apply


def check_trial_choices(space: DesignSpace, report: Reporter) -> None:
    """A trial runs the pipeline from the search's start slot with one config: what
    varies only there or later (a sweep its steps read, a branch point, a kernel
    backend) would be silently fixed for the trials, so it is an error. ``target_fps``
    and what only ``target_fps_parallelization`` reads do not matter (a trial has no
    ``target_fps``: that step does nothing)."""
    folding = space.folding
    if folding is None:
        return
    start = folding.start_slot
    trial_slots = [
        slot
        for slot in space.slots[start:]
        if not any(s is not None and s.name == "target_fps_parallelization" for s in slot.options)
    ]
    key = ("design_space", "folding")

    def first_reader(field: str) -> int | None:
        return next((i for i, slot in enumerate(space.slots) if slot.may_read(field)), None)

    for name, values in space.sweeps.items():
        if len(values) < 2 or not any(
            slot.may_read(toolchain().field_read(name)) for slot in trial_slots
        ):
            continue
        position = first_reader(name)
        if position is not None and position >= start:
            raise report.error(
                ("design_space", "finn_config", name),
                f"varies where the folding search's trials start (a trial has one {name}): "
                "fix it in finn_config, or give it its own blueprint",
            )
    for slot in space.slots[start:]:
        if slot.is_branch:
            raise report.error(
                (*key,),
                f"the branch point {slot.branch_name!r} lies in the steps the trials run "
                "(a trial follows one pipeline): move it before the folding steps or drop it",
            )
    position = first_reader(toolchain().field_read(KERNEL_BACKENDS))
    if (
        position is not None
        and position >= start
        and any(len(k.backends) > 1 for k in space.kernels)
    ):
        raise report.error(
            ("design_space", "kernels"), "kernel backends vary where the trials start"
        )
