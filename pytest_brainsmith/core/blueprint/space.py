"""The result of loading a blueprint: a DesignSpace, every name resolved."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BlueprintWarning, RegistryError, did_you_mean
from ..expectations import Expectation
from ..registry import Kernel, Registry, Step
from ..toolchain import current as toolchain

if TYPE_CHECKING:
    from ..regression.tolerances import RegressSettings
    from .report import Reporter

DEFAULT_MAX_DESIGNS = 100_000
OUTPUTS = ("estimates", "rtl", "bitfile")
#: generate_outputs per output kind (``finn_config.generate_outputs`` overrides it).
OUTPUT_PRODUCTS = {
    "estimates": ["estimate_reports"],
    "rtl": ["estimate_reports", "stitched_ip"],
    "bitfile": ["estimate_reports", "stitched_ip", "bitfile", "pynq_driver", "deployment_package"],
}
#: The name under which a blueprint's model travels in a design's choices.
MODEL_CHOICE = "model"


def default_steps(output: str) -> list[str]:
    """FINN's own pipeline for an output kind (used when a blueprint lists no steps),
    by qualified name: a project step with the same short name does not replace it."""
    compiler = toolchain()
    return [f"{compiler.namespace}:{name}" for name in compiler.default_steps(output)]


@dataclass(frozen=True)
class StepSlot:
    """One position in the pipeline: a fixed step, or a branch point over alternatives
    (None = skip this step)."""

    options: tuple[Step | None, ...]
    key: str  # where it came from, for messages
    name: str = ""  # a branch point as a design's choices name it (see branch_name)

    @property
    def is_branch(self) -> bool:
        return len(self.options) > 1

    @property
    def branch_name(self) -> str:
        """How a design's choices name this branch point: its steps, ``a|b`` (and
        ``#2`` for the second branch point over the same steps)."""
        return self.name or "|".join(s.name for s in self.options if s is not None)

    @property
    def choice_values(self) -> list[str]:
        return [s.name if s is not None else "skip" for s in self.options]

    def may_read(self, config_field: str) -> bool:
        return any(s is not None and s.may_read(config_field) for s in self.options)


@dataclass(frozen=True)
class KernelChoice:
    """A kernel and the backends to explore for it (empty: FINN's default choice)."""

    kernel: Kernel
    backends: tuple[str, ...]


@dataclass(frozen=True)
class ModelChoice:
    """One input model; with several, a design's choices name it (``model: tfc``)."""

    name: str
    path: Path


@dataclass(frozen=True)
class ExploreSettings:
    """``explore:``: the Pareto gate and the best-first order (see core/gates.py)."""

    pareto: tuple[str, ...] = ()  # metrics designs compete on
    before: str | None = None  # the step a dominated design does not reach (short name)
    before_slot: int | None = None  # its slot in the pipeline (first occurrence)
    order: str | None = None  # a metric, or "pareto" (Pareto rank): most promising first


@dataclass(frozen=True)
class FoldingSearchSettings:
    """``design_space.folding``: a search over foldings (see core/search/)."""

    trials: int
    objectives: tuple[tuple[str, str], ...]  # (minimize|maximize, metric)
    seed: int
    sampler: str
    batch: int  # trials asked together: results do not depend on the number of workers
    attributes: dict[str, tuple[str, ...]]
    start_slot: int  # the slot where a trial's own steps begin
    #: the first generation holds FINN's foldings of the designs below the shared steps
    warm_start: bool = True
    #: ``exact``: FINN's cost model solved (core/search/solver.py); ``optuna``: sampled
    search: str = "exact"
    #: throughputs (frames/s) whose cheapest design the exact search builds first
    targets: tuple[float, ...] = ()
    #: the figures the exact search minimises: ``corrected`` (FINN's estimates with their
    #: known gaps charged) or ``finn`` (FINN's own)
    estimates: str = "corrected"

    def key(self) -> dict[str, object]:
        """What a study is keyed by (``trials`` is not: raising it continues a study)."""
        key: dict[str, object] = {
            "objectives": [list(o) for o in self.objectives],
            "seed": self.seed,
            "sampler": self.sampler,
            "batch": self.batch,
            "attributes": {k: list(v) for k, v in sorted(self.attributes.items())},
            "warm_start": self.warm_start,
        }
        if self.search != "optuna":  # (an Optuna study's key stays what it was)
            key.update(search=self.search, targets=list(self.targets), estimates=self.estimates)
        return key


@dataclass(frozen=True)
class VerifySettings:
    """A blueprint's ``verify:`` after validation (step names are short names)."""

    count: int  # random inputs to draw, when inputs_file is None
    seed: int
    inputs_file: Path | None = None
    expected_file: Path | None = None
    after: tuple[str, ...] | None = None  # None: every step
    golden: str = "model"  # one of verify.py's GOLDENS
    atol: float | None = None  # None: exact for integer outputs, else FINN's default
    rtol: float | None = None


@dataclass
class DesignSpace:
    """A blueprint after inheritance, expansion and name resolution."""

    path: Path
    name: str
    description: str
    model: Path  # the first (usually only) model; see models
    output: str
    finn_config: dict[str, Any]  # fixed DataflowBuildConfig fields (paths resolved)
    slots: list[StepSlot]
    kernels: list[KernelChoice]
    sweeps: dict[str, list[Any]]  # field -> alternative values
    expect: list[Expectation]
    registry: Registry = field(repr=False)
    sources: list[Path] = field(default_factory=list)  # the file and its extends parents
    models: list[ModelChoice] = field(default_factory=list)  # more than one: a branch point
    outputs: list[str] | None = None  # finn_config.generate_outputs, if given
    timeout: float | None = None  # seconds per segment build
    step_timeouts: dict[str, float] = field(default_factory=dict)  # step short name -> s
    max_memory: int | None = None  # bytes
    #: step short name -> worker resources its build holds ({"vivado": 1, "memory": bytes})
    step_resources: dict[str, dict[str, float]] = field(default_factory=dict)
    explore: ExploreSettings | None = None
    folding: FoldingSearchSettings | None = None
    verify: VerifySettings | None = None  # verify: (core/verify/)
    regress: RegressSettings | None = None  # regress: (core/regression/)
    warnings: list[BlueprintWarning] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.models:
            self.models = [ModelChoice(self.model.stem, self.model)]

    @property
    def generate_outputs(self) -> list[str]:
        return list(self.outputs) if self.outputs is not None else OUTPUT_PRODUCTS[self.output]

    def variation_points(self) -> dict[str, list[Any]]:
        """Each branch point as a design's choices name it, with its alternatives."""
        points: dict[str, list[Any]] = {}
        if len(self.models) > 1:
            points[MODEL_CHOICE] = [m.name for m in self.models]
        for choice in self.kernels:
            if len(choice.backends) > 1:
                points[choice.kernel.name] = list(choice.backends)
        for fname, values in self.sweeps.items():
            if len(values) > 1:
                points[fname] = list(values)
        for slot in self.slots:
            if slot.is_branch:
                points[slot.branch_name] = slot.choice_values
        return points

    def unknown_choices(self, names: Iterable[str], also: Iterable[str] = ()) -> str | None:
        """Why ``names`` (a ``where=``'s keys) do not all name branch points, with a
        did-you-mean for each that does not (``also``: further names accepted); None if
        they all do."""
        points = list(self.variation_points())
        known = [*points, *also]
        problems = []
        for name in sorted(set(map(str, names)) - set(known)):
            hint = did_you_mean(name, known)
            if hint:
                problems.append(f"{name!r} is not a branch point; {hint}")
            elif name in toolchain().config_fields:
                problems.append(f"{name!r} is not swept in this blueprint (a fixed value)")
            else:
                problems.append(f"{name!r} is not a branch point")
        if not problems:
            return None
        return "; ".join(problems) + f" (branch points: {', '.join(points) or 'none'})"

    def count_designs(self) -> int:
        count = len(self.models)
        for slot in self.slots:
            count *= len(slot.options)
        for choice in self.kernels:
            count *= max(1, len(choice.backends))
        for values in self.sweeps.values():
            count *= len(values)
        return count


def pipeline_steps(slots: list[StepSlot]) -> dict[str, str]:
    """Qualified name -> short name of every step the pipeline may run."""
    return {s.qualified: s.name for slot in slots for s in slot.options if s is not None}


def pipeline_step(
    name: Any,
    key: tuple[Any, ...],
    in_pipeline: dict[str, str],
    registry: Registry,
    report: Reporter,
) -> str:
    """The short name of the pipeline's step ``name`` (``finn:streamline`` and
    ``step_streamline`` name ``streamline``); an error if it is not in the pipeline."""
    step = None
    if isinstance(name, str):
        try:
            step = registry.step(name)
        except RegistryError:
            step = None
    if step is None or step.qualified not in in_pipeline:
        names = sorted(set(in_pipeline.values()))
        raise report.error(
            key,
            f"{name!r} is not a step of the pipeline"[:200],
            did_you_mean(str(name).split(":")[-1].removeprefix("step_"), names)
            or f"steps: {', '.join(names)}",
        )
    return step.name
