"""The compiler the core drives, behind one door.

The core speaks of steps, segments, keys and cache entries. Which config fields a
compiler's step reads, its default pipeline, how a segment is built and where its
reports and checkpoints are: those are the toolchain's. Two facets hang off it, each
for one part of the core: ``folding`` (what a folding search may choose and what it
costs) and ``execution`` (running models for verification). FINN's adapter
(``pytest_brainsmith/finn/toolchain.py``) implements ``Toolchain`` and is plugged in
(``use``) by the package before anything runs; no module of ``core/`` imports FINN or
the adapter (a test checks it, as it checks that ``core/`` imports no pytest).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .registry import Registry, Step

#: Pseudo-field under which a design's kernel backend choices (``MVAU: rtl``) travel in
#: a segment's config; the toolchain says which real field carries them (``field_read``).
KERNEL_BACKENDS = "kernel_backends"


class ToolchainUnavailable(Exception):
    """The compiler cannot be imported here (the machine's fault, not a design's)."""


class FoldingFacts(Protocol):
    """What a folding search needs of the compiler (``core/search/``): the foldings each
    node accepts, the compiler's per-node cost of each, and folding files."""

    #: per-node attributes a folding search may choose besides parallelism
    attributes: tuple[str, ...]
    #: metrics the compiler estimates per node (what balanced foldings can target)
    node_estimates: frozenset[str]

    def space(self, model: Path, attributes: Mapping[str, Any]) -> Any:
        """The foldings the compiler accepts for each node of ``model``."""
        ...

    def space_from_json(self, data: Any) -> Any:
        """A folding space kept as JSON (``to_json``) again."""
        ...

    def code(self) -> str:
        """A digest of the code that derives folding spaces and proposals (what the
        folding search keeps depends on it)."""
        ...

    def balanced(self, *args: Any, **kwargs: Any) -> Any:
        """Foldings that balance the nodes' cycles for a list of targets."""
        ...

    def cost_table(
        self, model: Path, fpga_part: str, attributes: Mapping[str, Any], **kw: Any
    ) -> Any:
        """Every setting each node of ``model`` may take and the compiler's per-node
        estimates of it (cycles, LUT, BRAM_18K, URAM, DSP; the compiler's figure and a
        corrected one), as JSON for ``core/search/solver.py``."""
        ...

    def read(self, model: Path, space: Any) -> Any:
        """The folding a built model carries, in ``space``'s terms."""
        ...

    def write(self, path: Path, folding: Any) -> Path:
        """``folding`` as the compiler's folding config file at ``path``."""
        ...


class ExecutionFacts(Protocol):
    """What verification needs of the compiler (``core/verify/``): running its models
    here in software, with the hardware's widths checked."""

    #: the model beside the checkpoints that runs around a dataflow partition, and the
    #: step that makes it (models after it run inside that parent)
    partition_parent: str
    partition_step: str

    def model_io(self, model: Path) -> Any:
        """(input, output) of a model: each with ``name``, ``shape``, ``datatype``."""
        ...

    def is_integer_type(self, datatype: str) -> bool: ...

    def random_inputs(self, model: Path, count: int, seed: int) -> Any:
        """``count`` inputs drawn with ``seed`` from the model's input range."""
        ...

    def not_executable(self, model: Path) -> str | None:
        """None if the compiler runs the model here in software; else why not."""
        ...

    def execute(self, model: Path, inputs: Any, parent: Path | None = None) -> Any:
        """The model's outputs for each input vector (first axis)."""
        ...

    def check(self, model: Path, inputs: Any, parent: Path | None = None) -> dict[str, Any]:
        """``execute`` and a width check: ``outputs``; ``violations`` (values that do not
        fit the datatype holding them in hardware, each with a ``message``);
        ``values_checked``; ``execution`` (how it ran, e.g. "python reference")."""
        ...

    def numerics_digest(self, model: Path, parent: Path | None = None) -> str:
        """A digest of what ``check`` depends on in the model (not its folding or its
        names): models with equal digests give equal checks."""
        ...

    def convert_input(self, model: Path, target: Path) -> Path:
        """The input model in the compiler's own dialect (FINN: its QONNX-to-FINN
        conversion), written to ``target``: a golden exact for what follows it."""
        ...


class Toolchain(Protocol):
    """What the core needs of a compiler: building segments here; its folding facts
    (``folding``) and its model execution (``execution``) are facets of their own."""

    #: e.g. "FINN"; with ``version``, part of every step's code identity
    name: str
    version: str
    #: the registry namespace of the compiler's own steps (``finn:streamline``)
    namespace: str
    #: the file of a cache entry holding the segment's output model
    output_model: str
    #: the compiler's config fields: name -> {"type", "default", "choices"?}
    config_fields: Mapping[str, Mapping[str, Any]]
    #: the compiler's steps by name -> the config fields each reads (None: unknown)
    step_reads: Mapping[str, Sequence[str] | None]
    #: where the compiler reports each design metric (for messages: "from ...")
    metric_sources: Mapping[str, str]
    #: every external tool some compiler step needs (e.g. vivado)
    tools_needed: frozenset[str]
    #: the module a Dask worker imports when it starts (the compiler, ready to build)
    preload_module: str
    #: the folding search's facet and verification's
    folding: FoldingFacts
    execution: ExecutionFacts

    def registry(self) -> Registry:
        """A registry holding the compiler's own steps and kernels."""
        ...

    def default_steps(self, output: str) -> list[str]:
        """The compiler's pipeline (step names) for an output kind (estimates, rtl, bitfile)."""
        ...

    def field_read(self, config_field: str) -> str:
        """The config field a step must read to see ``config_field`` (``KERNEL_BACKENDS``
        travels in a compiler field of its own)."""
        ...

    def moot_backend_choice(self, model: Path, kernel: str, backends: Sequence[str]) -> str | None:
        """Why choosing among ``backends`` for ``kernel`` can change no design of
        ``model``, where that is known from the model file cheaply (None: it may)."""
        ...

    def available_tools(self) -> dict[str, str | None]:
        """For each external tool (vivado, vitis_hls): None if usable here, else why not."""
        ...

    def prepare(self) -> None:
        """Import the compiler in this process (before forking workers); raises
        ``ToolchainUnavailable``."""
        ...

    def prepared(self) -> bool:
        """The compiler is imported in this process already."""
        ...

    def checkpoint_name(self, step: Step) -> str:
        """The name of the model the compiler saves after ``step``."""
        ...

    def build_log(self, entry_dir: Path) -> Path: ...

    def read_estimates(self, entry_dir: Path) -> dict[str, Any] | None:
        """The compiler's estimates of an entry (None: the segment wrote none)."""
        ...

    def build_into(self, staged: Path, **kwargs: Any) -> Any:
        """Run a segment's steps into ``staged`` (see ``finn/runner.build_into``)."""
        ...

    def run_segment(self, **kwargs: Any) -> Any:
        """Run a segment's steps into an output directory, keeping every checkpoint."""
        ...

    def drop_step_models(self, staged: Path, path_steps: list[Step], first: int) -> None:
        """Remove the models after each step of a segment but its last."""
        ...

    def fpga_part(self, config: Mapping[str, Any]) -> str | None:
        """The device a config targets (its part, else its board's)."""
        ...


_current: Toolchain | None = None
#: called once when no toolchain was plugged in yet (the package sets it)
default_factory: Callable[[], Toolchain] | None = None


def use(toolchain: Toolchain) -> None:
    """Plug ``toolchain`` in for this process."""
    global _current
    _current = toolchain


def current() -> Toolchain:
    """The plugged-in toolchain."""
    global _current
    if _current is None and default_factory is not None:
        _current = default_factory()
    if _current is None:
        raise RuntimeError("pytest-brainsmith: no toolchain plugged in (core.toolchain.use)")
    return _current


def finn_registry() -> Registry:
    """A registry holding the compiler's (FINN's) built-in steps and kernels, from the
    toolchain's static data."""
    return current().registry()
