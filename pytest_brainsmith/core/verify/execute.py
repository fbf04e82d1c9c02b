"""The Python API's ``design.execute(inputs)``: a built design's model run here.

Its final model, or the one after a named step, executed with the toolchain in this
process, unless the same model ran on the same inputs before (the execution memo).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..cache.execution_memo import ExecutionMemo
from ..toolchain import current as toolchain
from .steps import simulators


def execute_design(design: Any, inputs: Any, after: str | None = None) -> Any:
    """Outputs of a built design's model (its final one, or the one after the step
    ``after``: a short name such as ``streamline`` or FINN's ``step_streamline``) for
    ``inputs``, one vector per row. Runs here, in this process, with FINN's execution,
    unless the same model was executed on the same inputs before (``execution_memo.py``)."""

    compiler = toolchain()
    chain = design.leaf.chain()
    outcomes = design.segments
    if any(not o.ok for o in outcomes):
        raise RuntimeError(f"the design was not built: {design.reason}")
    located: tuple[Any, Any, int] | None = None
    parent: Path | None = None
    for segment, outcome in zip(chain, outcomes, strict=True):
        for index, step in enumerate(segment.steps):
            name = compiler.checkpoint_name(step)
            if outcome.entry and step.is_finn and step.name == compiler.execution.partition_step:
                kept = Path(outcome.entry) / "build" / "intermediate_models"
                parent = kept / compiler.execution.partition_parent
            if after is not None and after in (step.name, step.qualified, name):
                located = (segment, outcome, index)
                break
        if located is not None:
            break
    if after is None:
        model = Path(str(design.final_model))
    elif located is None:
        steps = [s.name for seg in chain for s in seg.steps]
        raise ValueError(f"{after!r} is not a step of this design; its steps: {', '.join(steps)}")
    else:
        segment, outcome, index = located
        entry = Path(outcome.entry)
        if index == len(segment.steps) - 1:
            model = entry / compiler.output_model
        else:
            model = (
                entry
                / "build"
                / "intermediate_models"
                / f"{compiler.checkpoint_name(segment.steps[index])}.onnx"
            )
            if not model.is_file():
                raise ValueError(
                    f"the model after {after!r} was not kept (the cache keeps each segment's "
                    "last model); run with --brainsmith-keep-step-models to keep every step's"
                )
    if parent is not None and not parent.is_file():
        parent = None
    return execute_model(design.executions, model, inputs, parent)


def execute_model(
    memo: ExecutionMemo | None, model: Path, inputs: Any, parent: Path | None = None
) -> Any:
    """Outputs of ``model`` (inside ``parent``, for a dataflow partition) on ``inputs``,
    one vector per row: executed with FINN here, or read from ``memo`` when this model
    ran on these inputs before."""
    import numpy as np  # lazy: numpy comes with the toolchain (no core dependency)

    vectors = np.asarray(inputs, dtype=np.float32)

    compiler = toolchain()

    def compute() -> Any:
        reason = compiler.execution.not_executable(model)
        if reason is not None:
            why = f"{reason}; {simulators(compiler)}"
            raise RuntimeError(f"cannot execute the model here: {why}")
        return compiler.execution.execute(model, vectors, parent)

    if memo is None:
        return compute()
    return memo.run([model] + ([parent] if parent else []), vectors, compute)
