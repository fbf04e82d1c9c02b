"""Backend choices a model cannot use, read from its ONNX graph without FINN.

A blueprint's ``VVAU: [hls, rtl]`` on a network without depthwise convolutions, or
``MVAU: [hls, rtl]`` on a network whose layers all have 1-bit weights (FINN builds
``MVAU_hls`` for them whatever backend is asked: its RTL unit needs weights of at
least 2 bits), doubles the designs without making a new one. Said at collection, where
it can be known for certain from the QONNX graph: each claim below holds for every
model FINN's pipeline could make of it; where it cannot be told, nothing is said.
Only ``onnx`` is imported (no FINN, no qonnx), once per model file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Kernels FINN makes only from these ONNX ops (or that a graph may hold already, as
#: FINN nodes of that name with or without a backend suffix).
_MADE_FROM = {
    "HWSoftmax": {"Softmax"},
    "LayerNorm": {"LayerNormalization"},
}
#: Ops the weights of a layer may pass through on the way from their quantizer.
_PASSING = {"Transpose", "Reshape", "Identity", "Flatten"}

_graphs: dict[tuple[str, int, int], Any] = {}


def moot_backend_choice(model: Path, kernel: str, backends: Sequence[str]) -> str | None:
    """Why choosing among ``backends`` for ``kernel`` cannot change a design of
    ``model`` (None: it may)."""
    graph = _graph(model)
    if graph is None:
        return None
    ops = {node.op_type for node in graph.node}
    if any(op == kernel or op.startswith(kernel + "_") for op in ops):
        return None  # already a FINN node of that kernel
    if kernel == "VVAU":
        if not any(_attribute(n, "group", 1) > 1 for n in graph.node if n.op_type == "Conv"):
            return "the model has no depthwise convolution, so FINN makes no VVAU of it"
        return None
    if kernel in _MADE_FROM:
        if not ops & _MADE_FROM[kernel]:
            names = " or ".join(sorted(_MADE_FROM[kernel]))
            return f"the model has no {names} node, so FINN makes no {kernel} of it"
        return None
    if kernel == "MVAU" and "rtl" in backends and _all_weights_one_bit(graph):
        return (
            "every layer of the model has 1-bit weights, and FINN builds MVAU_hls for those "
            "whatever backend is asked (its RTL unit needs weights of 2 bits or more)"
        )
    return None


def _graph(model: Path) -> Any:
    """The model's graph, read once per file version (None if it cannot be read)."""
    try:
        st = os.stat(model)
    except OSError:
        return None
    memo = (str(model), st.st_size, st.st_mtime_ns)
    if memo not in _graphs:
        try:
            import onnx

            _graphs[memo] = onnx.load(str(model), load_external_data=False).graph
        except Exception:  # not a model this can read: nothing is claimed
            _graphs[memo] = None
    return _graphs[memo]


def _attribute(node: Any, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    return default


def _all_weights_one_bit(graph: Any) -> bool:
    """Every MatMul, Gemm and (ungrouped) Conv takes its weights from a 1-bit quantizer."""
    producers = {output: node for node in graph.node for output in node.output}
    constants = {init.name: init for init in graph.initializer}
    layers = [
        n
        for n in graph.node
        if n.op_type in ("MatMul", "Gemm")
        or (n.op_type == "Conv" and _attribute(n, "group", 1) == 1)
    ]
    if not layers:
        return False
    for layer in layers:
        node = producers.get(layer.input[1]) if len(layer.input) > 1 else None
        while node is not None and node.op_type in _PASSING:
            node = producers.get(node.input[0])
        if node is None:
            return False
        if node.op_type == "BipolarQuant":
            continue
        if node.op_type == "Quant" and len(node.input) > 3 and _one(constants.get(node.input[3])):
            continue
        return False
    return True


def _one(tensor: Any) -> bool:
    """A constant holding the single value 1 (a quantizer's bit width)."""
    if tensor is None:
        return False
    from onnx import numpy_helper

    values = numpy_helper.to_array(tensor)
    return values.size == 1 and float(values.reshape(-1)[0]) == 1.0
