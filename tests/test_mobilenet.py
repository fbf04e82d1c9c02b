"""MobileNet-v1's own steps on real FINN, on the reduced MobileNet-v1 that
``scripts/make_models.py`` makes with the same code as the full one (every kind of layer,
width 0.25, 32x32 input): FINN builds it through the estimates with our steps, and each
step's output still computes what the model computed (qonnx's Python execution, one
random input, exactly: the steps only move scales and lower layers)."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import export_model, run_in

from pytest_brainsmith.core.toolchain import finn_registry
from pytest_brainsmith.finn.mobilenet_steps import STEPS, register

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return export_model("mobilenet_tiny", tmp_path_factory.mktemp("models"))


def test_mobilenet_steps_keep_what_the_network_computes(tiny, tmp_path):
    # in a process of its own: FINN's build and our steps change process-wide state that
    # later in-process builds (explore() in other tests) would inherit through fork
    code = (
        "import sys; from pathlib import Path; "
        f"sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "import test_mobilenet; "
        f"test_mobilenet.check(Path({str(tiny)!r}), Path({str(tmp_path)!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def check(tiny: Path, tmp_path: Path) -> None:
    """Build the tiny network with our steps; each step's output computes what the model did."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from pytest_brainsmith.finn.runner import _isolated_process_state, import_finn

    finn = import_finn()
    registry = finn_registry()
    register(registry)
    ours = [registry.step(name).func for name in STEPS]
    front = ["step_qonnx_to_finn", "step_tidy_up"]
    estimates = [
        "step_create_dataflow_partition",
        "step_specialize_layers",
        "step_target_fps_parallelization",
        "step_apply_folding_config",
        "step_minimize_bit_width",
        "step_generate_estimate_reports",
    ]
    out = tmp_path / "build"
    cfg = finn["config"].DataflowBuildConfig(
        output_dir=str(out),
        synth_clk_period_ns=5.0,
        fpga_part="xczu7ev-ffvc1156-2-e",
        target_fps=100000,
        standalone_thresholds=True,
        generate_outputs=[finn["config"].DataflowOutputType.ESTIMATE_REPORTS],
        steps=[*front, *ours, *estimates],
    )
    with _isolated_process_state(tmp_path / "work"):
        assert finn["build_dataflow"].build_dataflow_cfg(str(tiny), cfg) == 0

    # FINN took our hardware layers through its estimates: depthwise ones as VVAU
    layers = json.loads((out / "report" / "estimate_layer_resources.json").read_text())
    kinds = {name.split("_")[0] for name in layers if name != "total"}
    assert {"MVAU", "VVAU", "ConvolutionInputGenerator", "Thresholding", "Pool"} <= kinds, kinds
    assert sum(name.startswith("VVAU") for name in layers) == 3  # the three depthwise
    assert sum(name.startswith("MVAU") for name in layers) == 5  # first conv, 3 pw, fc
    performance = json.loads((out / "report" / "estimate_network_performance.json").read_text())
    assert performance["estimated_throughput_fps"] > 0

    # each step's checkpoint computes what the one before it computed
    model = ModelWrapper(str(tiny))
    name = model.graph.input[0].name
    x = np.random.default_rng(0).uniform(-1, 1, model.get_tensor_shape(name))
    x = x.astype(np.float32)
    expected = execute_onnx(model, {name: x})[model.graph.output[0].name]
    assert expected.shape == (1, 10)
    checkpoints = [*front, *(f.__name__ for f in ours)]
    for step in checkpoints:
        model = ModelWrapper(str(out / "intermediate_models" / f"{step}.onnx"))
        got = execute_onnx(model, {model.graph.input[0].name: x})[model.graph.output[0].name]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=step)
        ops = {node.op_type for node in model.graph.node}
        if step == "mobilenet_streamline":  # scales absorbed: only the classifier's remain
            assert "BatchNormalization" not in ops and "Div" not in ops, ops
        if step == "mobilenet_lower_convs":
            assert "Conv" not in ops and "Im2Col" in ops, ops
        if step == "mobilenet_convert_to_hw":  # nothing left between hardware layers
            hw = [n.domain.startswith("finn.custom_op.fpgadataflow") for n in model.graph.node]
            first, last = hw.index(True), len(hw) - hw[::-1].index(True)
            assert all(hw[first:last]), [n.op_type for n in model.graph.node]
            assert {"VVAU", "MVAU", "Thresholding", "Pool"} <= ops, ops


#: The reduced MobileNet's corruptions, registered beside its own steps: a depthwise
#: (VVAU) weight negated after its conversion to hardware layers, a VVAU accumulator
#: narrowed after the bit widths were minimized, and a harmless renaming of every node.
CORRUPTIONS = """
import numpy as np
from qonnx.custom_op.registry import getCustomOp

from pytest_brainsmith.finn.mobilenet_steps import register


def _vvau(model):
    return next(n for n in model.graph.node if n.op_type.startswith("VVAU"))


def flip_depthwise(model, cfg):
    node = _vvau(model)
    w = model.get_initializer(node.input[1]).copy()
    i = int(np.flatnonzero((w != 0) & (np.abs(w) < 7))[0])
    w.flat[i] = -w.flat[i]
    model.set_initializer(node.input[1], w)
    return model


def narrow_depthwise(model, cfg):
    getCustomOp(_vvau(model)).set_nodeattr("accDataType", "INT5")
    return model


def rename_nodes(model, cfg):
    for i, node in enumerate(model.graph.node):
        node.name = f"renamed_{i}"
    return model


def pytest_brainsmith_register(registry):
    register(registry)
    for step in (flip_depthwise, narrow_depthwise, rename_nodes):
        registry.register_step(step, reads=())
"""

TINY_BLUEPRINT = """
model: {model}
fpga_part: xczu7ev-ffvc1156-2-e
clock_ns: 5.0
finn_config:
  target_fps: 100000
  standalone_thresholds: true
design_space:
  steps:
    - qonnx_to_finn
    - tidy_up
    - mobilenet_streamline
    - mobilenet_lower_convs
    - mobilenet_convert_to_hw
    - [~, flip_depthwise]
    - create_dataflow_partition
    - specialize_layers
    - target_fps_parallelization
    - apply_folding_config
    - minimize_bit_width
    - [~, narrow_depthwise, rename_nodes]
    - generate_estimate_reports
  kernels:
    - MVAU: [hls, rtl]
verify: true
"""


def test_reduced_mobilenet_verifies_and_catches_corruptions(tiny, tmp_path):
    """Every step of the reduced MobileNet verified (VVAU, sliding windows, pooling as
    their Python references); a flipped depthwise weight and a narrowed VVAU accumulator
    fail after their steps; renaming nodes passes."""
    (tmp_path / "conftest.py").write_text(CORRUPTIONS)
    (tmp_path / "m.blueprint.yaml").write_text(TINY_BLUEPRINT.format(model=tiny))
    db = tmp_path / "r.sqlite"
    result = run_in(
        tmp_path,
        "--brainsmith-cache",
        str(tmp_path / "c"),
        "--brainsmith-results",
        str(db),
        timeout=900,
    )
    out = result.stdout
    assert "4 passed" in out and "8 failed" in out, out[-3000:] + result.stderr[-3000:]
    assert "not executed" not in out
    with sqlite3.connect(db) as rows:
        found = rows.execute("SELECT verification, verification_step FROM designs").fetchall()
    assert sorted(set(found)) == [
        ("failed", "user_flip_depthwise"),
        ("failed", "user_narrow_depthwise"),
        ("passed", "step_generate_estimate_reports"),
    ]
    narrowed = re.search(
        r"width check failed after user_narrow_depthwise: (\S+) accumulator reaches -?[\d,]+, "
        r"accDataType INT5 holds \[-16, 15\]",
        out,
    )
    assert narrowed and narrowed.group(1).startswith("VVAU"), out[-3000:]
    assert re.search(r"failed after user_flip_depthwise: \d+ of 256 outputs differ", out)
