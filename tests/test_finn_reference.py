"""FINN's Python references, prepared once and batched (pytest_brainsmith/finn/reference.py),
on the bundled TFC built once through the estimate pipeline: every checkpoint, its
hardware layers included, computes the input model's outputs; batches equal vectors run
one at a time and FINN's own execution; the width check names the value and the type."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import MODEL

from pytest_brainsmith.core.toolchain import finn_registry
from pytest_brainsmith.finn.catalog import ESTIMATE_STEPS

PIPELINE = ESTIMATE_STEPS  # FINN's estimate pipeline (what blueprints/base.yaml runs)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """TFC through FINN's estimate pipeline, every checkpoint kept."""
    from pytest_brainsmith.finn import runner

    out = tmp_path_factory.mktemp("tfc") / "build"
    registry = finn_registry()
    outcome = runner.run_segment(
        path_steps=[registry.step(f"finn:{s}") for s in PIPELINE],
        first=0,
        input_model=MODEL,
        config={"fpga_part": "xc7z020clg400-1", "synth_clk_period_ns": 10.0},
        generate_outputs=["estimate_reports"],
        out_dir=out,
        work_dir=out.parent / "work",
    )
    assert outcome.ok, outcome.failure
    return out / "intermediate_models"


@pytest.fixture(scope="module")
def vectors():
    from pytest_brainsmith.finn.execute import random_inputs

    return random_inputs(MODEL, 200, seed=4)


def _model(built: Path, step: str) -> tuple[Path, Path | None]:
    """A checkpoint and, from the partition on, the parent it runs inside."""
    after = PIPELINE.index(step) >= PIPELINE.index("create_dataflow_partition")
    return built / f"step_{step}.onnx", built / "dataflow_parent.onnx" if after else None


def test_every_checkpoint_computes_the_golden_and_fits_its_widths(built, vectors):
    from pytest_brainsmith.finn import reference

    golden = reference.prepare(MODEL).run(vectors).outputs
    assert golden.shape == (200, 10)
    for step in PIPELINE:
        model, parent = _model(built, step)
        prepared = reference.prepare(model, parent)
        result = prepared.run(vectors)
        assert np.array_equal(result.outputs, golden), step
        assert result.violations == [], (step, [v.message() for v in result.violations])
        how = reference.describe(prepared)
        assert how["execution"] == "python reference"
        if PIPELINE.index(step) >= PIPELINE.index("convert_to_hw"):
            assert result.values_checked >= 20, step  # HW layers: tensors, ports, accumulators
        if PIPELINE.index(step) >= PIPELINE.index("specialize_layers"):
            assert how["specialized_as_generic"]["MVAU_hls"] == "MVAU", how
            assert how["specialized_as_generic"]["Reshape_rtl"] == "Reshape", how


def test_batches_equal_one_vector_at_a_time_and_finn_execution(built, vectors):
    """A batch gives what each vector gives alone, and what FINN's own execute_onnx gives
    (generic HW layers, which FINN executes in Python itself)."""
    from finn.core.onnx_exec import execute_onnx
    from qonnx.core.modelwrapper import ModelWrapper

    from pytest_brainsmith.finn import reference

    model, _ = _model(built, "minimize_bit_width_initial")
    batch = reference.prepare(model).run(vectors[:16]).outputs
    alone = np.concatenate(
        [reference.prepare(model).run(vectors[i : i + 1]).outputs for i in range(16)]
    )
    assert np.array_equal(batch, alone)
    wrapper = ModelWrapper(str(model))
    name, out = wrapper.graph.input[0].name, wrapper.graph.output[0].name
    shape = wrapper.get_tensor_shape(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = np.stack(
            [execute_onnx(wrapper, {name: v.reshape(shape)})[out][0] for v in vectors[:16]]
        )
    assert np.array_equal(batch, theirs)
    prepared = reference.prepare(model)
    prepared.run(vectors[:4])
    assert reference.describe(prepared)["nodes_batched"] >= 5  # MVAUs, thresholds, multiply


def _edited(built: Path, tmp_path: Path, edit) -> Path:
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(built / "step_minimize_bit_width.onnx"))
    edit(model)
    path = tmp_path / "edited.onnx"
    model.save(str(path))
    return path


def test_width_check_names_the_value_and_the_type(built, vectors, tmp_path):
    from qonnx.core.datatype import DataType
    from qonnx.custom_op.registry import getCustomOp

    from pytest_brainsmith.finn import execute

    parent = built / "dataflow_parent.onnx"

    def mvau(model, index=0):
        return [n for n in model.graph.node if n.op_type.startswith("MVAU")][index]

    def narrow(model):
        getCustomOp(mvau(model)).set_nodeattr("accDataType", "INT6")

    found = execute.check(_edited(built, tmp_path, narrow), vectors, parent)
    assert [v["what"] for v in found["violations"]] == ["accumulator"]
    message = found["violations"][0]["message"]
    assert message.startswith("MVAU_hls_0 accumulator reaches ")
    assert message.endswith(", accDataType INT6 holds [-32, 31]")
    reach = int(re.search(r"reaches (-?[\d,]+),", message).group(1).replace(",", ""))
    assert reach > 31 or reach < -32

    def big_weight(model):
        node = mvau(model, 1)
        w = model.get_initializer(node.input[1]).copy()
        w.flat[0] = 5
        model.set_initializer(node.input[1], w)

    found = execute.check(_edited(built, tmp_path, big_weight), vectors, parent)
    messages = {v["what"]: v["message"] for v in found["violations"]}
    wdt = getCustomOp(mvau(_load(built), 1)).get_nodeattr("weightDataType")
    low, high = int(DataType[wdt].min()), int(DataType[wdt].max())
    assert messages["weights"] == (
        f"MVAU_hls_1 weights reaches 5, weightDataType {wdt} holds [{low}, {high}]"
    )

    def narrow_output(model):  # the last MVAU's output (its accumulator) in 4 bits
        inst = getCustomOp(mvau(model, -1))
        inst.set_nodeattr("outputDataType", "INT4")

    found = execute.check(_edited(built, tmp_path, narrow_output), vectors, parent)
    whats = {v["what"] for v in found["violations"]}
    assert "output" in whats, found["violations"]
    assert np.array_equal(
        found["outputs"], execute.execute(built / "step_minimize_bit_width.onnx", vectors, parent)
    )


def _load(built: Path):
    from qonnx.core.modelwrapper import ModelWrapper

    return ModelWrapper(str(built / "step_minimize_bit_width.onnx"))


def test_a_layer_without_a_python_reference_is_not_executable(built, tmp_path):
    """A specialized layer with no generic op (here: one posing as TLastMarker_hls) is
    refused with the simulator it needs, never run as something else."""
    from pytest_brainsmith.finn import execute, reference

    def pose(model):
        node = model.graph.node[-1]
        node.op_type, node.domain = "TLastMarker_hls", "finn.custom_op.fpgadataflow.hls"

    path = _edited(built, tmp_path, pose)
    reason = execute.not_executable(path)
    assert reason and "TLastMarker_hls" in reason and "cppsim (Vitis HLS)" in reason
    with pytest.raises(reference.NotExecutable, match="no Python reference"):
        reference.prepare(path)
    assert execute.not_executable(built / "step_minimize_bit_width.onnx") is None


def test_converted_golden_is_finns_own_conversion(built, vectors, tmp_path):
    """verify: {golden: converted}: the blueprint's model converted as FINN's
    step_qonnx_to_finn converts it computes what that step's checkpoint computes."""
    from pytest_brainsmith.finn import execute

    converted = execute.convert_input(MODEL, tmp_path / "converted.onnx")
    ours = execute.execute(converted, vectors)
    assert np.array_equal(ours, execute.execute(built / "step_qonnx_to_finn.onnx", vectors))
