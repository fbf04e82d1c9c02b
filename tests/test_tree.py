"""Tree shape: where variation points branch, sharing, statistics and exports."""

from __future__ import annotations

import json

from conftest import HEAD

from pytest_brainsmith.core.blueprint import load_design_space
from pytest_brainsmith.core.toolchain import KERNEL_BACKENDS, finn_registry
from pytest_brainsmith.core.tree import build_execution_tree


def tree_of(write, text: str, registry=None):
    path = write("t.blueprint.yaml", HEAD + text)
    return build_execution_tree(load_design_space(path, registry or finn_registry()))


def test_sweeps_branch_right_before_their_first_reader(write, model_file):
    tree = tree_of(
        write,
        """
design_space:
  kernels:
    - MVAU: [hls, rtl]
  finn_config:
    target_fps: [100, 200]
    standalone_thresholds: [false, true]
""",
    )
    # standalone_thresholds is read by convert_to_hw, the MVAU backend by
    # specialize_layers, target_fps by target_fps_parallelization
    assert [(lv.key, lv.position) for lv in tree.levels] == [
        ("standalone_thresholds", 3),
        ("MVAU", 6),
        ("target_fps", 7),
    ]
    root = tree.root
    assert [s.name for s in root.steps] == ["qonnx_to_finn", "tidy_up", "streamline"]
    first = root.children[0]
    assert first.name == "standalone_thresholds[false]"
    assert [s.name for s in first.steps] == [
        "convert_to_hw",
        "minimize_bit_width_initial",
        "create_dataflow_partition",
    ]
    leaf = next(tree.designs())
    assert leaf.nodeid_parts() == [
        "qonnx_to_finn..streamline",
        "standalone_thresholds[false]",
        "MVAU[hls]",
        "target_fps[100]",
    ]
    assert [s.name for s in leaf.steps] == [
        "target_fps_parallelization",
        "apply_folding_config",
        "minimize_bit_width",
        "generate_estimate_reports",
    ]
    config = leaf.config()
    assert config["target_fps"] == 100
    assert config["standalone_thresholds"] is False
    assert config[KERNEL_BACKENDS] == {"MVAU": "hls"}
    stats = tree.stats()
    assert stats.designs == 8
    assert stats.segments == 1 + 2 + 4 + 8
    assert stats.steps_naive == 8 * 11
    assert stats.steps_executed == 3 + 2 * 3 + 4 * 1 + 8 * 4
    assert round(stats.saving_percent, 1) == round(100 * (1 - 45 / 88), 1)


def test_step_branch_and_skip_make_their_own_segments(write, model_file):
    tree = tree_of(
        write,
        """
design_space:
  steps:
    - qonnx_to_finn
    - [streamline, ~]
    - convert_to_hw
""",
    )
    names = [(s.name, [x.name for x in s.steps]) for s in tree.root.children]
    assert names == [
        ("streamline", ["streamline", "convert_to_hw"]),
        ("skip[streamline]", ["convert_to_hw"]),
    ]


def test_levels_at_the_same_position_make_empty_intermediate_segments(write, model_file):
    tree = tree_of(
        write,
        """
design_space:
  finn_config:
    target_fps: [1, 2]
    mvau_wwidth_max: [36, 72]
""",
    )
    middle = tree.root.children[0]
    assert middle.steps == ()
    assert all(len(c.steps) == 4 for c in middle.children)


def test_user_step_that_may_read_anything_pulls_sweeps_before_it(write, model_file):
    registry = finn_registry()
    registry.register_step(lambda model, cfg: model, name="mystery")  # reads unknown
    registry.register_step(lambda model, cfg: model, name="pure", reads=())
    tree = tree_of(
        write,
        """
design_space:
  steps: [qonnx_to_finn, pure, mystery, target_fps_parallelization]
  finn_config:
    target_fps: [1, 2]
""",
        registry,
    )
    assert [(lv.key, lv.position) for lv in tree.levels] == [("target_fps", 2)]
    assert [s.name for s in tree.root.steps] == ["qonnx_to_finn", "pure"]


def test_exports_json_and_dot(write, model_file):
    tree = tree_of(write, "design_space:\n  finn_config:\n    target_fps: [1, 2]\n")
    data = json.loads(tree.to_json(status={1: "built"}))
    assert data["stats"]["designs"] == 2
    assert [c["choice"] for c in data["root"]["children"]] == [{"target_fps": 1}, {"target_fps": 2}]
    assert data["root"]["children"][0]["status"] == "built"
    dot = tree.to_dot(status={1: "failed"})
    assert dot.startswith('digraph "t" {')
    assert 's0 -> s1 [label="target_fps[1]"]' in dot
    assert "fillcolor=salmon" in dot
