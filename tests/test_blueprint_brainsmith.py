"""BrainSmith's blueprint forms (issue 13): each is read as BrainSmith reads it."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from conftest import HEAD

from pytest_brainsmith.core.blueprint import load_design_space
from pytest_brainsmith.core.errors import BlueprintError, BlueprintWarning
from pytest_brainsmith.core.keys import segment_key
from pytest_brainsmith.core.toolchain import finn_registry
from pytest_brainsmith.core.tree import build_execution_tree
from pytest_brainsmith.finn.runner import checkpoint_name

NO_MODEL = HEAD.replace("model: model.onnx\n", "")


def load(path: Path, registry=None, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BlueprintWarning)
        return load_design_space(path, registry or finn_registry(), **kwargs)


def error(path: Path, registry=None, **kwargs) -> BlueprintError:
    with pytest.raises(BlueprintError) as info:
        load(path, registry, **kwargs)
    return info.value


def step_names(space) -> list:
    return [
        tuple(s.name if s else None for s in slot.options)
        if slot.is_branch
        else slot.options[0].name
        for slot in space.slots
    ]


# -- 1: the model ------------------------------------------------------------------------
def test_model_from_the_command_line_when_the_blueprint_names_none(write, tmp_path):
    other = tmp_path / "elsewhere" / "net.onnx"
    other.parent.mkdir()
    other.write_bytes(b"x")
    path = write("a.blueprint.yaml", NO_MODEL)
    assert load(path, model=other).model == other
    err = error(path)
    assert err.file == path
    assert "no model" in str(err) and "--brainsmith-model" in str(err)
    assert "not found" in str(error(path, model=tmp_path / "nope.onnx"))


def test_the_blueprint_model_wins_over_the_command_line(write, model_file, tmp_path):
    other = tmp_path / "other.onnx"
    other.write_bytes(b"y")
    assert load(write("a.yaml", HEAD), model=other).model == model_file


def test_a_list_of_models_is_one_subtree_per_model(write, model_file, tmp_path):
    (tmp_path / "cnv.onnx").write_bytes(b"z")
    path = write(
        "a.blueprint.yaml",
        NO_MODEL
        + """
model: [model.onnx, cnv.onnx]
design_space:
  finn_config:
    target_fps: [1, 2]
expect:
  when:
    - choices: {model: cnv}
      LUT: "<= 5"
""",
    )
    space = load(path)
    assert [(m.name, m.path.name) for m in space.models] == [
        ("model", "model.onnx"),
        ("cnv", "cnv.onnx"),
    ]
    assert space.variation_points()["model"] == ["model", "cnv"]
    assert space.count_designs() == 4
    tree = build_execution_tree(space)
    assert [c.name for c in tree.root.children] == ["model[model]", "model[cnv]"]
    assert tree.root.steps == ()  # nothing is shared between two networks
    leaves = list(tree.designs())
    assert [dict(c.describe() for c in leaf.choices()) for leaf in leaves] == [
        {"model": "model", "target_fps": 1},
        {"model": "model", "target_fps": 2},
        {"model": "cnv", "target_fps": 1},
        {"model": "cnv", "target_fps": 2},
    ]
    assert [leaf.model().name for leaf in leaves] == ["model.onnx"] * 2 + ["cnv.onnx"] * 2
    # each subtree's first segment is keyed by its own model's content
    firsts = tree.root.children
    keys = {segment_key(s.steps, s.config(), parent_key=None, model=s.model())[0] for s in firsts}
    assert len(keys) == 2
    err = error(write("b.yaml", NO_MODEL + "model: [model.onnx, ./model.onnx]\n"))
    assert err.key == "model[1]" and "twice" in str(err)


def test_models_with_the_same_file_name_are_named_by_folder(write, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "net.onnx").write_bytes(folder.encode())
    space = load(write("x.yaml", NO_MODEL + "model: [a/net.onnx, b/net.onnx]\n"))
    assert [m.name for m in space.models] == ["a/net", "b/net"]


def test_the_engine_builds_each_model_subtree_from_its_own_model(
    write, model_file, tmp_path, monkeypatch
):
    """Without FINN: the runner is replaced by one that records its input model."""
    from pytest_brainsmith.core.cache import SegmentCache
    from pytest_brainsmith.core.engine import Engine
    from pytest_brainsmith.finn import runner
    from pytest_brainsmith.finn.runner import BuildOutcome

    (tmp_path / "cnv.onnx").write_bytes(b"another network")
    seen = []

    def fake_run_segment(*, path_steps, first, input_model, out_dir, **_):
        seen.append((Path(input_model).name, first))
        out = out_dir / "intermediate_models"
        out.mkdir(parents=True)
        model = out / f"{checkpoint_name(path_steps[-1])}.onnx"
        model.write_bytes(Path(input_model).read_bytes())
        (out_dir / "build_dataflow.log").write_text("")
        return BuildOutcome(True, model, out_dir / "build_dataflow.log")

    monkeypatch.setattr(runner, "import_finn", lambda: {})
    monkeypatch.setattr(runner, "run_segment", fake_run_segment)
    space = load(write("a.yaml", NO_MODEL + "model: [model.onnx, cnv.onnx]\n"))
    engine = Engine(SegmentCache(tmp_path / "cache"), workers=0)  # inline: the fake runs here
    for leaf in build_execution_tree(space).designs():
        assert all(outcome.ok for outcome in engine.chain(leaf))
    assert sorted(seen) == [("cnv.onnx", 0), ("model.onnx", 0)]


# -- 2: target_fps / folding_config_file are not required ----------------------------------
def test_neither_target_fps_nor_folding_config_is_required(write, model_file):
    space = load(write("a.yaml", HEAD.replace("finn_config:\n  target_fps: 1000\n", "")))
    assert "target_fps" not in space.finn_config


def test_a_device_is_required_only_where_a_finn_step_resolves_the_part(write, model_file):
    text = "model: model.onnx\nclock_ns: 5\n"
    assert load(write("a.yaml", text + "design_space:\n  steps: [qonnx_to_finn, tidy_up]\n"))
    err = error(write("b.yaml", text))
    assert "missing 'fpga_part' or 'board'" in str(err) and "specialize_layers" in str(err)


# -- 3: variables -------------------------------------------------------------------------
def test_yaml_dir_bsmith_dir_bare_vars_and_blueprint_dir_in_a_parent(write, tmp_path, model_file):
    bsmith = tmp_path / "bsmith"
    (bsmith / "models").mkdir(parents=True)
    (bsmith / "models" / "net.onnx").write_bytes(b"x")
    write(
        "bsmith/examples/parent.yaml",
        """
        model: ${YAML_DIR}/../models/net.onnx
        fpga_part: xc7z020clg400-1
        clock_ns: 5
        description: ${BLUEPRINT_DIR} and $NAME
        """,
    )
    child = write("project/sub/child.yaml", "extends: ${BSMITH_DIR}/examples/parent.yaml\n")
    space = load(child, env={"BSMITH_DIR": str(bsmith), "NAME": "tfc"})
    assert space.model == bsmith / "models" / "net.onnx"
    # BLUEPRINT_DIR in a parent is the blueprint being loaded's folder, as in BrainSmith
    assert space.description == f"{child.parent} and tfc"
    err = error(child, env={})
    assert err.key == "extends" and "undefined variable ${BSMITH_DIR}" in str(err)
    assert "BSMITH_DIR to BrainSmith's directory" in str(err)
    bare = write("bare.yaml", HEAD + "name: $UNDEFINED_ONE\n")
    assert "undefined variable ${UNDEFINED_ONE}" in str(error(bare, env={}))
    assert load(
        write("dollar.yaml", HEAD + "description: costs $5 or $$x\n"), env={}
    ).description == ("costs $5 or $x")


# -- 4: unknown top-level keys ----------------------------------------------------------------
def test_brainsmith_keys_are_accepted_and_unknown_keys_warn_or_fail_under_strict(write, model_file):
    brainsmith = "save_intermediate_models: true\nverify: false\nverify_data: x\nparallel_builds: 4\ndebug: true\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_design_space(write("a.yaml", HEAD + brainsmith), finn_registry())
    path = write("b.yaml", HEAD + "outptu: rtl\n")
    with pytest.warns(BlueprintWarning) as record:
        space = load_design_space(path, finn_registry())
    assert space.output == "estimates"
    (warning,) = record
    assert warning.filename == str(path) and warning.lineno == 6
    assert "outptu: unknown key, ignored (did you mean 'output'?)" in str(warning.message)
    assert [w.key for w in space.warnings] == ["outptu"]
    err = error(path, strict=True)
    assert err.line == 6 and err.key == "outptu" and "--brainsmith-strict" in str(err)


def test_a_warning_filter_that_raises_is_an_error_naming_the_file(write, model_file):
    path = write("b.yaml", HEAD + "outptu: rtl\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", BlueprintWarning)
        with pytest.raises(BlueprintError) as info:
            load_design_space(path, finn_registry())
    assert info.value.file == path and info.value.line == 6


# -- 5, 6, 7: steps -----------------------------------------------------------------------
def test_quoted_tilde_skips(write, model_file):
    space = load(
        write("a.yaml", HEAD + 'design_space:\n  steps: [qonnx_to_finn, [tidy_up, "~"]]\n')
    )
    assert step_names(space) == ["qonnx_to_finn", ("tidy_up", None)]


def test_plain_steps_and_operations_in_one_list(write, model_file):
    write("p.yaml", HEAD + "design_space:\n  steps: [qonnx_to_finn, streamline]\n")
    child = write(
        "c.yaml",
        """
        extends: p.yaml
        design_space:
          steps:
            - qonnx_to_finn
            - after: qonnx_to_finn
              insert: tidy_up
            - convert_to_hw
        """,
    )
    assert step_names(load(child)) == ["qonnx_to_finn", "tidy_up", "convert_to_hw"]


def test_an_operation_may_target_a_branch_point_as_a_set(write, model_file):
    path = write(
        "a.yaml",
        HEAD
        + """
design_space:
  steps:
    - qonnx_to_finn
    - [tidy_up, streamline, ~]
    - replace: [~, streamline, finn:tidy_up]
      with: [[streamline, ~]]
    - after: [streamline, ~]
      insert: convert_to_hw
""",
    )
    assert step_names(load(path)) == ["qonnx_to_finn", ("streamline", None), "convert_to_hw"]


# -- 8: the same step twice ------------------------------------------------------------------
def test_the_same_step_twice_has_its_own_checkpoint_and_key(write, model_file):
    path = write(
        "a.yaml",
        HEAD
        + """
design_space:
  steps: [qonnx_to_finn, tidy_up, [streamline, ~], tidy_up, [streamline, ~]]
""",
    )
    space = load(path)
    steps = [s for slot in space.slots for s in slot.options if s is not None]
    assert [(s.name, s.occurrence) for s in steps] == [
        ("qonnx_to_finn", 1),
        ("tidy_up", 1),
        ("streamline", 1),
        ("tidy_up", 2),
        ("streamline", 2),
    ]
    assert [checkpoint_name(s) for s in steps][1:4] == [
        "step_tidy_up",
        "step_streamline",
        "step_tidy_up#2",
    ]
    assert list(space.variation_points()) == ["streamline", "streamline#2"]
    assert (
        segment_key([steps[1]], {}, parent_key="p", model=None)[0]
        != (segment_key([steps[3]], {}, parent_key="p", model=None)[0])
    )


def test_start_and_stop_step_take_the_next_occurrence_and_may_be_in_a_branch(write, model_file):
    path = write(
        "a.yaml",
        HEAD
        + """
start_step: streamline
stop_step: tidy_up
design_space:
  steps: [qonnx_to_finn, tidy_up, [streamline, ~], tidy_up, convert_to_hw]
""",
    )
    assert step_names(load(path)) == [("streamline", None), "tidy_up"]
    err = error(write("b.yaml", HEAD + "start_step: streamline\nstop_step: tidy_up\n"))
    assert (
        err.key == "stop_step"
        and "'tidy_up' is not a step of the pipeline after start_step" in str(err)
    )


# -- 9, 10: finn_config against the top-level keys -----------------------------------------------
def test_finn_config_overrides_the_shorthands_with_a_warning(write, model_file):
    path = write(
        "a.yaml",
        HEAD.replace("finn_config:", "finn_config:\n  synth_clk_period_ns: 4\n  board: Pynq-Z1")
        + "board: ZCU104\n",
    )
    with pytest.warns(BlueprintWarning) as record:
        space = load_design_space(path, finn_registry())
    assert space.finn_config["synth_clk_period_ns"] == 4
    assert space.finn_config["board"] == "Pynq-Z1"
    messages = sorted(str(w.message) for w in record)
    assert messages[0].startswith("finn_config.board: 'Pynq-Z1' overrides board: 'ZCU104'")
    assert messages[1].startswith("finn_config.synth_clk_period_ns: 4 overrides clock_ns: 10")
    assert {w.lineno for w in record} == {5, 6}
    same = write("b.yaml", HEAD.replace("finn_config:", "finn_config:\n  synth_clk_period_ns: 10"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_design_space(same, finn_registry())  # agreeing values: nothing to say


def test_generate_outputs_overrides_what_output_chooses(write, model_file):
    path = write(
        "a.yaml",
        HEAD.replace(
            "finn_config:", "finn_config:\n  generate_outputs: [estimate_reports, stitched_ip]"
        ),
    )
    space = load(path)
    assert space.output == "estimates" and "generate_outputs" not in space.finn_config
    assert space.generate_outputs == ["estimate_reports", "stitched_ip"]
    assert load(write("b.yaml", HEAD)).generate_outputs == ["estimate_reports"]
    bad = write(
        "c.yaml", HEAD.replace("finn_config:", "finn_config:\n  generate_outputs: [estimate_only]")
    )
    err = error(bad)
    assert (
        err.key == "finn_config.generate_outputs[0]"
        and "unknown FINN output 'estimate_only'" in str(err)
    )


# -- 12: an operation whose target is not there ----------------------------------------------
def test_an_operation_without_its_target_warns_and_changes_nothing(write, model_file):
    path = write(
        "a.yaml",
        HEAD
        + """
design_space:
  steps:
    - qonnx_to_finn
    - [tidy_up, ~]
    - remove: tidy_up
    - after: streamline
      insert: convert_to_hw
""",
    )
    with pytest.warns(BlueprintWarning) as record:
        space = load_design_space(path, finn_registry())
    assert step_names(space) == ["qonnx_to_finn", ("tidy_up", None)]
    first, second = (str(w.message) for w in record)
    assert first.startswith("design_space.steps[2].remove: 'tidy_up' is not in the steps")
    assert "alternative of the branch point [tidy_up, ~]" in first
    assert second.startswith("design_space.steps[3].after: 'streamline' is not in the steps")
    assert [w.lineno for w in record] == [11, 12]
    err = error(path, strict=True)
    assert err.key == "design_space.steps[2].remove" and err.line == 11


# -- 13: a project step shadows FINN's short name --------------------------------------------------
def test_a_project_step_shadows_finns_short_name(write, model_file):
    registry = finn_registry()

    def streamline(model, cfg):
        return model

    registry.register_step(streamline, reads=())
    assert registry.step("streamline").namespace == "user"
    assert registry.step("finn:streamline").is_finn
    space = load(
        write(
            "a.yaml",
            HEAD + "design_space:\n  steps: [qonnx_to_finn, streamline, finn:streamline]\n",
        ),
        registry,
    )
    assert [s.options[0].qualified for s in space.slots] == [
        "finn:qonnx_to_finn",
        "user:streamline",
        "finn:streamline",
    ]
    default = load(write("b.yaml", HEAD), registry)  # FINN's own pipeline stays FINN's
    assert all(slot.options[0].is_finn for slot in default.slots)
    registry.register_step(lambda m, c: m, name="tidy_up", namespace="brainsmith", reads=())
    registry.register_step(lambda m, c: m, name="tidy_up", namespace="myproject", reads=())
    registry.register_step(lambda m, c: m, name="convert_to_hw", namespace="brainsmith", reads=())
    assert registry.step("tidy_up").namespace == "myproject"
    assert registry.step("convert_to_hw").namespace == "brainsmith"


# -- 14: save_intermediate_models: false ---------------------------------------------------------
def test_save_intermediate_models_false_is_ignored_with_the_reason(write, model_file):
    path = write(
        "a.yaml", HEAD.replace("finn_config:", "finn_config:\n  save_intermediate_models: false")
    )
    with pytest.warns(BlueprintWarning, match="needs FINN's checkpoints to resume segments"):
        space = load_design_space(path, finn_registry())
    assert "save_intermediate_models" not in space.finn_config
    assert "save_intermediate_models" in str(error(path, strict=True))
