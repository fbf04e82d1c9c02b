"""Running a model on inputs with FINN's own execution (``finn.core.onnx_exec``).

QONNX models, FINN's streamlined graphs and its generic hardware layers run in
Python. Layers specialized to an HLS or RTL backend run only in FINN's simulators
(cppsim needs Vitis HLS, rtlsim needs Vivado): ``simulator_needed`` says so, and
such a model is not executed here (never faked). After ``create_dataflow_partition``
the network is the parent model (``dataflow_parent.onnx``) with the dataflow
partition inside it: FINN's ``execute_parent`` runs both.

Shapes and datatypes are read with onnx/qonnx only (no FINN import), so blueprint
validation can use them at collection time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Node domains whose nodes execute only in a simulator.
_SIMULATED_DOMAINS = {
    "finn.custom_op.fpgadataflow.hls": "cppsim (Vitis HLS)",
    "finn.custom_op.fpgadataflow.rtl": "rtlsim (Vivado)",
}
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


def simulator_needed(path: Path | str) -> str | None:
    """None if FINN runs the model in Python; else which simulator its layers need."""
    model = _wrapper(path)
    for node in model.graph.node:
        sim = _SIMULATED_DOMAINS.get(node.domain)
        if sim is not None:
            return f"{node.op_type} ({node.name}) runs only in {sim}"
        if node.op_type == "StreamingDataflowPartition":
            from qonnx.custom_op.registry import getCustomOp

            child = getCustomOp(node).get_nodeattr("model")
            if child and Path(child).is_file():
                reason = simulator_needed(child)
                if reason:
                    return reason
    return None


def execute(path: Path | str, inputs: np.ndarray, parent: Path | str | None = None) -> np.ndarray:
    """Outputs of the model at ``path`` for each input vector (first axis), one
    execution per vector as FINN's verify_step does. With ``parent``
    (``dataflow_parent.onnx``) the model is its dataflow partition and the parent runs
    around it. Needs FINN importable (a worker has it; elsewhere it is imported)."""
    from qonnx.transformation.infer_shapes import InferShapes

    from .runner import import_finn

    import_finn()  # FINN's custom ops must be registered with qonnx
    from finn.core.onnx_exec import execute_onnx
    from finn.util.execution import execute_parent

    outputs = []
    if parent is not None:
        top = _wrapper(parent)
        shape = top.get_tensor_shape(top.graph.input[0].name)
        for vector in np.asarray(inputs, dtype=np.float32):
            outputs.append(np.asarray(execute_parent(parent, path, vector.reshape(shape))))
    else:
        model = _wrapper(path)
        if not model.check_all_tensor_shapes_specified():
            model = model.transform(InferShapes())
        in_name, out_name = model.graph.input[0].name, model.graph.output[0].name
        shape = model.get_tensor_shape(in_name)
        for vector in np.asarray(inputs, dtype=np.float32):
            outputs.append(
                np.asarray(execute_onnx(model, {in_name: vector.reshape(shape)})[out_name])
            )
    # one vector per row, without the model's batch axis of 1
    return np.stack([o.reshape(o.shape[1:]) if o.shape[:1] == (1,) else o for o in outputs])
