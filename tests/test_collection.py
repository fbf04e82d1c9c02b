"""The plugin as users run it: pytest collects blueprints into a tree of designs."""

from __future__ import annotations

import pytest

BLUEPRINT = """
model: model.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10
finn_config:
  target_fps: 1000
design_space:
  kernels:
    - MVAU: [hls, rtl]
  finn_config:
    target_fps: [100, 200]
"""


@pytest.fixture
def project(pytester: pytest.Pytester):
    pytester.path.joinpath("model.onnx").write_bytes(b"never built here")
    pytester.makefile(".blueprint.yaml", tfc=BLUEPRINT)
    return pytester


def test_collect_only_shows_tree_with_readable_stable_ids(project):
    result = project.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "tfc.blueprint.yaml::qonnx_to_finn..create_dataflow_partition::MVAU[[]hls]::target_fps[[]100]",
            "tfc.blueprint.yaml::qonnx_to_finn..create_dataflow_partition::MVAU[[]hls]::target_fps[[]200]",
            "tfc.blueprint.yaml::qonnx_to_finn..create_dataflow_partition::MVAU[[]rtl]::target_fps[[]100]",
            "tfc.blueprint.yaml::qonnx_to_finn..create_dataflow_partition::MVAU[[]rtl]::target_fps[[]200]",
            "4 tests collected*",
        ]
    )
    tree = project.runpytest("--collect-only")
    tree.stdout.fnmatch_lines(
        [
            "*<BlueprintFile tfc.blueprint.yaml>",
            "*  <SegmentCollector qonnx_to_finn..create_dataflow_partition>",
            "*    <SegmentCollector MVAU[[]hls]>",
            "*      <DesignItem target_fps[[]100]>",
        ]
    )


def test_collection_does_not_import_finn(project):
    project.makeconftest(
        """
        import sys
        def pytest_collection_finish(session):
            print("FINN_IMPORTED", "finn" in sys.modules, "torch" in sys.modules)
        """
    )
    result = project.runpytest_subprocess("--collect-only", "-q", "-s")
    result.stdout.fnmatch_lines(["FINN_IMPORTED False False"])


def test_k_selects_designs_by_choice_and_marks_apply(project):
    result = project.runpytest("--collect-only", "-q", "-k", "MVAU[rtl] and not target_fps[200]")
    result.stdout.fnmatch_lines(
        ["*MVAU[[]rtl]::target_fps[[]100]", "1/4 tests collected (3 deselected)*"]
    )
    project.makeconftest(
        """
        import pytest
        def pytest_collection_modifyitems(items):
            for item in items:
                if "rtl" in item.nodeid:
                    item.add_marker(pytest.mark.slow)
        """
    )
    result = project.runpytest("--collect-only", "-q", "-m", "not slow")
    result.stdout.fnmatch_lines(["2/4 tests collected (2 deselected)*"])


def test_only_matching_files_are_blueprints_and_abstract_parents_are_skipped(pytester):
    pytester.path.joinpath("model.onnx").write_bytes(b"x")
    pytester.makefile(".yaml", base=BLUEPRINT)  # no .blueprint suffix: a parent only
    pytester.makefile(".blueprint.yaml", parent="extends: base.yaml\nabstract: true\n")
    pytester.makefile(".blueprint.yaml", child="extends: parent.blueprint.yaml\n")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["child.blueprint.yaml::*", "4 tests collected*"])
    assert "parent.blueprint.yaml::" not in result.stdout.str()
    pytester.makeini("[pytest]\nbrainsmith_blueprints = base.yaml\n")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["base.yaml::*", "4 tests collected*"])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("model: [oops\n", ["*tfc.blueprint.yaml:1: malformed YAML: expected ',' or ']'*"]),
        (
            BLUEPRINT + "  stepz: []\n",
            ["*tfc.blueprint.yaml:11: design_space.stepz: unknown key", "*did you mean 'steps'?"],
        ),
        (
            BLUEPRINT.replace("model.onnx", "nope.onnx"),
            ["*tfc.blueprint.yaml:1: model: the model file not found: *nope.onnx"],
        ),
        (
            BLUEPRINT + "extends: tfc.blueprint.yaml\n",
            ["*tfc.blueprint.yaml:11: extends: extends cycle*"],
        ),
    ],
)
def test_bad_blueprint_is_a_clear_collection_error_without_our_traceback(project, text, expected):
    project.makefile(".blueprint.yaml", tfc=text)
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR collecting tfc.blueprint.yaml*", *expected])
    assert "pytest_brainsmith" not in result.stdout.str()  # no frames from our internals


def test_design_cap_from_command_line_and_ini(project):
    result = project.runpytest("--brainsmith-max-designs", "3")
    result.stdout.fnmatch_lines(["*design_space: 4 designs exceed the cap of 3*"])
    project.makeini("[pytest]\nbrainsmith_max_designs = 2\n")
    result = project.runpytest("--collect-only")
    result.stdout.fnmatch_lines(["*4 designs exceed the cap of 2*"])


def test_user_steps_registered_in_conftest(project):
    project.makeconftest(
        """
        def my_check(model, cfg):
            return model

        def pytest_brainsmith_register(registry):
            registry.register_step(my_check, reads=())
        """
    )
    project.makefile(
        ".blueprint.yaml",
        tfc=BLUEPRINT + "  steps: [qonnx_to_finn, [my_check, user:my_check_typo], tidy_up]\n",
    )
    result = project.runpytest("--collect-only")
    result.stdout.fnmatch_lines(
        ["*unknown step 'user:my_check_typo'; did you mean 'user:my_check'?*"]
    )
