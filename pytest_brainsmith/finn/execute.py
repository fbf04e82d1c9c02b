"""Running a model on inputs: FINN's Python references, many vectors at a time.

QONNX models, FINN's streamlined graphs and its generic hardware layers run in Python;
layers specialized to an HLS or RTL backend run as the generic HW op they specialize
(``reference.py``: FINN's own numpy reference, never cppsim or rtlsim, and the record
says so). After ``create_dataflow_partition`` the network is the parent model
(``dataflow_parent.onnx``) with the dataflow partition inside it, as FINN's
``execute_parent`` runs them. ``check`` also checks every value against the width the
hardware gives it.

Shapes and datatypes are read with onnx/qonnx only (no FINN import), so blueprint
validation can use them at collection time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: The model FINN's create_dataflow_partition writes next to its checkpoints.
DATAFLOW_PARENT = "dataflow_parent.onnx"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    datatype: str  # qonnx DataType name, FLOAT32 when not annotated


def _wrapper(path: Path | str) -> Any:
    from qonnx.core.modelwrapper import ModelWrapper

    return ModelWrapper(str(path))


def io_info(path: Path | str) -> tuple[TensorInfo, TensorInfo]:
    """The model's (first) input and output: name, shape, datatype annotation."""
    model = _wrapper(path)
    found = []
    for tensor in (model.graph.input[0], model.graph.output[0]):
        shape = model.get_tensor_shape(tensor.name) or ()
        found.append(
            TensorInfo(
                tensor.name,
                tuple(int(d) for d in shape),
                model.get_tensor_datatype(tensor.name).name,
            )
        )
    return found[0], found[1]


def random_inputs(path: Path | str, count: int, seed: int) -> np.ndarray:
    """``count`` inputs for the model, drawn with ``seed`` from its input's quantized
    range: every value of an integer/bipolar datatype annotation, equally likely; an
    unannotated float input is read as an 8-bit image scaled to [0, 1] (k/255), as
    FINN's own examples feed MNIST and CIFAR-10."""
    from qonnx.core.datatype import DataType

    info = io_info(path)[0]
    rng = np.random.default_rng(seed)
    shape = (count, *info.shape[1:])
    dtype = DataType[info.datatype]
    if dtype.is_integer():
        values = rng.integers(int(dtype.min()), int(dtype.max()), size=shape, endpoint=True)
        if info.datatype == "BIPOLAR":
            values = np.where(values > 0, 1, -1)
        return values.astype(np.float32)
    return (rng.integers(0, 255, size=shape, endpoint=True) / 255.0).astype(np.float32)


def is_integer_type(datatype: str) -> bool:
    """Whether a qonnx DataType name is an integer type (exact comparison)."""
    from qonnx.core.datatype import DataType

    try:
        return bool(DataType[datatype].is_integer())
    except KeyError:
        return False


def not_executable(path: Path | str) -> str | None:
    """None if the model runs here in Python; else why not (a specialized layer without a
    generic op: it runs only in a simulator)."""
    from . import reference

    return reference.not_executable(path)


def execute(path: Path | str, inputs: np.ndarray, parent: Path | str | None = None) -> np.ndarray:
    """Outputs of the model at ``path`` for each input vector (first axis), one vector
    per row. With ``parent`` (``dataflow_parent.onnx``) the model is its dataflow
    partition and the parent runs around it. Needs FINN importable (a worker has it;
    elsewhere it is imported)."""
    from . import reference

    return reference.prepare(path, parent, check=False).run(inputs).outputs


def convert_input(path: Path | str, target: Path | str) -> Path:
    """The model in FINN's own dialect, as its ``step_qonnx_to_finn`` makes it (QONNX
    cleanup, then Quant nodes to MultiThreshold at FINN's default bit-width limit), written
    to ``target``: the golden for ``verify: {golden: converted}``."""
    import random

    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    from .runner import import_finn

    import_finn()
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    from finn.transformation.qonnx.quant_act_to_multithreshold import (
        default_filter_function_generator,
    )

    state = random.getstate()
    random.seed("convert_input")  # qonnx names new tensors with Python's random
    try:
        model = cleanup_model(ModelWrapper(str(path)))
        model = model.transform(
            ConvertQONNXtoFINN(filter_function=default_filter_function_generator())
        )
    finally:
        random.setstate(state)
    model.save(str(target))
    return Path(target)


def numerics_digest(path: Path | str, parent: Path | str | None = None) -> str:
    """What ``check`` depends on in the model, as a digest (``reference.numerics_digest``)."""
    from . import reference

    return reference.numerics_digest(path, parent)


def check(path: Path | str, inputs: np.ndarray, parent: Path | str | None = None) -> dict[str, Any]:
    """``execute`` plus the width check: ``outputs``, ``violations`` (each a dict with its
    ``message``), ``values_checked`` and which execution ran (``reference.describe``)."""
    from . import reference

    prepared = reference.prepare(path, parent)
    result = prepared.run(inputs)
    return {
        "outputs": result.outputs,
        "violations": [v.as_dict() for v in result.violations],
        "values_checked": result.values_checked,
        **reference.describe(prepared),
    }
