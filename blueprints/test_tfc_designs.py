"""Checks in Python over the designs the blueprints explore. Each test runs once
per design (same ids as the YAML items, so -k works the same) and reuses the
builds of the YAML items through the cache: nothing is built twice."""

from pathlib import Path

import pytest

from pytest_brainsmith.finn.execute import random_inputs


@pytest.mark.brainsmith("tfc_sweep.blueprint.yaml")
def test_final_graph_is_all_specialized_hardware_layers(design):
    """Every node FINN leaves in the accelerator is a specialized HLS or RTL kernel:
    nothing fell back to a generic or software node."""
    model = design.load_model()
    for node in model.graph.node:
        assert node.domain.startswith("finn.custom_op.fpgadataflow"), node.op_type
        assert node.op_type.endswith(("_hls", "_rtl")), node.op_type
    # the backend the design chose is used; FINN falls back to HLS by itself for
    # layers the RTL unit cannot implement (here: all but the widest-weight layer)
    mvaus = [n.op_type for n in model.graph.node if n.op_type.startswith("MVAU")]
    if design.choices["MVAU"] == "hls":
        assert mvaus and set(mvaus) == {"MVAU_hls"}
    else:
        assert "MVAU_rtl" in mvaus


@pytest.mark.brainsmith("tfc_sweep.blueprint.yaml", where={"MVAU": "rtl"})
def test_rtl_mvau_trades_dsp_for_lut_against_hls(design, brainsmith):
    """The RTL matrix-vector unit uses DSP slices where HLS uses LUTs: per design
    point, the rtl variant needs no more LUTs than its hls sibling, at the same
    throughput."""
    hls = brainsmith.design(
        "tfc_sweep.blueprint.yaml",
        MVAU="hls",
        target_fps=design.choices["target_fps"],
        mvau_wwidth_max=design.choices["mvau_wwidth_max"],
    )
    rtl = design.estimates
    assert rtl["LUT"] <= hls.estimates["LUT"]
    assert rtl["DSP"] >= hls.estimates["DSP"]
    assert rtl["estimated_throughput_fps"] == hls.estimates["estimated_throughput_fps"]


@pytest.mark.brainsmith(
    "tfc_sweep.blueprint.yaml", where={"MVAU": "rtl", "target_fps": 400000, "mvau_wwidth_max": 36}
)
def test_dataflow_graph_agrees_with_the_input_model_on_top1(design, brainsmith):
    """A user's own check beside `verify:`: the final hardware graph (its specialized
    layers run as FINN's Python references) picks the same class as the input model for
    every one of 32 random inputs. Both executions are kept in the cache: a warm re-run
    starts no FINN."""
    model = Path(__file__).parent.parent / "models" / "tfc_w2a2.onnx"
    inputs = random_inputs(model, 32, seed=1)
    hardware = design.execute(inputs)
    reference = brainsmith.execute(model, inputs)
    assert hardware.shape == reference.shape == (32, 10)
    assert (hardware.argmax(axis=1) == reference.argmax(axis=1)).all()
