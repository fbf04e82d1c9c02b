"""Blueprint schema: inheritance, step operations, expansion and every bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import HEAD

from pytest_brainsmith.core.blueprint import load_design_space
from pytest_brainsmith.core.errors import BlueprintError, BlueprintWarning
from pytest_brainsmith.core.toolchain import finn_registry


def load(path: Path, **kwargs):
    return load_design_space(path, finn_registry(), **kwargs)


def step_names(space) -> list:
    return [
        tuple(s.name if s else None for s in slot.options)
        if slot.is_branch
        else slot.options[0].name
        for slot in space.slots
    ]


def error(path: Path, **kwargs) -> BlueprintError:
    with pytest.raises(BlueprintError) as info:
        load(path, **kwargs)
    return info.value


def test_minimal_blueprint_uses_finn_estimate_pipeline(write, model_file):
    space = load(write("a.blueprint.yaml", HEAD))
    assert step_names(space)[0] == "qonnx_to_finn"
    assert step_names(space)[-1] == "generate_estimate_reports"
    assert space.finn_config == {
        "target_fps": 1000,
        "fpga_part": "xc7z020clg400-1",
        "synth_clk_period_ns": 10,
    }
    assert space.model == model_file
    assert space.count_designs() == 1


def test_branch_points_skip_and_counts(write, model_file):
    space = load(
        write(
            "a.yaml",
            HEAD
            + """
design_space:
  steps:
    - qonnx_to_finn
    - [tidy_up, ~]
    - finn:streamline
    - convert_to_hw
    - specialize_layers
  kernels:
    - MVAU: [hls, MVAU_rtl]
    - Thresholding: rtl
  finn_config:
    standalone_thresholds: [true, false]
""",
        )
    )
    assert step_names(space) == [
        "qonnx_to_finn",
        ("tidy_up", None),
        "streamline",
        "convert_to_hw",
        "specialize_layers",
    ]
    assert [(k.kernel.name, k.backends) for k in space.kernels] == [
        ("MVAU", ("hls", "rtl")),
        ("Thresholding", ("rtl",)),
    ]
    assert space.count_designs() == 2 * 2 * 2


def test_extends_deep_merges_config_and_applies_step_operations(write, model_file):
    write(
        "parent.yaml",
        HEAD.replace("finn_config:", "finn_config:\n  mvau_wwidth_max: 36")
        + """
name: parent
design_space:
  steps: [qonnx_to_finn, tidy_up, streamline, convert_to_hw]
  finn_config:
    standalone_thresholds: [true, false]
expect:
  LUT: "<= 10"
""",
    )
    child = write(
        "sub/child.yaml",
        """
extends: ../parent.yaml
name: child
finn_config:
  minimize_bit_width: false
design_space:
  steps:
    - after: tidy_up
      insert: [[minimize_bit_width, ~]]
    - before: qonnx_to_finn
      insert: tidy_up
    - remove: tidy_up
    - replace: convert_to_hw
      with: [convert_to_hw, specialize_layers]
    - at_end: {insert: generate_estimate_reports}
    - at_start: {insert: [[transpose_decomposition, ~]]}
  finn_config:
    standalone_thresholds: [false]
expect:
  DSP: "== 0"
""",
    )
    space = load(child)
    assert space.name == "child"
    assert space.model == model_file  # relative to the parent, where it was written
    assert space.finn_config["mvau_wwidth_max"] == 36
    assert space.finn_config["minimize_bit_width"] is False
    assert space.sweeps == {"standalone_thresholds": [False]}
    assert step_names(space) == [  # remove applies at every match, as in BrainSmith
        ("transpose_decomposition", None),
        "qonnx_to_finn",
        ("minimize_bit_width", None),
        "streamline",
        "convert_to_hw",
        "specialize_layers",
        "generate_estimate_reports",
    ]
    assert sorted(str(e) for e in space.expect) == ["DSP == 0", "LUT <= 10"]


def test_child_step_list_replaces_parent_list(write, model_file):
    write("p.yaml", HEAD + "design_space:\n  steps: [qonnx_to_finn, tidy_up]\n")
    child = write(
        "c.yaml", "extends: p.yaml\ndesign_space:\n  steps: [qonnx_to_finn, streamline]\n"
    )
    assert step_names(load(child)) == ["qonnx_to_finn", "streamline"]


def test_environment_variables_and_blueprint_dir(write, model_file):
    path = write(
        "a.yaml",
        HEAD.replace("model: model.onnx", "model: ${BLUEPRINT_DIR}/${MODEL_NAME}")
        + "description: costs $$5\n",
    )
    space = load(path, env={"MODEL_NAME": "model.onnx"})
    assert space.model == model_file
    assert space.description == "costs $5"
    err = error(path, env={})
    assert "undefined variable ${MODEL_NAME}" in str(err)
    assert err.key == "model" and err.line == 1


def test_start_and_stop_step_cut_the_pipeline(write, model_file):
    space = load(write("a.yaml", HEAD + "start_step: streamline\nstop_step: specialize_layers\n"))
    assert step_names(space)[0] == "streamline"
    assert step_names(space)[-1] == "specialize_layers"


def test_abstract_blueprint_has_no_designs_but_children_do(write, model_file):
    write("p.yaml", HEAD + "abstract: true\n")
    assert load(write("p2.yaml", "abstract: true\n")) is None
    assert load(write("c.yaml", "extends: p.yaml\n")) is not None


@pytest.mark.parametrize(
    "text, key, message, line",
    [
        ("model: [unclosed\n", "", "malformed YAML", 2),
        (HEAD + "output: gds\n", "output", "expected one of estimates, rtl, bitfile", 6),
        (HEAD.replace("model.onnx", "missing.onnx"), "model", "the model file not found", 1),
        (
            HEAD + "design_space:\n  steps: [qonnx_to_finn, [tidy_up, ~, null]]\n",
            "design_space.steps[1]",
            "at most one skip",
            7,
        ),
        (
            HEAD + "design_space:\n  steps: [qonnx_to_finn, streamlin]\n",
            "design_space.steps[1]",
            "did you mean 'streamline'",
            7,
        ),
        (
            HEAD + "design_space:\n  kernels: [MVAUU]\n",
            "design_space.kernels[0]",
            "did you mean 'MVAU'",
            7,
        ),
        (
            HEAD + "design_space:\n  kernels: [{MVAU: vhdl}]\n",
            "design_space.kernels[0].MVAU",
            "expected one of: hls, rtl",
            7,
        ),
        (
            HEAD + "design_space:\n  finn_config:\n    target_fsp: [1, 2]\n",
            "design_space.finn_config.target_fsp",
            "did you mean 'target_fps'",
            8,
        ),
        (
            HEAD + "design_space:\n  finn_config:\n    target_fps: 5\n",
            "design_space.finn_config.target_fps",
            "non-empty list",
            8,
        ),
        (
            HEAD.replace("finn_config:", "finn_config:\n  mvau_wwidth_max: wide"),
            "finn_config.mvau_wwidth_max",
            "expects int",
            5,
        ),
        (
            HEAD + "finn_config:\n  output_dir: x\n",
            "finn_config",
            "duplicate key (first set on line 4)",
            6,
        ),
        (
            HEAD.replace("finn_config:", "finn_config:\n  output_dir: x"),
            "finn_config.output_dir",
            "set by pytest-brainsmith",
            5,
        ),
        (HEAD + "expect:\n  LUT: 20000\n", "expect.LUT", 'expected "<op> <number>"', 7),
        (
            HEAD.replace("finn_config:", "finn_config:\n  large_fifo_mem_style: blok"),
            "finn_config.large_fifo_mem_style",
            "expects one of auto, block, distributed, ultra, got 'blok'",
            5,
        ),
        (HEAD + "expect:\n  LUTS: '< 1'\n", "expect.LUTS", "did you mean 'LUT'", 7),
        (
            HEAD
            + "design_space:\n  steps: [qonnx_to_finn, tidy_up]\n  finn_config:\n    target_fps: [1, 2]\n",
            "design_space.finn_config.target_fps",
            "no step of the pipeline reads target_fps",
            9,
        ),
        (
            HEAD + "design_space:\n  steps:\n    - before: nothing\n      insert: tidy_up\n",
            "design_space.steps[0].before",
            "unknown step 'nothing'",
            8,
        ),
        (
            HEAD
            + "design_space:\n  finn_config:\n    target_fps: [1, 2]\n"
            + "expect:\n  when:\n    - choices: {MVAU: rtl}\n      LUT: '< 1'\n",
            "expect.when[0].choices.MVAU",
            "'MVAU' is not a branch point of this blueprint; branch points: target_fps",
            11,
        ),
        (
            HEAD
            + "design_space:\n  finn_config:\n    target_fps: [1, 2]\n"
            + "expect:\n  when:\n    - choices: {target_fps: 3}\n      LUT: '< 1'\n",
            "expect.when[0].choices.target_fps",
            "target_fps explores 1, 2; got 3",
            11,
        ),
        (
            HEAD
            + "design_space:\n  finn_config:\n    target_fps: [1, 2]\n"
            + "expect:\n  when:\n    - choices: {target_fps: 2}\n",
            "expect.when[0]",
            "expected at least one metric",
            11,
        ),
        ("fpga_part: x\nclock_ns: 1\n", "", "no model: this blueprint names none", None),
        (HEAD.replace("clock_ns: 10\n", ""), "", "missing required key 'clock_ns'", None),
    ],
)
def test_bad_input_names_file_key_and_expectation(write, model_file, text, key, message, line):
    path = write("bad.blueprint.yaml", text)
    err = error(path)
    assert err.file == path
    assert err.key == key
    assert message in str(err)
    if line is not None:
        assert err.line == line


def test_extends_cycle_and_missing_parent(write, model_file):
    write("a.yaml", HEAD + "extends: b.yaml\n")
    write("b.yaml", "extends: a.yaml\n")
    err = error(write("c.yaml", "extends: a.yaml\n"))
    assert "extends cycle" in str(err) and "a.yaml -> " in str(err)
    err = error(write("d.yaml", "extends: nowhere.yaml\n"))
    assert err.key == "extends" and "parent blueprint not found" in str(err)


def test_design_cap_is_checked_before_building_a_tree(write, model_file):
    values = list(range(100))
    path = write(
        "big.yaml",
        HEAD
        + f"design_space:\n  finn_config:\n    target_fps: {values}\n    mvau_wwidth_max: {values}\n",
    )
    assert load(path).count_designs() == 10_000
    err = error(path, max_designs=9_999)
    assert "10,000 designs exceed the cap of 9,999" in str(err)


def test_operation_inserting_an_unknown_step_names_it(write, model_file):
    write("p.yaml", HEAD + "design_space:\n  steps: [qonnx_to_finn, tidy_up]\n")
    child = write(
        "c.yaml",
        "extends: p.yaml\ndesign_space:\n  steps:\n    - after: tidy_up\n      insert: streamlin\n",
    )
    err = error(child)
    assert err.file == child and err.line == 5
    assert "unknown step 'streamlin'; did you mean 'streamline'" in str(err)


def test_expectations_narrow_per_branch_choice(write, model_file):
    from pytest_brainsmith.core.expectations import for_design

    space = load(
        write(
            "a.blueprint.yaml",
            HEAD
            + """
design_space:
  kernels:
    - MVAU: [hls, rtl]
  steps:
    - replace: minimize_bit_width
      with: [[minimize_bit_width, ~]]
expect:
  LUT: "<= 30000"
  DSP: "<= 10"
  when:
    - choices: {MVAU: rtl}
      LUT: "<= 20000"
    - choices: {MVAU: rtl, minimize_bit_width: skip}
      LUT: "<= 25000"
""",
        )
    )

    def held(**choices):
        return sorted(str(e) for e in for_design(space.expect, choices))

    assert held(MVAU="hls", minimize_bit_width="minimize_bit_width") == [
        "DSP <= 10",
        "LUT <= 30000",
    ]
    assert held(MVAU="rtl", minimize_bit_width="minimize_bit_width") == [
        "DSP <= 10",
        "LUT <= 20000 (when MVAU=rtl)",
    ]
    assert held(MVAU="rtl", minimize_bit_width="skip") == [
        "DSP <= 10",
        "LUT <= 25000 (when MVAU=rtl, minimize_bit_width=skip)",
    ]


def test_build_limits_timeout_step_timeouts_and_max_memory(write, model_file):
    write(
        "p.yaml",
        HEAD + "timeout: 2h\nmax_memory: 4G\nstep_timeouts:\n  streamline: 90s\n  tidy_up: 10\n",
    )
    child = write(
        "c.yaml",
        """
        extends: p.yaml
        timeout: 1h30m
        step_timeouts:
          finn:tidy_up: 1m
          step_specialize_layers: 2.5
        """,
    )
    space = load(child)
    assert space.timeout == 5400.0
    assert space.max_memory == 4 << 30
    # merged key by key, keyed by the step's short name
    assert space.step_timeouts == {"streamline": 90.0, "tidy_up": 60.0, "specialize_layers": 2.5}
    plain = load(write("plain.yaml", HEAD))
    assert (plain.timeout, plain.step_timeouts, plain.max_memory) == (None, {}, None)


@pytest.mark.parametrize(
    "text, key, message, line",
    [
        ("timeout: soon\n", "timeout", "expected a duration such as 90s or 2h, got 'soon'", 6),
        ("timeout: -3\n", "timeout", "expected a positive duration", 6),
        ("timeout: [1]\n", "timeout", "expected a duration such as 90s or 2h, got list", 6),
        ("max_memory: lots\n", "max_memory", "expected a size such as 4G or 512M", 6),
        ("max_memory: true\n", "max_memory", "got bool", 6),
        ("step_timeouts: 5\n", "step_timeouts", "expected a mapping of step: duration", 6),
        (
            "step_timeouts:\n  streamlin: 5\n",
            "step_timeouts.streamlin",
            "'streamlin' is not a step of the pipeline\n  did you mean 'streamline'?",
            7,
        ),
        (
            "design_space:\n  steps: [qonnx_to_finn]\nstep_timeouts:\n  tidy_up: 5\n",
            "step_timeouts.tidy_up",
            "'tidy_up' is not a step of the pipeline",
            9,
        ),
        ("step_timeouts:\n  tidy_up: fast\n", "step_timeouts.tidy_up", "got 'fast'", 7),
        (
            "step_timeouts:\n  tidy_up: 5\n  finn:tidy_up: 6\n",
            "step_timeouts.finn:tidy_up",
            "step 'tidy_up' is given a timeout twice",
            8,
        ),
    ],
)
def test_bad_build_limits_name_file_key_and_expectation(
    write, model_file, text, key, message, line
):
    path = write("bad.yaml", HEAD + text)
    err = error(path)
    assert (err.file, err.key, err.line) == (path, key, line)
    assert message in str(err)


def test_step_resources_are_keyed_by_short_name_and_merged_resource_by_resource(write, model_file):
    write(
        "p.yaml",
        HEAD
        + "step_resources:\n"
        + "  streamline: {vivado: 2, memory: 16G}\n"
        + "  tidy_up: {licences: 1}\n",
    )
    child = write(
        "c.yaml",
        """
        extends: p.yaml
        step_resources:
          step_streamline: {memory: 32e9}
          finn:specialize_layers:
            memory: 512M
            vivado: 0
        """,
    )
    space = load(child)
    assert space.step_resources == {
        # the parent's vivado stays, the child's memory wins (a size, in bytes)
        "streamline": {"vivado": 2.0, "memory": 32e9},
        "tidy_up": {"licences": 1.0},
        "specialize_layers": {"memory": float(512 << 20), "vivado": 0.0},
    }
    assert load(write("plain.yaml", HEAD)).step_resources == {}


def test_a_resource_name_close_to_a_known_one_is_warned_about(write, model_file):
    path = write("w.yaml", HEAD + "step_resources:\n  streamline: {memroy: 4, gpus: 1}\n")
    with pytest.warns(BlueprintWarning) as record:
        space = load(path)
    assert space.step_resources == {"streamline": {"memroy": 4.0, "gpus": 1.0}}
    (warning,) = record  # gpus is no misspelling: asked of the workers as written
    assert "step_resources.streamline.memroy" in str(warning.message)
    assert "did you mean 'memory'?" in str(warning.message) and warning.lineno == 7


@pytest.mark.parametrize(
    "text, key, message, line",
    [
        (
            "step_resources: [vivado]\n",
            "step_resources",
            "expected a mapping of step: {resource: amount}, got list",
            6,
        ),
        (
            "step_resources:\n  streamline: 1\n",
            "step_resources.streamline",
            "expected a mapping of resource: amount (e.g. {vivado: 1, memory: 16G}), got int",
            7,
        ),
        (
            "step_resources:\n  streamlin: {vivado: 1}\n",
            "step_resources.streamlin",
            "'streamlin' is not a step of the pipeline\n  did you mean 'streamline'?",
            7,
        ),
        (
            "design_space:\n  steps: [qonnx_to_finn]\nstep_resources:\n  tidy_up: {vivado: 1}\n",
            "step_resources.tidy_up",
            "'tidy_up' is not a step of the pipeline",
            9,
        ),
        (
            "step_resources:\n  tidy_up:\n    vivado: lots\n",
            "step_resources.tidy_up.vivado",
            "expected a number such as 1, got 'lots'",
            8,
        ),
        (
            "step_resources:\n  tidy_up:\n    vivado: -1\n",
            "step_resources.tidy_up.vivado",
            "expected a finite number of at least 0, got -1",
            8,
        ),
        (
            "step_resources:\n  tidy_up:\n    vivado: true\n",
            "step_resources.tidy_up.vivado",
            "expected a number such as 1, got bool",
            8,
        ),
        (
            "step_resources:\n  tidy_up:\n    memory: huge\n",
            "step_resources.tidy_up.memory",
            "expected a size such as 4G or 512M, got 'huge'",
            8,
        ),
        (
            "step_resources:\n  tidy_up:\n    memory: [1]\n",
            "step_resources.tidy_up.memory",
            "expected a size such as 16G, got list",
            8,
        ),
        (
            "step_resources:\n  tidy_up:\n    vivado hls: 1\n",
            "step_resources.tidy_up.vivado hls",
            "expected a resource name (letters, digits, _ . -)",
            8,
        ),
        (
            "step_resources:\n  tidy_up: {vivado: 1}\n  finn:tidy_up: {vivado: 2}\n",
            "step_resources.finn:tidy_up",
            "step 'tidy_up' is given resources twice",
            8,
        ),
    ],
)
def test_bad_step_resources_name_file_line_key_and_expectation(
    write, model_file, text, key, message, line
):
    path = write("bad.yaml", HEAD + text)
    err = error(path)
    assert (err.file, err.key, err.line) == (path, key, line)
    assert message in str(err)


def test_a_bad_inherited_step_resource_is_reported_in_the_parent(write, model_file):
    parent = write("p.yaml", HEAD + "step_resources:\n  tidy_up:\n    memory: huge\n")
    child = write("c.yaml", "extends: p.yaml\nstep_resources:\n  tidy_up: {vivado: 1}\n")
    err = error(child)
    assert (err.file, err.key, err.line) == (parent, "step_resources.tidy_up.memory", 8)
    write("good.yaml", HEAD + "step_resources:\n  tidy_up: {vivado: 1}\n")
    unknown = write("u.yaml", "extends: good.yaml\nstep_resources:\n  tidy: {vivado: 1}\n")
    err = error(unknown)
    assert (err.file, err.key, err.line) == (unknown, "step_resources.tidy", 3)


def test_a_finn_config_typo_gets_a_did_you_mean_wherever_it_is_written(write, model_file):
    """``target_fsp`` for ``target_fps``: in finn_config, in a sweep, and in a ``where=``
    (``explore()``, the pytest marker): the field meant is named."""
    for text, key in [
        (HEAD.replace("target_fps: 1000", "target_fsp: 1000"), "finn_config.target_fsp"),
        (
            HEAD + "design_space:\n  finn_config:\n    target_fsp: [1, 2]\n",
            "design_space.finn_config.target_fsp",
        ),
    ]:
        err = error(write("t.blueprint.yaml", text))
        assert err.key == key and "unknown FINN config field" in err.message
        assert err.hint is not None and "did you mean 'target_fps'" in err.hint

    space = load(
        write("w.blueprint.yaml", HEAD + "design_space:\n  finn_config:\n    target_fps: [1, 2]\n")
    )
    assert space.unknown_choices({"target_fps": 1}) is None
    assert space.unknown_choices({"target_fsp": 1}) == (
        "'target_fsp' is not a branch point; did you mean 'target_fps'? (branch points: target_fps)"
    )
    assert space.unknown_choices({"mvau_wwidth_max": 36}) == (
        "'mvau_wwidth_max' is not swept in this blueprint (a fixed value) (branch points: target_fps)"
    )
    assert space.unknown_choices({"folding": "trial-0"}, also=["folding"]) is None

    from pytest_brainsmith import explore

    with pytest.raises(BlueprintError) as info:  # before anything is built
        explore(
            write(
                "w.blueprint.yaml", HEAD + "design_space:\n  finn_config:\n    target_fps: [1, 2]\n"
            ),
            where={"target_fsp": 1},
        )
    assert "where: 'target_fsp' is not a branch point; did you mean 'target_fps'?" in str(
        info.value
    )
