"""FINN behind the core's door (``core/toolchain.py``): finn-plus as the compiler.

Everything here is light to import (static catalog data); FINN itself is imported only
by ``prepare`` and by the builds and folding functions that need it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.registry import FINN_NAMESPACE, VITIS_HLS, VIVADO, Registry, Step
from ..core.toolchain import KERNEL_BACKENDS
from . import catalog, cost_model, folding, runner
from . import execute as finn_execute

#: The FINN config field that carries a design's kernel backend choices into FINN (the
#: runner writes it as ``preferred_impl_style`` defaults): a backend choice branches,
#: and keys a cache entry, exactly where FINN reads that field, before specialize_layers.
BACKENDS_READ_AS = "specialize_layers_config_file"

#: FINN steps that cannot run without Xilinx tools (IP generation, simulation, synthesis).
FINN_STEP_NEEDS: dict[str, frozenset[str]] = {
    "hw_ipgen": frozenset({VIVADO, VITIS_HLS}),
    "set_fifo_depths": frozenset({VIVADO}),
    "generate_hardware": frozenset({VIVADO, VITIS_HLS}),
    "create_stitched_ip": frozenset({VIVADO}),
    "measure_rtlsim_performance": frozenset({VIVADO}),
    "out_of_context_synthesis": frozenset({VIVADO}),
    "prepare_synthesis": frozenset({VIVADO}),
    "synthesize_bitfile": frozenset({VIVADO}),
    "vivado_power_estimation": frozenset({VIVADO}),
    "prepare_nodecontainer": frozenset({VIVADO}),
}

#: FINN's steps that write the estimate reports (``build/report/estimate_*.json``).
FINN_ESTIMATE_STEPS = frozenset({"generate_estimate_reports"})


class FinnFolding:
    """FINN's folding facts: its nodes' folding spaces (``folding.py``) and its
    per-node cost model (``cost_model.py``)."""

    attributes = tuple(folding.EXTRA_ATTRIBUTES)
    node_estimates = frozenset(folding.NODE_ESTIMATES)

    def space(self, model: Path, attributes: Mapping[str, Any]) -> Any:
        return folding.folding_space(model, dict(attributes))

    def space_from_json(self, data: Any) -> Any:
        return folding.FoldingSpace.from_json(data)

    def code(self) -> str:
        digest = hashlib.sha256()
        for module in (folding, cost_model):
            digest.update(Path(module.__file__).read_bytes())
        return digest.hexdigest()

    def balanced(self, *args: Any, **kwargs: Any) -> Any:
        return folding.balanced_foldings(*args, **kwargs)

    def cost_table(
        self, model: Path, fpga_part: str, attributes: Mapping[str, Any], **kw: Any
    ) -> Any:
        return cost_model.cost_table(model, fpga_part, dict(attributes), **kw)

    def read(self, model: Path, space: Any) -> Any:
        return folding.read_folding(model, space)

    def write(self, path: Path, chosen: Any) -> Path:
        return folding.write_folding(path, chosen)


class FinnExecution:
    """FINN's models run here: its Python references for HW nodes, widths checked
    (``execute.py``, ``reference.py``)."""

    partition_parent = finn_execute.DATAFLOW_PARENT
    partition_step = "create_dataflow_partition"

    def model_io(self, model: Path) -> Any:
        return finn_execute.io_info(model)

    def is_integer_type(self, datatype: str) -> bool:
        return finn_execute.is_integer_type(datatype)

    def random_inputs(self, model: Path, count: int, seed: int) -> Any:
        return finn_execute.random_inputs(model, count, seed)

    def not_executable(self, model: Path) -> str | None:
        return finn_execute.not_executable(model)

    def execute(self, model: Path, inputs: Any, parent: Path | None = None) -> Any:
        return finn_execute.execute(model, inputs, parent)

    def check(self, model: Path, inputs: Any, parent: Path | None = None) -> dict[str, Any]:
        return finn_execute.check(model, inputs, parent)

    def numerics_digest(self, model: Path, parent: Path | None = None) -> str:
        return finn_execute.numerics_digest(model, parent)

    def convert_input(self, model: Path, target: Path) -> Path:
        return finn_execute.convert_input(model, target)


class FinnToolchain:
    """finn-plus (the version ``catalog`` was generated from)."""

    name = "FINN"
    version = catalog.FINN_VERSION
    namespace = FINN_NAMESPACE
    output_model = runner.OUTPUT_MODEL
    config_fields = catalog.CONFIG_FIELDS
    step_reads = catalog.STEP_READS
    metric_sources = runner.METRIC_SOURCES
    #: every external tool some FINN step needs (a cluster's workers are asked for them)
    tools_needed = frozenset(tool for needs in FINN_STEP_NEEDS.values() for tool in needs)
    #: the module a Dask worker imports at start: FINN with its workarounds
    preload_module = "pytest_brainsmith.finn.dask_preload"
    folding = FinnFolding()
    execution = FinnExecution()

    def registry(self) -> Registry:
        registry = Registry()
        code_id = f"finn-plus=={catalog.FINN_VERSION}"
        for name in catalog.STEPS:
            reads = catalog.STEP_READS.get(name)
            registry._add_step(
                Step(
                    name=name,
                    namespace=FINN_NAMESPACE,
                    reads=None if reads is None else frozenset(reads),
                    needs=FINN_STEP_NEEDS.get(name, frozenset()),
                    code_id=code_id,
                    estimates=name in FINN_ESTIMATE_STEPS,
                )
            )
        for name, backends in catalog.KERNEL_BACKENDS.items():
            registry.register_kernel(name, backends=backends, namespace=FINN_NAMESPACE)
        return registry

    def default_steps(self, output: str) -> list[str]:
        if output == "estimates":
            return list(catalog.ESTIMATE_STEPS)
        steps = list(catalog.DEFAULT_STEPS)
        if output == "rtl":
            steps = steps[: steps.index("create_stitched_ip") + 1]
        return steps

    def field_read(self, config_field: str) -> str:
        return BACKENDS_READ_AS if config_field == KERNEL_BACKENDS else config_field

    def moot_backend_choice(self, model: Path, kernel: str, backends: Sequence[str]) -> str | None:
        from .kernel_presence import moot_backend_choice

        return moot_backend_choice(model, kernel, backends)

    def available_tools(self) -> dict[str, str | None]:
        return runner.available_tools()

    def prepare(self) -> None:
        runner.import_finn()

    def prepared(self) -> bool:
        return runner.finn_imported()

    def checkpoint_name(self, step: Step) -> str:
        return runner.checkpoint_name(step)

    def build_log(self, entry_dir: Path) -> Path:
        return runner.build_log(entry_dir)

    def read_estimates(self, entry_dir: Path) -> dict[str, Any] | None:
        return runner.read_estimates(entry_dir)

    def build_into(self, staged: Path, **kwargs: Any) -> Any:
        return runner.build_into(staged, **kwargs)

    def fpga_part(self, config: Mapping[str, Any]) -> str | None:
        if config.get("fpga_part"):
            return str(config["fpga_part"])
        board = config.get("board")
        if not board:
            return None
        from finn.util.basic import alveo_part_map, pynq_part_map

        return pynq_part_map.get(board) or alveo_part_map.get(board)

    def run_segment(self, **kwargs: Any) -> Any:
        return runner.run_segment(**kwargs)

    def drop_step_models(self, staged: Path, path_steps: list[Step], first: int) -> None:
        runner.drop_step_models(staged, path_steps, first)
