"""Executing a model with FINN's Python references: prepared once, many vectors at a time,
every value checked against the width the hardware gives it.

FINN's own Python execution (``execute_onnx``) runs one vector at a time and redoes its
set-up for each (every initializer converted from protobuf, one onnxruntime session built
per standard node and call): milliseconds per vector even for TFC. Here a model is
prepared once (constants converted, sessions built, custom ops instantiated) and then
runs a batch of vectors through each node:

- **Specialized HW layers** (``MVAU_hls``, ``Thresholding_rtl``, ``Reshape_rtl``, ...) run
  as their generic HW op (``MVAU``, ``Thresholding``, ``Reshape``): the model is copied with
  each such node's op type and domain switched to the generic op it specializes (same
  attributes, weights and thresholds), whose ``execute_node`` is FINN's numpy reference.
  That is what FINN's ``_rtl`` variants do themselves outside rtlsim; the ``_hls`` variants
  accept only cppsim/rtlsim, which need Vitis HLS / Vivado. This is never cppsim or rtlsim
  and the record says so (``Execution.describe``). A specialized layer without a generic
  op (``IODMA_hls``, ``TLastMarker_hls``) cannot be executed here (``NotExecutable``).
- **Batching**: a node whose reference computes each vector independently runs once on
  the whole batch (MVAU with its ``numInputVectors`` scaled; elementwise, thresholding,
  pooling and onnxruntime's standard ops as they are). The first time, the first and last
  vectors are also run alone and compared, so an op that mixes vectors falls back to one
  vector at a time. Ops known not to batch (``ConvolutionInputGenerator``'s Im2Col, VVAU,
  FINN's Reshape) always run one vector at a time, with their set-up still done once.
- **Width check**: Python executes with unbounded floats, so a datatype narrower than its
  values would wrap in hardware unnoticed. Every value is checked against the FINN
  DataType that holds it: each tensor's annotation (inputs, weights, thresholds, outputs),
  each HW layer's input/weight/output datatype attributes, and each MVAU/VVAU
  accumulator against ``accDataType`` (the same op with its activation off gives the
  pre-activation sums). Violations are collected, not raised.
- Like qonnx's execution, integer-annotated tensors are rounded when float error left
  them off an integer (``sanitize_quant_values``), so outputs are FINN's bit for bit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Domains of FINN's specialized layers, and the domain of the generic ops they specialize.
SPECIALIZED = {
    "finn.custom_op.fpgadataflow.hls": "cppsim (Vitis HLS)",
    "finn.custom_op.fpgadataflow.rtl": "rtlsim (Vivado)",
}
GENERIC = "finn.custom_op.fpgadataflow"
#: Ops whose reference handles one vector only (hard-coded batch of 1, or Im2Col's
#: layout for N > 1): never tried batched.
ONE_AT_A_TIME = {
    "ConvolutionInputGenerator",
    "Im2Col",
    "VVAU",
    "Reshape",  # FINN's HW Reshape: np.reshape to its (1, ...) shape
    "StreamingDataWidthConverter",
    "FMPadding_Pixel",
    "StreamingDataflowPartition",
}
#: Bytes of live tensors a batch may hold (vectors are run in chunks below it).
BATCH_BYTES = 512 * 2**20


class NotExecutable(Exception):
    """The model holds a layer that has no Python reference here."""


@dataclass
class Violation:
    """Values that do not fit the datatype that holds them."""

    node: str  # the node (or "" for a graph input / initializer)
    what: str  # "accumulator", "output", "input 0", "weights", "tensor <name>"
    datatype: str
    low: float  # the smallest and largest value seen
    high: float
    bounds: tuple[float, float]
    holder: str = "annotated"  # the attribute that sets the datatype, or its annotation
    non_integer: bool = False
    count: int = 0  # values outside

    def message(self) -> str:
        """``MVAU_hls_2 accumulator reaches 70,113, accDataType INT16 holds [-32768, 32767]``."""
        lo, hi = self.bounds
        where = f"{self.node} {self.what}" if self.node else self.what
        if self.non_integer and self.low >= lo and self.high <= hi:
            return f"{where} holds non-integer values, {self.holder} {self.datatype} holds integers"
        reach = self.high if self.high > hi else self.low
        return (
            f"{where} reaches {_number(reach)}, {self.holder} {self.datatype} holds "
            f"[{_number(lo)}, {_number(hi)}]"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "what": self.what,
            "datatype": self.datatype,
            "min": _plain(self.low),
            "max": _plain(self.high),
            "holds": [_plain(self.bounds[0]), _plain(self.bounds[1])],
            "values_outside": self.count,
            "message": self.message(),
        }


def _plain(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


@dataclass
class Result:
    """Outputs of a batch, one vector per row, and the width check over it."""

    outputs: np.ndarray
    violations: list[Violation] = field(default_factory=list)
    values_checked: int = 0  # tensors and node ports whose values were checked


# -- preparing a model --------------------------------------------------------------------
def _finn() -> None:
    from .runner import import_finn

    import_finn()  # FINN's custom ops registered with qonnx


def generic_op(node: Any) -> str | None:
    """The generic HW op a specialized node specializes (``MVAU_hls`` -> ``MVAU``), from
    FINN's class hierarchy; None when it has none."""
    import finn.custom_op.fpgadataflow as generic
    from qonnx.custom_op.registry import getCustomOp

    cls = type(getCustomOp(node))
    by_class = {c: name for name, c in generic.custom_op.items()}
    for base in cls.__mro__[1:]:
        if base in by_class:
            return by_class[base]
    return None


def switch_to_generic(model: Any) -> dict[str, str]:
    """Switch every specialized node of ``model`` (in place) to its generic HW op;
    returns {specialized op type: generic op type}. Raises ``NotExecutable``."""
    switched: dict[str, str] = {}
    for node in model.graph.node:
        if node.domain not in SPECIALIZED:
            continue
        name = generic_op(node)
        if name is None:
            raise NotExecutable(
                f"{node.op_type} ({node.name}) has no Python reference in FINN; it runs only "
                f"in {SPECIALIZED[node.domain]}"
            )
        switched[node.op_type] = name
        node.op_type, node.domain = name, GENERIC
    return switched


def not_executable(path: Path | str) -> str | None:
    """Why the model at ``path`` (and the partitions it holds) cannot run here, or None."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    _finn()
    model = ModelWrapper(str(path))
    for node in model.graph.node:
        if node.domain in SPECIALIZED and generic_op(node) is None:
            return (
                f"{node.op_type} ({node.name}) has no Python reference in FINN; it runs "
                f"only in {SPECIALIZED[node.domain]}"
            )
        if node.op_type == "StreamingDataflowPartition":
            child = getCustomOp(node).get_nodeattr("model")
            if child and Path(child).is_file():
                reason = not_executable(child)
                if reason:
                    return reason
    return None


class Prepared:
    """A model ready to run batches of vectors (see the module docstring)."""

    def __init__(self, model: Any, *, partition: Path | None = None, check: bool = True):
        from onnx import numpy_helper
        from qonnx.transformation.infer_shapes import InferShapes

        _finn()
        model = copy.deepcopy(model)
        self.switched = switch_to_generic(model)
        if not model.check_all_tensor_shapes_specified():
            model = model.transform(InferShapes())
        self.model = model
        self.check = check
        graph = model.graph
        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.inputs = [t.name for t in graph.input if t.name not in self.constants]
        self.outputs = [t.name for t in graph.output]
        self.shapes: dict[str, tuple[int, ...]] = {}
        for name in model.get_all_tensor_names():
            shape = model.get_tensor_shape(name)
            if shape is not None and name not in self.constants:
                self.shapes[name] = tuple(int(d) for d in shape)
        self.children: dict[str, Prepared] = {}
        self.nodes: list[NodeRun] = []
        for node in graph.node:
            run = NodeRun(self, node, partition)
            if run.dynamic_in or node.op_type == "StreamingDataflowPartition":
                self.nodes.append(run)
            else:  # computed from constants only: once, here
                for name, value in run.constant().items():
                    self.constants[name] = value
                    self.shapes.pop(name, None)
        self.last_use: dict[str, int] = {}
        for index, run in enumerate(self.nodes):
            for name in run.node.input:
                self.last_use[name] = index

    def bytes_per_vector(self) -> int:
        total = sum(int(np.prod(s)) for s in self.shapes.values()) * 4
        return max(total, 1) + sum(c.bytes_per_vector() for c in self.children.values())

    def chunk(self, count: int) -> int:
        return max(1, min(count, BATCH_BYTES // self.bytes_per_vector()))

    def run(self, inputs: np.ndarray) -> Result:
        """Outputs of the first graph output for every vector of ``inputs`` (first axis;
        each vector shaped like the model's input without its batch axis of 1)."""
        inputs = np.asarray(inputs, dtype=np.float32)
        count = len(inputs)
        width = WidthCheck()
        step = self.chunk(count)
        name = self.inputs[0]
        outputs = []
        with _one_blas_thread():
            for start in range(0, count, step):
                part = inputs[start : start + step]
                feed = {name: part.reshape(len(part), *self.shapes[name])}
                outputs.append(self.run_batch(feed, width)[self.outputs[0]])
        shape = self.shapes.get(self.outputs[0], ())
        out = np.concatenate(outputs) if outputs else np.zeros((0, *shape), np.float32)
        if shape[:1] == (1,):
            out = out.reshape(count, *shape[1:])
        return Result(out, width.violations(), width.checked)

    def run_batch(self, feed: dict[str, np.ndarray], width: WidthCheck) -> dict[str, np.ndarray]:
        """Execute the graph on ``feed`` (each dynamic tensor as (n, *shape)); returns the
        graph outputs the same way."""
        values = {n: _sanitize(self.model, n, v, width) for n, v in feed.items()}
        for index, run in enumerate(self.nodes):
            run(values, width)
            for name in run.node.input:  # free what no later node reads
                if self.last_use.get(name) == index and name not in self.outputs:
                    width.forget(values.pop(name, None))
        return {name: values[name] for name in self.outputs}


# -- one node -----------------------------------------------------------------------------
class NodeRun:
    """One node of a prepared model: how it executes a batch, and what it checks."""

    def __init__(self, owner: Prepared, node: Any, partition: Path | None) -> None:
        self.owner = owner
        self.node = node
        model = owner.model
        self.dynamic_in = [n for n in node.input if n and n not in owner.constants]
        self.batched = node.op_type not in ONE_AT_A_TIME and all(
            owner.shapes.get(n, (0,))[:1] == (1,) for n in [*self.dynamic_in, *node.output]
        )
        self.proven = False  # the batched path was compared with one vector at a time
        self.instance: Any = None
        self.accumulator: Any = None  # the same op with its activation off
        self._scaled: dict[tuple[str, int], Any] = {}
        self.width: WidthCheck | None = None  # the run's, for a partition's own nodes
        if node.op_type == "StreamingDataflowPartition":
            self.execute = self._partition(partition)
            self.batched = self.proven = True
        elif _is_custom(node):
            from qonnx.custom_op.registry import getCustomOp

            opset = model.get_opset_imports().get(node.domain, 1)
            self.instance = getCustomOp(node, onnx_opset_version=opset)
            self.execute = self._custom
            if node.domain == GENERIC and node.op_type in ("MVAU", "VVAU"):
                self.accumulator = self._accumulator_op()
        else:
            self.execute = self._standard()

    def constant(self) -> dict[str, np.ndarray]:
        """Outputs of a node that reads constants only."""
        context = {
            name: np.zeros(self.owner.shapes.get(name, ()), np.float32) for name in self.node.output
        }
        got = self.execute(context, 1, False)
        return {name: np.asarray(got[name]) for name in self.node.output}

    # -- executing ----------------------------------------------------------------------
    def __call__(self, values: dict[str, np.ndarray], width: WidthCheck) -> None:
        owner, node = self.owner, self.node
        self.width = width
        count = len(values[self.dynamic_in[0]]) if self.dynamic_in else 1
        out = None
        if self.batched:
            try:
                out = self._batch(values, count)
            except Exception:
                if self.proven:
                    raise
            if out is not None and not self.proven:
                out = self._prove(values, out, count)
            if out is None:
                self.batched = False
        if out is None:
            out = self._vectors(values, count)
        for name in node.output:
            values[name] = _sanitize(owner.model, name, out[name], width)
        if owner.check and self.instance is not None and node.domain == GENERIC:
            self._check_widths(values, width)

    def _prove(
        self, values: dict[str, np.ndarray], out: dict[str, np.ndarray], count: int
    ) -> dict[str, np.ndarray] | None:
        """The batched outputs if the first and last vectors alone give the same."""
        self.proven = True
        for i in sorted({0, count - 1}):
            alone = self._one(values, i)
            for name in self.node.output:
                if not np.allclose(out[name][i], alone[name], rtol=1e-6, atol=1e-6):
                    return None
        return out

    def _batch(self, values: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray] | None:
        shapes = self.owner.shapes
        context = {n: values[n].reshape(count, *shapes[n][1:]) for n in self.dynamic_in}
        for name in self.node.output:
            context[name] = np.zeros((count, *shapes[name][1:]), np.float32)
        got = self.execute(context, count, True)
        out = {}
        for name in self.node.output:
            value = np.asarray(got[name])
            if value.size != count * int(np.prod(shapes[name])):
                return None
            out[name] = value.reshape(count, *shapes[name])
        return out

    def _one(self, values: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
        shapes = self.owner.shapes
        context = {n: values[n][i] for n in self.dynamic_in}
        for name in self.node.output:
            context[name] = np.zeros(shapes[name], np.float32)
        got = self.execute(context, 1, False)
        return {name: np.asarray(got[name]).reshape(shapes[name]) for name in self.node.output}

    def _vectors(self, values: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
        rows = [self._one(values, i) for i in range(count)]
        return {name: np.stack([r[name] for r in rows]) for name in self.node.output}

    # -- kinds of node ------------------------------------------------------------------
    def _custom(self, context: dict[str, Any], count: int, batched: bool) -> dict[str, Any]:
        inst = self.instance
        if batched and self.node.op_type in ("MVAU", "DuplicateStreams"):
            inst = self._with_vectors("op", self.instance, count)
        for name in self.node.input:
            if name in self.owner.constants:
                context[name] = self.owner.constants[name]
        inst.execute_node(context, self.owner.model.graph)
        return context

    def _with_vectors(self, which: str, inst: Any, count: int) -> Any:
        """``inst``'s op with ``numInputVectors`` scaled to a batch of ``count``."""
        if (which, count) not in self._scaled:
            from qonnx.custom_op.registry import getCustomOp

            vectors = list(inst.get_nodeattr("numInputVectors"))
            if vectors[:1] != [1]:
                raise ValueError("batching needs numInputVectors[0] == 1")
            scaled = getCustomOp(copy.deepcopy(inst.onnx_node))
            scaled.set_nodeattr("numInputVectors", [count, *vectors[1:]])
            self._scaled[(which, count)] = scaled
        return self._scaled[(which, count)]

    def _accumulator_op(self) -> Any:
        from qonnx.custom_op.registry import getCustomOp

        node = copy.deepcopy(self.node)
        del node.input[2:]
        inst = getCustomOp(node)
        inst.set_nodeattr("noActivation", 1)
        return inst

    def _partition(self, child: Path | None) -> Callable[..., dict[str, Any]]:
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.custom_op.registry import getCustomOp

        path = child or Path(getCustomOp(self.node).get_nodeattr("model"))
        prepared = Prepared(ModelWrapper(str(path)), check=self.owner.check)
        self.owner.children[self.node.name] = prepared

        def run(context: dict[str, Any], count: int, batched: bool) -> dict[str, Any]:
            # inputs and outputs by position, as FINN's StreamingDataflowPartition does
            feed = {
                inner: context[outer].reshape(count, *prepared.shapes[inner])
                for outer, inner in zip(self.node.input, prepared.inputs, strict=False)
            }
            got = prepared.run_batch(feed, self.width or WidthCheck())
            for outer, inner in zip(self.node.output, prepared.outputs, strict=False):
                context[outer] = got[inner]
            return context

        return run

    def _standard(self) -> Callable[..., dict[str, Any]]:
        """A standard ONNX node through onnxruntime: one session per batch mode."""
        sessions: dict[bool, Any] = {}

        def run(context: dict[str, Any], count: int, batched: bool) -> dict[str, Any]:
            if batched not in sessions:
                sessions[batched] = self._session(batched)
            feed = {n: context[n] for n in self.dynamic_in}
            outs = sessions[batched].run(list(self.node.output), feed)
            for name, value in zip(self.node.output, outs, strict=True):
                context[name] = value
            return context

        return run

    def _session(self, batched: bool) -> Any:
        import onnxruntime as rt
        from onnx import TensorProto, helper, numpy_helper

        owner, node, model = self.owner, self.node, self.owner.model

        def info(name: str, shape: Any) -> Any:
            vi = model.get_tensor_valueinfo(name)
            elem = vi.type.tensor_type.elem_type if vi is not None else TensorProto.FLOAT
            return helper.make_tensor_value_info(name, elem or TensorProto.FLOAT, shape)

        def shape(name: str) -> list[Any]:
            dims = list(owner.shapes[name])
            return ["N", *dims[1:]] if batched else dims

        inputs = [info(n, shape(n)) for n in dict.fromkeys(self.dynamic_in)]
        outputs = [info(n, None) for n in node.output]
        constants = [
            numpy_helper.from_array(owner.constants[n], n)
            for n in dict.fromkeys(node.input)
            if n in owner.constants
        ]
        graph = helper.make_graph([node], "single-node", inputs, outputs, constants)
        opsets = [
            helper.make_opsetid(domain, version)
            for domain, version in model.get_opset_imports().items()
            if domain in ("", "ai.onnx")
        ] or [helper.make_opsetid("", 13)]
        one = helper.make_model(graph, opset_imports=opsets)
        one.ir_version = model.model.ir_version or one.ir_version
        options = rt.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return rt.InferenceSession(
            one.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    # -- widths ------------------------------------------------------------------------
    def _check_widths(self, values: dict[str, np.ndarray], width: WidthCheck) -> None:
        """A HW layer's tensors against their annotations, its inputs, weights and outputs
        against its own datatype attributes, its accumulator against ``accDataType``.
        (Software nodes are not checked: FINN's front end annotates some of their
        tensors with the type they have only after the next node, e.g. a MultiThreshold
        before its bias is added.)"""
        inst, node, owner = self.instance, self.node, self.owner
        for name in [*node.input, *node.output]:
            value = values.get(name, owner.constants.get(name))
            if name and value is not None:
                width.tensor(owner.model, node.name, name, value)
        for index, name in enumerate(node.input):
            try:
                dtype = inst.get_input_datatype(index)
            except Exception:
                continue
            value = values.get(name, owner.constants.get(name))
            if value is None:
                continue
            if index == 0:
                what, holder = "input", "inputDataType"
            elif node.op_type in ("MVAU", "VVAU"):
                what, holder = "weights", "weightDataType"
            elif node.op_type == "Thresholding":
                what, holder = "thresholds", "weightDataType"
            else:
                what, holder = f"input {index}", "its input datatype"
            width.values(node.name, what, dtype, value, holder)
        for index, name in enumerate(node.output):
            try:
                dtype = inst.get_output_datatype(index)
            except Exception:
                continue
            width.values(node.name, "output", dtype, values[name], "outputDataType")
        if self.accumulator is None:
            return
        from qonnx.core.datatype import DataType

        acc = DataType[inst.get_nodeattr("accDataType")]
        sums = values[node.output[0]] if inst.get_nodeattr("noActivation") else self._sums(values)
        width.values(node.name, "accumulator", acc, sums, "accDataType")

    def _sums(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """Pre-activation sums: the op with its activation off, on the same inputs."""
        owner, node = self.owner, self.node
        name, weights, out = node.input[0], node.input[1], node.output[0]
        batch = values[name]
        count = len(batch)
        shapes = owner.shapes
        w = owner.constants.get(weights, values.get(weights))
        if node.op_type == "MVAU" and self.batched:
            inst = self._with_vectors("acc", self.accumulator, count)
            context = {
                name: batch.reshape(count, *shapes[name][1:]),
                weights: w,
                out: np.zeros((count, *shapes[out][1:]), np.float32),
            }
            inst.execute_node(context, owner.model.graph)
            return np.asarray(context[out])
        rows = []
        for i in range(count):
            context = {name: batch[i], weights: w, out: np.zeros(shapes[out], np.float32)}
            self.accumulator.execute_node(context, owner.model.graph)
            rows.append(np.asarray(context[out]))
        return np.stack(rows)


def _one_blas_thread() -> Any:
    """BLAS on one thread while a batch runs: the engine runs one worker per core, and
    two workers' multithreaded matrix products on two cores took 3.4x as long as with
    one thread each (MobileNet-v1, measured). Nothing changes without threadpoolctl."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _is_custom(node: Any) -> bool:
    from qonnx.custom_op.registry import is_custom_op

    return bool(is_custom_op(node.domain, node.op_type))


def _sanitize(model: Any, name: str, value: np.ndarray, width: WidthCheck) -> np.ndarray:
    """qonnx's ``sanitize_quant_values``: an integer-annotated tensor a float error left
    off an integer is rounded (far off: an error, as in FINN's execution)."""
    from qonnx.util.basic import get_execution_error_thresh, get_sanitize_quant_tensors

    dtype = model.get_tensor_datatype(name)
    if not dtype.is_integer() or not get_sanitize_quant_tensors():
        return value
    if width.stats(value)[2]:  # integers already: rounding changes nothing
        return value
    rounded = np.round(value)
    error = float(np.max(np.abs(value - rounded))) if value.size else 0.0
    if error > get_execution_error_thresh():
        raise ValueError(
            f"tensor {name} is annotated {dtype.name} but holds values {error:g} off an "
            "integer (FINN's execution rejects this too)"
        )
    return rounded.astype(value.dtype)


# -- the width check ------------------------------------------------------------------------
class WidthCheck:
    """Values against the datatypes that hold them; violations merged per (node, what)."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str], Violation] = {}
        self.seen: set[tuple[str, str]] = set()
        self.tensors: dict[tuple[str, str], str] = {}
        self._stats: dict[int, tuple[Any, float, float, bool]] = {}

    def stats(self, value: np.ndarray) -> tuple[float, float, bool]:
        """(min, max, all integers?) of a live tensor, computed once however many
        datatypes it is checked against."""
        known = self._stats.get(id(value))
        if known is not None and known[0] is value:
            return known[1:]
        if value.size:
            low, high = float(value.min()), float(value.max())
            integral = bool(np.array_equal(value, np.rint(value)))
        else:
            low, high, integral = 0.0, 0.0, True
        self._stats[id(value)] = (value, low, high, integral)
        return low, high, integral

    def forget(self, value: Any) -> None:
        """A tensor no longer live (its memory may go)."""
        if value is not None:
            self._stats.pop(id(value), None)

    @property
    def checked(self) -> int:
        return len(self.seen)

    def tensor(self, model: Any, node: str, name: str, value: np.ndarray) -> None:
        """A tensor against its annotation (once per tensor, under the first node)."""
        if ("", name) in self.tensors:
            node = self.tensors[("", name)]
        else:
            self.tensors[("", name)] = node
        self.values(node, f"tensor {name}", model.get_tensor_datatype(name), value)

    def values(
        self, node: str, what: str, dtype: Any, value: Any, holder: str = "annotated"
    ) -> None:
        if not (dtype.is_integer() or dtype.is_fixed_point()):
            return
        value = np.asarray(value)
        self.seen.add((node, what))
        if not value.size:
            return
        if dtype.is_integer() and dtype.name not in ("BIPOLAR", "TERNARY"):
            low, high, integral = self.stats(value)
            if integral and dtype.min() <= low and high <= dtype.max():
                return
        ok = np.asarray(dtype.allowed(value), dtype=bool)
        if ok.all():
            return
        bad = value[~ok]
        low, high = float(bad.min()), float(bad.max())
        non_integer = bool(dtype.is_integer() and np.any(np.round(bad) != bad))
        known = self.found.get((node, what))
        if known is None:
            bounds = (float(dtype.min()), float(dtype.max()))
            self.found[(node, what)] = Violation(
                node, what, dtype.name, low, high, bounds, holder, non_integer, int(bad.size)
            )
        else:
            known.low, known.high = min(known.low, low), max(known.high, high)
            known.non_integer = known.non_integer or non_integer
            known.count += int(bad.size)

    def violations(self) -> list[Violation]:
        return list(self.found.values())


# -- the door -------------------------------------------------------------------------------
def prepare(path: Path | str, parent: Path | str | None = None, *, check: bool = True) -> Prepared:
    """The model at ``path`` prepared; with ``parent`` (``dataflow_parent.onnx``) the model
    is its dataflow partition and the parent runs around it."""
    from qonnx.core.modelwrapper import ModelWrapper

    _finn()
    if parent is not None:
        return Prepared(ModelWrapper(str(parent)), partition=Path(path), check=check)
    return Prepared(ModelWrapper(str(path)), check=check)


#: Attributes of FINN's generic HW ops that neither their Python reference nor the width
#: check reads: folding, memory and implementation choices, and build products. Two models
#: that differ only in them compute the same values in the same widths.
NOT_NUMERICS = frozenset(
    {
        "PE",  # except a VVAU's whose input is not a sliding window (see numerics_digest)
        "SIMD",
        "parallel_window",
        "M",
        "ram_style",
        "ram_style_thresholds",
        "resType",
        "mem_mode",
        "runtime_writeable_weights",
        "depth_trigger_uram",
        "depth_trigger_bram",
        "code_gen_dir_cppsim",
        "code_gen_dir_ipgen",
        "executable_path",
        "ipgen_path",
        "ip_path",
        "ip_vlnv",
        "exec_mode",
        "rtlsim_so",
        "rtlsim_trace",
        "res_estimate",
        "res_hls",
        "res_synth",
        "cycles_estimate",
        "cycles_rtlsim",
        "partition_id",
        "slr",
        "mem_port",
        "inFIFODepths",
        "outFIFODepths",
        "backend",
        "preferred_impl_style",
        "model",  # a partition's path: the partition's model is digested itself
    }
)


def numerics_digest(path: Path | str, parent: Path | str | None = None) -> str:
    """A digest of what executing the model computes and checks: the model (and its
    dataflow parent) as the reference runs it (specialized layers as their generic op),
    without ``NOT_NUMERICS`` attributes, doc strings and metadata (node names stay: the
    width check's messages name nodes). Designs
    that differ only in their folding share it, so one execution answers for all."""
    import hashlib

    from qonnx.core.modelwrapper import ModelWrapper

    _finn()
    digest = hashlib.sha256(Path(__file__).read_bytes())  # this code's semantics
    for file in (path, parent):
        if file is None:
            digest.update(b"-")
            continue
        model = ModelWrapper(str(file))
        switch_to_generic(model)
        graph = model.graph
        producers = {out: n.op_type for n in graph.node for out in n.output}
        for node in graph.node:
            node.doc_string = ""
            keep = (
                {"PE"}
                if node.op_type == "VVAU"
                and producers.get(node.input[0])
                not in (
                    "Im2Col",
                    "ConvolutionInputGenerator",
                )
                else set()
            )
            if node.domain.startswith(GENERIC):
                kept = [a for a in node.attribute if a.name not in NOT_NUMERICS or a.name in keep]
                del node.attribute[:]
                node.attribute.extend(sorted(kept, key=lambda a: a.name))
        del model.model.metadata_props[:]
        model.model.doc_string = ""
        graph.doc_string = ""
        digest.update(model.model.SerializeToString(deterministic=True))
    return digest.hexdigest()


def describe(prepared: Prepared) -> dict[str, Any]:
    """Which execution ran: FINN's Python references, the specialized layers each
    stood for, and how many nodes ran batched."""
    switched = dict(prepared.switched)
    batched = one = 0
    stack = [prepared]
    while stack:
        current = stack.pop()
        for name, generic in current.switched.items():
            switched.setdefault(name, generic)
        for run in current.nodes:
            if run.batched:
                batched += 1
            else:
                one += 1
        stack.extend(current.children.values())
    return {
        "execution": "python reference",
        "specialized_as_generic": dict(sorted(switched.items())),
        "nodes_batched": batched,
        "nodes_one_vector_at_a_time": one,
    }
