"""MobileNet-v1's own build steps: what FINN's default pipeline cannot do for it.

FINN's ``streamline`` and ``convert_to_hw`` stop short on MobileNet-v1: the scales of
its depthwise convolutions stay as ``Mul`` nodes, its average pool and its flatten stay
in the way, and its convolutions must be lowered to matrix products (depthwise ones to
the vector-vector unit, VVAU) before they become hardware layers. Xilinx/finn-examples
(``build/mobilenet-v1``) shows which FINN and qonnx transformations do that; these steps
apply them in that order. Each step is one function (its source is its cache identity),
so a change to one rebuilds that step and what follows, nothing before.

Register them from a ``conftest.py`` next to a blueprint::

    from pytest_brainsmith.finn.mobilenet_steps import register

    def pytest_brainsmith_register(registry):
        register(registry)

then name them in the blueprint's steps: ``mobilenet_streamline``,
``mobilenet_lower_convs``, ``mobilenet_convert_to_hw``, ``mobilenet_weights_to_uram`` (see
``blueprints/mobilenet/``). Imports are inside the steps: collection never imports FINN.
"""

from __future__ import annotations

from typing import Any

#: The steps that turn the QONNX model into hardware layers, in pipeline order (then
#: FINN's partition and folding; ``mobilenet_weights_to_uram`` after the folding).
STEPS = ("mobilenet_streamline", "mobilenet_lower_convs", "mobilenet_convert_to_hw")


def mobilenet_streamline(model: Any, cfg: Any) -> Any:
    """FINN's Streamline, then what MobileNet-v1 needs beyond it: the depthwise scales
    moved past their convolutions and absorbed into thresholds, the average pool in
    NHWC, transposes and flattens moved out of the way, scalar products collapsed,
    thresholds rounded to integers."""
    import finn.transformation.streamline.absorb as absorb
    import finn.transformation.streamline.reorder as reorder
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.collapse_repeated import CollapseRepeatedMul
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.transformation.change_datalayout import ChangeDataLayoutQuantAvgPool2d
    from qonnx.transformation.double_to_single_float import DoubleToSingleFloat
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.remove import RemoveIdentityOps

    model = model.transform(Streamline())
    for transform in (
        DoubleToSingleFloat(),
        reorder.MoveMulPastDWConv(),
        absorb.AbsorbMulIntoMultiThreshold(),
        ChangeDataLayoutQuantAvgPool2d(),
        InferDataLayouts(),
        reorder.MoveTransposePastScalarMul(),
        absorb.AbsorbTransposeIntoFlatten(),
        reorder.MoveFlattenPastAffine(),
        reorder.MoveFlattenPastTopK(),
        reorder.MoveScalarMulPastMatMul(),
        CollapseRepeatedMul(),
        RemoveIdentityOps(),
        RoundAndClipThresholds(),
    ):
        # names and datatypes refreshed after each, as each transform reads them
        model = model.transform(transform)
        model = model.transform(GiveUniqueNodeNames())
        model = model.transform(GiveReadableTensorNames())
        model = model.transform(InferDataTypes())
    return model


def mobilenet_lower_convs(model: Any, cfg: Any) -> Any:
    """Every convolution lowered to Im2Col + MatMul (NHWC); the transposes this leaves
    next to thresholds absorbed, pairs of transposes cancelled."""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul

    model = model.transform(LowerConvsToMatMul())
    model = model.transform(absorb.AbsorbTransposeIntoMultiThreshold())
    model = model.transform(absorb.AbsorbConsecutiveTransposes())
    model = model.transform(GiveUniqueNodeNames())
    model = model.transform(GiveReadableTensorNames())
    model = model.transform(InferDataTypes())
    model = model.transform(RoundAndClipThresholds())
    return model.transform(InferDataLayouts())


def mobilenet_convert_to_hw(model: Any, cfg: Any) -> Any:
    """Hardware layers, in finn-examples' order: the average pool, the sliding windows,
    the depthwise products as VVAU before the others become MVAU (so no depthwise
    product is taken for a dense one), then the label select. With
    ``standalone_thresholds`` (as finn-examples' ZCU104 build) activations become
    Thresholding layers of their own, which the RTL MVAU needs; otherwise they are folded
    into the MVAU/VVAU before them. The input quantizer and the classifier's scale and
    bias stay outside the accelerator, as in finn-examples."""
    from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
    from finn.transformation.fpgadataflow.convert_to_hw.label_select import (
        InferLabelSelectLayer,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.pool import InferPool
    from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (  # noqa: E501
        InferQuantizedMatrixVectorActivation,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import (
        InferThresholdingLayer,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.vector_vector_activation import (
        InferVectorVectorActivation,
    )
    from finn.transformation.streamline.absorb import AbsorbConsecutiveTransposes
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_shapes import InferShapes

    model = model.transform(InferPool())
    model = model.transform(InferConvInpGen())
    if cfg.standalone_thresholds:
        model = model.transform(InferThresholdingLayer())
    model = model.transform(InferVectorVectorActivation())
    model = model.transform(InferQuantizedMatrixVectorActivation())
    model = model.transform(InferLabelSelectLayer())
    # the transposes a standalone threshold leaves between two layouts cancel out
    model = model.transform(AbsorbConsecutiveTransposes())
    model = model.transform(InferShapes())
    model = model.transform(InferDataLayouts())
    model = model.transform(GiveUniqueNodeNames())
    return model.transform(GiveReadableTensorNames())


def mobilenet_weights_to_uram(model: Any, cfg: Any) -> Any:
    """The largest weight memories (the 1024-channel pointwise layers and the classifier,
    at least 2^19 weights each) in UltraRAM, as finn-examples' ZCU104 folding puts them:
    MobileNet-v1's 4.2 M 4-bit weights are more than a ZCU104's block RAM holds. Runs
    after ``apply_folding_config`` (the folding may have chosen another ``ram_style``).
    On UltraScale+ FINN's weight streamer needs such layers runtime-writeable (its
    hw_codegen asserts it), as finn-examples' ZCU104 configs declare them. A layer whose
    ``ram_style`` the folding config names (a folding search chose its memory) keeps it."""
    import json
    from pathlib import Path

    from qonnx.custom_op.registry import getCustomOp

    chosen: dict[str, Any] = {}
    if getattr(cfg, "folding_config_file", None):
        chosen = json.loads(Path(cfg.folding_config_file).read_text())
    for node in model.graph.node:
        if "ram_style" in chosen.get(node.name, {}):
            continue
        if node.op_type.startswith("MVAU"):
            op = getCustomOp(node)
            if op.get_nodeattr("MW") * op.get_nodeattr("MH") >= 1 << 19:
                op.set_nodeattr("ram_style", "ultra")
                op.set_nodeattr("runtime_writeable_weights", 1)
    return model


def register(registry: Any) -> None:
    """Register the steps (in a ``pytest_brainsmith_register`` hook)."""
    registry.register_step(mobilenet_streamline, reads=())
    registry.register_step(mobilenet_lower_convs, reads=())
    registry.register_step(mobilenet_convert_to_hw, reads=("standalone_thresholds",))
    registry.register_step(mobilenet_weights_to_uram, reads=())
