"""verify: every design's model executed after its steps and compared with a golden.

Validation at collection; registered pure-Python steps (one silently changes the
numerics) on the bundled model; the TFC and a small CNV sweep on real FINN; the
default golden checked against FINN's own verify_steps output files."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import MODEL, ROOT, export_model, run_in, step_project

from pytest_brainsmith.core.blueprint import load_design_space
from pytest_brainsmith.core.errors import BlueprintError
from pytest_brainsmith.core.toolchain import finn_registry
from pytest_brainsmith.finn.catalog import ESTIMATE_STEPS

HEAD = """
model: tfc.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10
"""


def load(path: Path):
    return load_design_space(path, finn_registry())


def error(path: Path) -> str:
    with pytest.raises(BlueprintError) as info:
        load(path)
    return str(info.value)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copyfile(MODEL, tmp_path / "tfc.onnx")
    return tmp_path


# -- validation -------------------------------------------------------------------------
def test_defaults_and_merge_through_extends(project, write):
    write("base.yaml", HEAD + "verify:\n  inputs: 4\n  atol: 0\n")
    space = load(write("a.blueprint.yaml", "extends: base.yaml\nverify:\n  seed: 3\n"))
    settings = space.verify
    assert (settings.count, settings.seed, settings.atol, settings.rtol) == (4, 3, 0.0, None)
    assert settings.after is None and settings.expected_file is None
    assert load(write("b.blueprint.yaml", "extends: base.yaml\nverify: false\n")).verify is None
    assert load(write("c.blueprint.yaml", HEAD)).verify is None
    on = load(write("d.blueprint.yaml", HEAD + "verify: true\n")).verify
    assert (on.count, on.seed) == (256, 0)
    after = load(write("e.blueprint.yaml", HEAD + "verify: {after: [finn:streamline]}\n"))
    assert after.verify.after == ("streamline",)


def test_npy_files_checked_against_the_model(project, write):
    np.save(project / "good.npy", np.zeros((3, 1, 28, 28), np.float32))
    np.save(project / "out.npy", np.zeros((3, 10), np.float32))
    space = load(
        write("ok.blueprint.yaml", HEAD + "verify: {inputs: good.npy, expected: out.npy}\n")
    )
    assert space.verify.inputs_file == project / "good.npy"

    np.save(project / "flat.npy", np.zeros((3, 784), np.float32))
    text = error(write("shape.blueprint.yaml", HEAD + "verify:\n  inputs: flat.npy\n"))
    assert "shape.blueprint.yaml:5: verify.inputs:" in text
    assert "(3, 784)" in text and "(N, 1, 28, 28)" in text

    np.save(project / "words.npy", np.array(["a", "b"]))
    text = error(write("dtype.blueprint.yaml", HEAD + "verify:\n  inputs: words.npy\n"))
    assert "verify.inputs" in text and "dtype <U1" in text

    np.save(project / "short.npy", np.zeros((2, 10), np.float32))
    text = error(
        write("exp.blueprint.yaml", HEAD + "verify:\n  inputs: good.npy\n  expected: short.npy\n")
    )
    assert "exp.blueprint.yaml:6: verify.expected:" in text and "(3, 10)" in text

    text = error(write("gone.blueprint.yaml", HEAD + "verify:\n  expected: missing.npy\n"))
    assert "gone.blueprint.yaml:5: verify.expected:" in text and "not found" in text


def test_npy_files_that_cannot_be_arrays_are_named_with_what_they_are(project, write):
    # a header that claims far more than the file holds is refused before anything is
    # allocated (np.load would try to allocate it)
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**9, 1, 28, 28)}
    with open(project / "big.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(b"\0" * 64)
    text = error(write("big.blueprint.yaml", HEAD + "verify:\n  inputs: big.npy\n"))
    assert "big.blueprint.yaml:5: verify.inputs:" in text
    assert "header claims an array of shape (1000000000, 1, 28, 28)" in text and "64 bytes" in text
    (project / "folder.npy").mkdir()
    os.mkfifo(project / "fifo.npy")
    (project / "zero.npy").symlink_to("/dev/zero")
    for name, kind in (
        ("folder", "is a directory"),
        ("fifo", "is a named pipe (FIFO)"),
        ("zero", "is a character device"),
    ):
        text = error(write(f"{name}.blueprint.yaml", HEAD + f"verify:\n  inputs: {name}.npy\n"))
        assert f"{name}.blueprint.yaml:5: verify.inputs:" in text and kind in text, text
        assert "not found" not in text


def test_bad_keys_and_values(project, write):
    text = error(write("a.blueprint.yaml", HEAD + "verify:\n  after: [streamlin]\n"))
    assert "a.blueprint.yaml:5: verify.after[0]:" in text
    assert "not a step of the pipeline" in text and "streamline" in text
    text = error(write("b.blueprint.yaml", HEAD + "verify:\n  inputz: 3\n"))
    assert "verify.inputz: unknown key" in text and "inputs" in text
    text = error(write("c.blueprint.yaml", HEAD + "verify:\n  inputs: 0\n"))
    assert "verify.inputs" in text
    text = error(write("d.blueprint.yaml", HEAD + "verify:\n  atol: -1\n"))
    assert "verify.atol: expected a finite number >= 0" in text
    text = error(write("f.blueprint.yaml", HEAD + "verify:\n  golden: convert\n"))
    assert "f.blueprint.yaml:5: verify.golden: expected one of model, converted" in text
    assert "did you mean 'converted'" in text
    np.save(project / "o.npy", np.zeros((8, 10), np.float32))
    text = error(
        write("g.blueprint.yaml", HEAD + "verify:\n  expected: o.npy\n  golden: converted\n")
    )
    assert "verify.golden:" in text and "give one or the other" in text
    converted = load(write("h.blueprint.yaml", HEAD + "verify: {golden: converted}\n"))
    assert converted.verify.golden == "converted"
    text = error(write("e.blueprint.yaml", HEAD + "verify: yes please\n"))
    assert "e.blueprint.yaml:4: verify: expected true, false or a mapping" in text


# -- registered pure-Python steps on the bundled model -------------------------------------
#: ``corrupt`` silently scales one weight initializer (the last node's that has one);
#: ``keep`` and ``finish`` change nothing.
NUMERIC_STEPS = """
import numpy as np

def corrupt(model, cfg):
    for node in reversed(model.graph.node):
        for name in node.input:
            value = model.get_initializer(name)
            if value is not None and value.size > 1:
                model.set_initializer(name, (value * 3).astype(value.dtype))
                return model
    raise AssertionError("no initializer")

def keep(model, cfg):
    return model

def finish(model, cfg):
    return model

def pytest_brainsmith_register(registry):
    for step in (corrupt, keep, finish):
        registry.register_step(step, reads=())
"""

DESIGN_TEST = """
import numpy as np
import pytest
from pytest_brainsmith.finn.execute import random_inputs

@pytest.mark.brainsmith("e.blueprint.yaml", where={"corrupt|keep": "keep"})
def test_execute(design, brainsmith):
    x = random_inputs("tfc.onnx", 3, 7)
    out = design.execute(x)
    assert out.shape == (3, 10)
    assert np.array_equal(out, brainsmith.execute("tfc.onnx", x))
    assert np.array_equal(design.execute(x, after="finish"), out)
    with pytest.raises(ValueError, match="--brainsmith-keep-step-models"):
        design.execute(x, after="keep")  # mid-segment: the cache kept only the last model
    assert design.verification["status"] == "passed"
    assert design.verification["verified"] == ["user_keep", "user_finish"]
"""


def _step_name(text: str) -> str:
    return re.search(r"verification failed after (\w+)", text).group(1)


def test_a_step_that_changes_numerics_fails_its_designs(tmp_path):
    folder = step_project(
        tmp_path / "p",
        NUMERIC_STEPS,
        "    - [corrupt, keep]\n    - finish\nverify:\n  inputs: 8\n",
    )
    (folder / "test_design.py").write_text(DESIGN_TEST)
    cache = str(tmp_path / "cache")
    junit = tmp_path / "junit.xml"
    first = run_in(folder, "--brainsmith-cache", cache, f"--junitxml={junit}", "-v")
    out = first.stdout
    assert "1 failed, 2 passed" in out, out + first.stderr
    line = next(x for x in out.splitlines() if "verification failed after" in x)
    step = _step_name(line)
    assert "corrupt" in step
    match = re.search(r"(\d+) of 8 outputs differ, max \|err\| ([0-9.e+-]+) \(atol ([^)]+)\)", line)
    assert match and int(match.group(1)) >= 1 and float(match.group(2)) > 0
    assert "verification: 1 verified, 1 failed designs" in out
    xml = junit.read_text()
    assert 'name="brainsmith.verification" value="failed"' in xml
    assert f'name="brainsmith.verification.step" value="{step}"' in xml
    assert 'name="brainsmith.verification" value="passed"' in xml

    # a re-run reports the same from the records: nothing executed, no worker started
    again = run_in(folder, "--brainsmith-cache", cache, "-v")
    assert "1 failed, 2 passed" in again.stdout
    assert match.group(0) in again.stdout
    assert "0 worker process(es) started" in again.stdout
    # design.execute() and brainsmith.execute() answer from the cache: FINN not started
    assert "FINN imported by 0 process(es)" in again.stdout
    assert "in an earlier run" in again.stdout

    # changing verify: re-verifies without rebuilding: a huge tolerance lets it pass
    blueprint = folder / "e.blueprint.yaml"
    blueprint.write_text(blueprint.read_text() + "  atol: 1000000\n")
    loose = run_in(folder, "--brainsmith-cache", cache, "-v")
    assert "3 passed" in loose.stdout, loose.stdout
    assert "segments: 0 built, 2 reused" in loose.stdout
    assert "0 worker process(es) started" not in loose.stdout

    # other inputs, default tolerance: verified again in a worker, fails again, no rebuild
    blueprint.write_text(blueprint.read_text().replace("  atol: 1000000\n", "  seed: 5\n"))
    reseeded = run_in(folder, "--brainsmith-cache", cache, "-v")
    assert "1 failed, 2 passed" in reseeded.stdout, reseeded.stdout
    assert "segments: 0 built, 1 reused, 1 failed" in reseeded.stdout
    assert "failed in this run" in reseeded.stdout
    records = list((Path(cache) / "v1" / "verify").glob("*/*.json"))
    assert len({r.name for r in records}) == 3  # one record per settings, per segment


# -- real FINN ------------------------------------------------------------------------
BASE_STEPS = ESTIMATE_STEPS  # FINN's estimate pipeline (what blueprints/base.yaml runs)


def test_tfc_sweep_verifies_green(tmp_path):
    """The bundled sweep (its base.yaml verifies): every design verified through its last
    step, specialized layers included (FINN's Python references, 256 vectors), nothing
    skipped; the models after the dataflow partition run inside its parent, which an
    ancestor segment made. Other inputs verify the cached entries again from their last
    models: nothing rebuilt, no step re-run."""
    shutil.copytree(ROOT / "blueprints", tmp_path / "blueprints")
    shutil.copytree(ROOT / "models", tmp_path / "models")
    html = tmp_path / "report.html"
    cache = str(tmp_path / "cache")
    result = run_in(
        tmp_path,
        "blueprints/tfc_sweep.blueprint.yaml",
        "--brainsmith-cache",
        cache,
        f"--html={html}",
        "--brainsmith-results",
        str(tmp_path / "r.sqlite"),
    )
    assert "12 passed" in result.stdout, result.stdout + result.stderr
    assert "verification: 12 verified designs on 256 input vectors" in result.stdout
    assert "not executed" not in result.stdout
    page = html.read_text()
    assert "Verified" in page and "passed (through step_generate_estimate_reports)" in page
    assert "runs only in" not in page
    db = sqlite3.connect(tmp_path / "r.sqlite")
    rows = db.execute("SELECT verification, verification_step, verification_detail FROM designs")
    rows = rows.fetchall()
    assert len(rows) == 12
    assert {(v, s) for v, s, _ in rows} == {("passed", "step_generate_estimate_reports")}
    detail = json.loads(rows[0][2])
    assert detail["verified"] == [f"step_{s}" for s in BASE_STEPS]
    assert detail["skipped"] == [] and detail["vectors_compared"] == 256
    assert detail["execution"] == "python reference"
    records = tmp_path / "cache" / "v1" / "verify"
    found = [json.loads(p.read_text()) for p in records.glob("*/*.json")]
    assert len(found) == 15  # one per segment
    leaves = [r for r in found if r["steps"][-1]["step"] == "step_generate_estimate_reports"]
    assert len(leaves) == 12
    for record in leaves:  # the leaf's own models run inside the front end's parent model
        assert record["executed"] == ["step_generate_estimate_reports"]
        ran = record["steps"][-1]
        assert (
            ran["execution"]["specialized_as_generic"][
                "MVAU_" + ("rtl" if "rtl]" in record["segment"] else "hls")
            ]
            == "MVAU"
        )
        assert ran["width"]["count"] == 0 and ran["width"]["values_checked"] > 20
        assert "XILINX_VIVADO" in record["simulators"] or "not run" in record["simulators"]
    # leaves that differ only in their folding compute the same: one execution answers
    # for them (two workers may each make one before the other's is kept)
    shared = [r for r in leaves if r["steps"][-1]["execution"].get("shared")]
    assert len(shared) >= 8, [r["steps"][-1]["execution"] for r in leaves]

    blueprint = tmp_path / "blueprints" / "base.yaml"
    blueprint.write_text(blueprint.read_text().replace("verify: true", "verify: {seed: 1}"))
    again = run_in(tmp_path, "blueprints/tfc_sweep.blueprint.yaml", "--brainsmith-cache", cache)
    assert "12 passed" in again.stdout and "segments: 0 built, 15 reused" in again.stdout
    reverified = [json.loads(p.read_text()) for p in records.glob("*/*.json")]
    assert len(reverified) == 30
    assert not any(r.get("rebuilt_steps") for r in reverified)
    # prune removes an unused entry's verification records with it
    run_in(
        tmp_path,
        "blueprints/tfc_steps.blueprint.yaml",
        "--brainsmith-cache",
        str(tmp_path / "cache"),
        "--brainsmith-prune",
    )
    assert not list(records.glob("*/*.json"))


CNV = """
model: cnv_w2a2.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10
finn_config:
  target_fps: 200
design_space:
  kernels:
    - MVAU: [hls, rtl]
verify:
  inputs: 2
"""


def test_cnv_designs_verify_green(tmp_path):
    export_model("cnv", tmp_path)
    (tmp_path / "cnv.blueprint.yaml").write_text(CNV)
    result = run_in(tmp_path, "--brainsmith-cache", str(tmp_path / "cache"), timeout=600)
    assert "2 passed" in result.stdout, result.stdout + result.stderr
    assert "verification: 2 verified designs" in result.stdout


def test_default_golden_matches_finn_verify_steps(tmp_path):
    """The golden (the input model executed) and the model after each early step, as
    pytest-brainsmith executes them, against the files FINN's own verify_steps writes
    for the same inputs (DataflowBuildConfig verify_steps / verify_input_npy /
    verify_expected_output_npy)."""
    from pytest_brainsmith.core import verify
    from pytest_brainsmith.finn import execute, runner
    from pytest_brainsmith.finn.toolchain import FinnExecution

    plan = {
        "model": str(MODEL),
        "inputs_file": None,
        "expected_file": None,
        "count": 4,
        "seed": 5,
        "base": str(tmp_path / "verify"),
        "executions": str(tmp_path),
    }
    inputs, expected, exact = verify.golden(plan, FinnExecution())
    assert not exact and expected.shape == (4, 10)
    np.save(tmp_path / "in.npy", inputs)
    np.save(tmp_path / "out.npy", expected.astype(np.float32))
    registry = finn_registry()
    steps = [registry.step(f"finn:{s}") for s in ("qonnx_to_finn", "tidy_up", "streamline")]
    config = {
        "fpga_part": "xc7z020clg400-1",
        "synth_clk_period_ns": 10.0,
        "verify_steps": ["finn_onnx_python", "initial_python", "streamlined_python"],
        "verify_input_npy": str(tmp_path / "in.npy"),
        "verify_expected_output_npy": str(tmp_path / "out.npy"),
        "verification_atol": 0.0,
        "verification_rtol": 0.0,
    }
    out = tmp_path / "finn"
    built = runner.run_segment(
        path_steps=steps,
        first=0,
        input_model=MODEL,
        config=config,
        generate_outputs=[],
        out_dir=out,
        work_dir=tmp_path / "work",
    )
    assert built.ok, built.failure
    files = sorted((out / "verification_output").glob("*.npy"))
    names = {f.name for f in files}
    for finn_name in config["verify_steps"]:
        assert {f"verify_{finn_name}_{b}_SUCCESS.npy" for b in range(4)} <= names, names
    for step, finn_name in zip(steps, config["verify_steps"], strict=True):
        theirs = np.stack(
            [
                np.load(out / "verification_output" / f"verify_{finn_name}_{b}_SUCCESS.npy")[0]
                for b in range(4)
            ]
        )
        assert np.array_equal(theirs, expected.astype(np.float32))
        model = out / "intermediate_models" / f"{runner.checkpoint_name(step)}.onnx"
        assert np.array_equal(execute.execute(model, inputs), theirs)


def test_explore_results_execute_and_carry_verification(tmp_path):
    """explore(): the same verdicts, and design.execute() on its results."""
    from pytest_brainsmith import explore
    from pytest_brainsmith.finn.execute import execute, random_inputs

    folder = step_project(
        tmp_path / "p", NUMERIC_STEPS, "    - [corrupt, keep]\n    - finish\nverify: true\n"
    )
    steps: dict = {}
    exec(NUMERIC_STEPS, steps)
    result = explore(
        folder / "e.blueprint.yaml",
        cache=tmp_path / "cache",
        register=steps["pytest_brainsmith_register"],
        workers=1,
    )
    by_branch = {d.choices["corrupt|keep"]: d for d in result.designs}
    bad, good = by_branch["corrupt"], by_branch["keep"]
    assert bad.status == "failed" and "verification failed after" in bad.reason
    assert bad.verification["status"] == "failed" and bad.verification["differ"] >= 1
    assert bad.record()["verification"]["failed_step"].endswith("corrupt")
    assert good.status == "passed" and good.verification["status"] == "passed"
    x = random_inputs(folder / "tfc.onnx", 2, 3)
    assert np.array_equal(good.execute(x), execute(folder / "tfc.onnx", x))
    with pytest.raises(RuntimeError, match="not built"):
        bad.execute(x)


def test_random_inputs_cover_the_input_datatype(tmp_path):
    """Drawn from the input's annotation (every value of INT4), reproducible by seed;
    an unannotated float input gets 8-bit steps in [0, 1]."""
    import onnx
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    from pytest_brainsmith.finn.execute import random_inputs

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
    )
    plain = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph), plain)
    model = ModelWrapper(str(plain))
    model.set_tensor_datatype("x", DataType["INT4"])
    annotated = tmp_path / "int4.onnx"
    model.save(str(annotated))

    values = random_inputs(annotated, 50, seed=1)
    assert values.shape == (50, 64) and values.dtype == np.float32
    assert set(np.unique(values)) == set(range(-8, 8))
    assert np.array_equal(values, random_inputs(annotated, 50, seed=1))
    assert not np.array_equal(values, random_inputs(annotated, 50, seed=2))
    floats = random_inputs(plain, 10, seed=0)
    assert floats.min() >= 0 and floats.max() <= 1
    assert np.allclose(floats * 255, np.round(floats * 255), atol=1e-4)


# -- held-out corruptions on real FINN -----------------------------------------------------
#: User steps that each corrupt the model in one way a real bug would (and one that only
#: renames nodes). Each finds its target by op type, so it works on any TFC-like model.
CORRUPTIONS = """
import numpy as np
from qonnx.custom_op.registry import getCustomOp


def _first(model, prefix, last=False):
    nodes = [n for n in model.graph.node if n.op_type.startswith(prefix)]
    return nodes[-1] if last else nodes[0]


def reverse_weights(model, cfg):  # after streamline: a weight matrix upside down
    node = _first(model, "MatMul")
    model.set_initializer(node.input[1], model.get_initializer(node.input[1])[::-1].copy())
    return model


def flip_sign(model, cfg):  # after convert_to_hw: one weight of the first MVAU negated
    node = _first(model, "MVAU")
    w = model.get_initializer(node.input[1]).copy()
    i = int(np.flatnonzero(np.abs(w) == 1)[0])
    w.flat[i] = -w.flat[i]
    model.set_initializer(node.input[1], w)
    return model


def change_weight(model, cfg):  # after apply_folding_config: one weight 0 -> 1 (last MVAU)
    node = _first(model, "MVAU", last=True)
    w = model.get_initializer(node.input[1]).copy()
    w.flat[int(np.flatnonzero(w == 0)[0])] = 1
    model.set_initializer(node.input[1], w)
    return model


def shift_threshold(model, cfg):  # after minimize_bit_width: one threshold one step up
    node = _first(model, "MVAU")
    t = model.get_initializer(node.input[2]).copy()
    t.flat[0] += 1
    model.set_initializer(node.input[2], t)
    return model


def swap_channels(model, cfg):  # two output channels of the last MVAU swapped
    node = _first(model, "MVAU", last=True)
    w = model.get_initializer(node.input[1]).copy()
    w[:, [0, 1]] = w[:, [1, 0]]
    model.set_initializer(node.input[1], w)
    return model


def narrow_accumulator(model, cfg):  # the first MVAU's accumulator 4 bits wide
    getCustomOp(_first(model, "MVAU")).set_nodeattr("accDataType", "INT4")
    return model


def rename_nodes(model, cfg):  # harmless: every node renamed
    for i, node in enumerate(model.graph.node):
        node.name = f"renamed_{i}_{node.op_type}"
    return model


def pytest_brainsmith_register(registry):
    for step in (reverse_weights, flip_sign, change_weight, shift_threshold, swap_channels,
                 narrow_accumulator, rename_nodes):
        registry.register_step(step, reads=())
"""

#: The estimate pipeline with the corruptions as sibling branches of four branch points
#: (~: none). A verification failure blocks what is below it, so each branch point's
#: failing alternatives cost one segment each; verify's default inputs.
CORRUPTED = """
model: tfc.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10
finn_config:
  target_fps: 100000
design_space:
  steps:
    - qonnx_to_finn
    - tidy_up
    - streamline
    - [~, reverse_weights]
    - convert_to_hw
    - [~, flip_sign]
    - minimize_bit_width_initial
    - create_dataflow_partition
    - specialize_layers
    - target_fps_parallelization
    - apply_folding_config
    - [~, change_weight]
    - minimize_bit_width
    - [~, shift_threshold, swap_channels, narrow_accumulator, rename_nodes]
    - generate_estimate_reports
verify: true
"""


def test_held_out_corruptions_fail_after_their_step(tmp_path):
    """Each corruption fails its designs after the step that made it (bisected inside its
    segment), with the vectors compared or the width named; renaming nodes passes."""
    (tmp_path / "conftest.py").write_text(CORRUPTIONS)
    shutil.copyfile(MODEL, tmp_path / "tfc.onnx")
    (tmp_path / "c.blueprint.yaml").write_text(CORRUPTED)
    db = tmp_path / "r.sqlite"
    result = run_in(
        tmp_path,
        "--brainsmith-cache",
        str(tmp_path / "cache"),
        "--brainsmith-results",
        str(db),
        "-v",
        timeout=900,
    )
    out = result.stdout
    assert "2 passed" in out, out + result.stderr  # no corruption, and rename_nodes
    rows = (
        sqlite3.connect(db)
        .execute(
            "SELECT choices, verification, verification_step, verification_detail FROM designs"
        )
        .fetchall()
    )
    failed_after = {}
    for choices, status, step, _detail in rows:
        picked = {v for v in json.loads(choices).values() if v not in ("skip", None)}
        if status == "failed":
            failed_after.setdefault(step, set()).add(frozenset(picked))
        else:
            assert status == "passed" and picked <= {"rename_nodes"}, (choices, status)
    assert set(failed_after) == {
        "user_reverse_weights",
        "user_flip_sign",
        "user_change_weight",
        "user_shift_threshold",
        "user_swap_channels",
        "user_narrow_accumulator",
    }, failed_after
    messages = [line for line in out.splitlines() if "failed after user_" in line]
    by_step = {re.search(r"failed after (user_\w+)", m).group(1): m for m in messages}
    flipped = re.search(r"(\d+) of 256 outputs differ", by_step["user_flip_sign"])
    assert flipped and 1 <= int(flipped.group(1)) < 64, by_step["user_flip_sign"]  # a few
    assert re.search(
        r"width check failed after user_narrow_accumulator: MVAU_hls_0 accumulator reaches "
        r"-?[\d,]+, accDataType INT4 holds \[-8, 7\]",
        by_step["user_narrow_accumulator"],
    ), by_step["user_narrow_accumulator"]
    # every step before the corruption passed, none is "not executed"
    detail = json.loads(next(d for c, s, st, d in rows if st == "user_flip_sign"))
    assert detail["vectors_compared"] == 256 and detail["execution"] == "python reference"
    assert not detail["skipped"]
    assert [s["status"] for s in detail["steps"]][-1] == "failed"
