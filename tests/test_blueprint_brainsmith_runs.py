"""BrainSmith-style blueprints as users run them: the model from the command line,
strictness options, a bert_demo-style project, and (on real FINN) a base-style
blueprint and a pipeline that runs a step twice."""

from __future__ import annotations

import shutil

import pytest
from conftest import MODEL

#: In the style of BrainSmith's examples/blueprints/base.yaml: a single design of FINN's
#: own steps, quoted names, no model (BrainSmith takes it from its command line).
BASE_STYLE = """
# Copyright (c) Microsoft Corporation.
name: "Baseline FINN"
description: "Core FINN build steps (no kernels)"

clock_ns: 5.0                       # Target clock period in nanoseconds
board: "Pynq-Z1"
save_intermediate_models: true      # BrainSmith's own key: accepted, not read

design_space:
  kernels: []
  steps:
    - "qonnx_to_finn"
    - "tidy_up"
    - "streamline"
    - "convert_to_hw"
    - "minimize_bit_width_initial"
    - "create_dataflow_partition"
    - "specialize_layers"
    - "target_fps_parallelization"  # no target_fps: FINN skips it
    - "apply_folding_config"
    - "minimize_bit_width"
    - "generate_estimate_reports"
"""

#: tidy_up twice, the second time after a branch point: the segments below the
#: branch resume at the second tidy_up, which needs its own checkpoint name.
TWICE = """
model: tfc.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10
design_space:
  steps: [qonnx_to_finn, tidy_up, [streamline, ~], tidy_up]
"""


def test_base_style_blueprint_and_a_step_run_twice_build_on_finn(pytester: pytest.Pytester):
    (pytester.path / "models").mkdir()
    shutil.copyfile(MODEL, pytester.path / "models" / "tfc_w2a2.onnx")
    shutil.copyfile(MODEL, pytester.path / "tfc.onnx")
    pytester.makefile(".blueprint.yaml", base=BASE_STYLE, twice=TWICE)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--brainsmith-model", "models/tfc_w2a2.onnx", "-v"
    )
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*base.blueprint.yaml::qonnx_to_finn..generate_estimate_reports PASSED*",
            "*twice.blueprint.yaml::qonnx_to_finn..tidy_up::streamline PASSED*",
            "*twice.blueprint.yaml::qonnx_to_finn..tidy_up::skip[[]streamline] PASSED*",
            "*this run built 4 segments, 0 failed*",
        ]
    )
    entries = pytester.path / "build" / "brainsmith" / "cache" / "v1" / "entries"
    outputs = sorted(p.name for p in entries.glob("*/*/build/intermediate_models/*.onnx"))
    assert outputs.count("step_tidy_up#2.onnx") == 2  # both children end with the second tidy_up


BERT_PARENT = """
name: "BERT"
description: "BERT Transformer encoder model (no initial embedding)"
clock_ns: 5.0
output: "bitfile"
board: "V80"
design_space:
  kernels:
    - LayerNorm
    - Softmax
    - finn:Thresholding
    - finn:MVAU
  steps:
    - "qonnx_to_finn"
    - "bert_streamlining"
    - "build_dataflow_graph"
    - "specialize_layers"
    - "brainsmith:target_fps_parallelization"
    - "minimize_bit_width"
    - "generate_estimate_reports"
    - "hw_codegen"
"""

BERT_DEMO = """
name: "BERT Demo"
description: "Hugging face BERT model"

extends: "${BSMITH_DIR}/examples/blueprints/bert.yaml"

clock_ns: 5.0
output: "bitfile"
board: "V80"

finn_config:
  standalone_thresholds: true
  target_fps: 3000
  folding_config_file: null
  synth_clk_period_ns: 4.0          # applied after clock_ns, as in BrainSmith

design_space:
  steps:
    - at_start:
        insert:
          - "bert_cleanup"
          - "remove_head"
          - "generate_reference_io"
    - at_end:
        insert: "shell_metadata_handover"
"""

#: BrainSmith's own steps under its namespace, the project's in conftest.py.
BERT_CONFTEST = """
def _step(model, cfg):
    return model

def pytest_brainsmith_register(registry):
    for name in ("bert_streamlining", "build_dataflow_graph", "target_fps_parallelization",
                 "bert_cleanup", "shell_metadata_handover"):
        registry.register_step(_step, name=name, namespace="brainsmith", reads=())
    for name in ("remove_head", "generate_reference_io"):
        registry.register_step(_step, name=name, reads=())
    for name in ("LayerNorm", "Softmax"):
        registry.register_kernel(name, backends=["hls", "rtl"], namespace="brainsmith")

def pytest_collection_finish(session):
    for item in session.items:
        steps = [s.qualified for s in item.segment.path_steps()]
        print("STEPS", " ".join(steps))
        print("CONFIG", sorted(item.segment.config().items()))
"""


def test_bert_demo_style_blueprint_collects_with_its_project_steps(pytester, monkeypatch):
    bsmith = pytester.path / "bsmith"
    (bsmith / "examples" / "blueprints").mkdir(parents=True)
    (bsmith / "examples" / "blueprints" / "bert.yaml").write_text(BERT_PARENT)
    monkeypatch.setenv("BSMITH_DIR", str(bsmith))
    pytester.path.joinpath("bert.onnx").write_bytes(b"not built here")
    pytester.makeconftest(BERT_CONFTEST)
    pytester.makefile(".blueprint.yaml", bert_demo=BERT_DEMO)
    result = pytester.runpytest("--collect-only", "-q", "-s", "--brainsmith-model", "bert.onnx")
    result.stdout.fnmatch_lines(
        [
            "bert_demo.blueprint.yaml::bert_cleanup..shell_metadata_handover",
            "STEPS brainsmith:bert_cleanup user:remove_head user:generate_reference_io "
            "finn:qonnx_to_finn brainsmith:bert_streamlining brainsmith:build_dataflow_graph "
            "finn:specialize_layers brainsmith:target_fps_parallelization "
            "finn:minimize_bit_width finn:generate_estimate_reports finn:hw_codegen "
            "brainsmith:shell_metadata_handover",
            "*('board', 'V80')*('standalone_thresholds', True), "
            "('synth_clk_period_ns', 4.0), ('target_fps', 3000)*",
            "*BlueprintWarning: finn_config.synth_clk_period_ns: 4.0 overrides clock_ns: 5.0*",
            "1 test collected*",
        ]
    )


# -- options ----------------------------------------------------------------------------
NO_MODEL = """
fpga_part: xc7z020clg400-1
clock_ns: 10
"""


def test_model_from_ini_or_environment_and_the_error_without_one(pytester, monkeypatch):
    pytester.makefile(".blueprint.yaml", a=NO_MODEL)
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        ["*a.blueprint.yaml: no model: this blueprint names none*", "*--brainsmith-model PATH*"]
    )
    (pytester.path / "nets").mkdir()
    (pytester.path / "nets" / "x.onnx").write_bytes(b"x")
    pytester.makeini("[pytest]\nbrainsmith_model = nets/x.onnx\n")
    pytester.runpytest("--collect-only", "-q").stdout.fnmatch_lines(["1 test collected*"])
    pytester.makeini("[pytest]\n")
    monkeypatch.setenv("BRAINSMITH_MODEL", str(pytester.path / "nets" / "x.onnx"))
    pytester.runpytest("--collect-only", "-q").stdout.fnmatch_lines(["1 test collected*"])
    missing = pytester.runpytest("--collect-only", "-q", "--brainsmith-model", "nope.onnx")
    missing.stdout.fnmatch_lines(["*given by --brainsmith-model*not found: *nope.onnx"])


@pytest.mark.parametrize(
    "args, ini",
    [
        (["--brainsmith-strict"], ""),
        ([], "brainsmith_strict = true"),
        ([], "strict = true"),  # pytest's own umbrella, as its strict_* options follow it
    ],
)
def test_unknown_key_warns_and_is_an_error_when_strict(pytester, args, ini):
    pytester.path.joinpath("model.onnx").write_bytes(b"x")
    pytester.makefile(".blueprint.yaml", a="model: model.onnx\n" + NO_MODEL + "verbose: 1\n")
    lenient = pytester.runpytest("--collect-only", "-q")
    lenient.stdout.fnmatch_lines(
        [
            "*a.blueprint.yaml:5: BlueprintWarning: verbose: unknown key, ignored*",
            "1 test collected*",
        ]
    )
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    strict = pytester.runpytest("--collect-only", "-q", *args)
    strict.stdout.fnmatch_lines(
        [
            "*a.blueprint.yaml:5: verbose: unknown key, ignored*",
            "*an error because of --brainsmith-strict*",
            "*1 error*",
        ]
    )
    assert "pytest_brainsmith" not in strict.stdout.str()


def test_strict_ini_can_be_turned_off_for_blueprints(pytester):
    pytester.path.joinpath("model.onnx").write_bytes(b"x")
    pytester.makefile(".blueprint.yaml", a="model: model.onnx\n" + NO_MODEL + "verbose: 1\n")
    pytester.makeini("[pytest]\nstrict = true\nbrainsmith_strict = false\n")
    pytester.runpytest("--collect-only", "-q").stdout.fnmatch_lines(["1 test collected*"])
