"""End to end on real FINN: segments built through FINN's builder, cached, reused,
and failures propagated. Each run is a pytest subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import FAILING_STEPS, MODEL
from conftest import TFC_BLUEPRINT as BLUEPRINT

#: Records every segment this process builds, one JSON line each.
RECORDING_CONFTEST = """
import json, os

def pytest_brainsmith_segment_finish(segment, result):
    with open(os.path.join(os.path.dirname(__file__), "builds.jsonl"), "a") as log:
        log.write(json.dumps({"segment": result.segment, "status": result.status,
                              "key": result.key, "pid": os.getpid()}) + "\\n")
"""

FAILING_STEP_CONFTEST = RECORDING_CONFTEST + FAILING_STEPS


def builds(pytester: pytest.Pytester) -> list[dict]:
    log = pytester.path / "builds.jsonl"
    if not log.exists():
        return []
    lines = log.read_text().splitlines()
    log.unlink()
    return [json.loads(line) for line in lines]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copyfile(MODEL, pytester.path / "tfc.onnx")
    pytester.makeconftest(RECORDING_CONFTEST)
    pytester.makefile(".blueprint.yaml", tfc=BLUEPRINT)
    return pytester


def test_tree_builds_each_segment_once_and_a_second_run_builds_nothing(project):
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    first = builds(project)
    # root (front end) + 2 MVAU backends + 4 target_fps leaves
    assert len(first) == 7
    assert {b["status"] for b in first} == {"built"}
    assert len({b["key"] for b in first}) == 7
    result.stdout.fnmatch_lines(["*this run built 7 segments, 0 failed*"])

    again = project.runpytest_subprocess("-p", "no:cacheprovider")
    again.assert_outcomes(passed=4)
    assert builds(project) == []


def step_models(cache: Path) -> list[tuple[list[str], list[str]]]:
    """Each entry's steps, and the models after a step it holds (FINN's ``step_<name>.onnx``)."""
    found = []
    for manifest in (cache / "v1" / "entries").glob("*/*/manifest.json"):
        steps = [s.split(":")[1] for s in json.loads(manifest.read_text())["steps"]]
        models = manifest.parent / "build" / "intermediate_models"
        found.append((steps, sorted(p.name for p in models.glob("step_*.onnx"))))
        assert (manifest.parent / "output.onnx").samefile(models / f"step_{steps[-1]}.onnx")
    return found


def test_an_entry_keeps_its_last_model_unless_asked_for_every_step(project):
    cache = project.path / "build" / "brainsmith" / "cache"
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=4)
    kept = step_models(cache)
    assert len(kept) == 7
    for steps, models in kept:
        assert models == [f"step_{steps[-1]}.onnx"], steps

    project.runpytest_subprocess(
        "-p", "no:cacheprovider", "--brainsmith-rebuild", "--brainsmith-keep-step-models"
    ).assert_outcomes(passed=4)
    every = step_models(cache)
    assert len(every) == 7 and max(len(steps) for steps, _ in every) > 3
    for steps, models in every:
        assert models == sorted(f"step_{s}.onnx" for s in steps), steps


def test_leaf_estimates_equal_a_from_scratch_finn_build(project, tmp_path: Path):
    project.makeconftest(
        RECORDING_CONFTEST
        + """
import json, os
import pytest

@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    yield
    estimates = getattr(item, "estimates", {})
    with open(os.path.join(os.path.dirname(__file__), "estimates.jsonl"), "a") as log:
        log.write(json.dumps({"id": item.nodeid, "report_dir": estimates.get("report_dir")}) + "\\n")
"""
    )
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=4)
    rows = [
        json.loads(line) for line in (project.path / "estimates.jsonl").read_text().splitlines()
    ]
    leaf = next(r for r in rows if r["id"].endswith("MVAU[rtl]::target_fps[400000]"))

    # the oracle: one from-scratch FINN build of the same design, written by hand
    from pytest_brainsmith.finn.runner import _isolated_process_state, import_finn

    finn = import_finn()
    special = tmp_path / "special.json"
    special.write_text(json.dumps({"Defaults": {"preferred_impl_style": ["rtl", ["MVAU"]]}}))
    out = tmp_path / "scratch"
    cfg = finn["config"].DataflowBuildConfig(
        output_dir=str(out),
        synth_clk_period_ns=10.0,
        fpga_part="xc7z020clg400-1",
        target_fps=400000,
        specialize_layers_config_file=str(special),
        generate_outputs=[finn["config"].DataflowOutputType.ESTIMATE_REPORTS],
        steps=list(finn["config"].estimate_only_dataflow_steps),
    )
    with _isolated_process_state(tmp_path / "work"):
        assert finn["build_dataflow"].build_dataflow_cfg(str(MODEL), cfg) == 0
    for name in (
        "estimate_network_performance.json",
        "estimate_layer_resources.json",
        "estimate_layer_cycles.json",
        "op_and_param_counts.json",
    ):
        cached = Path(leaf["report_dir"]) / name
        assert json.loads(cached.read_text()) == json.loads((out / "report" / name).read_text()), (
            name
        )


def test_failing_step_fails_only_the_designs_below_it_once(project):
    project.makeconftest(FAILING_STEP_CONFTEST)
    project.makefile(
        ".blueprint.yaml",
        tfc=BLUEPRINT
        + """
  steps:  # FINN's estimate pipeline, with a branch point after convert_to_hw
    - after: convert_to_hw
      insert: [[pass_through, explode]]
""",
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=4, failed=4)
    result.stdout.fnmatch_lines(
        [
            "*segment tfc.blueprint.yaml::qonnx_to_finn..convert_to_hw::explode failed in this run",
            "*step:  user_explode",
            "*error: ValueError: explode was asked to fail",
            "*log:   */failures/*/build/build_dataflow.log",
            "*every design below this segment (4) fails with this cause; it was built once",
        ]
    )
    passed = [line for line in result.stdout.lines if line.startswith("PASSED")]
    assert len(passed) == 4 and all("::pass_through::" in line for line in passed)
    first = builds(project)
    failed = [b for b in first if b["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["segment"].endswith("::explode")
    assert not any("::explode::" in b["segment"] for b in first)  # nothing below it was tried

    # the failure is recorded: the next run reuses it and builds nothing
    again = project.runpytest_subprocess("-p", "no:cacheprovider")
    again.assert_outcomes(passed=4, failed=4)
    again.stdout.fnmatch_lines(
        ["*explode failed in an earlier run (recorded; --brainsmith-retry-failed rebuilds it)"]
    )
    assert builds(project) == []

    retried = project.runpytest_subprocess("-p", "no:cacheprovider", "--brainsmith-retry-failed")
    retried.assert_outcomes(passed=4, failed=4)
    assert [b["status"] for b in builds(project)] == ["failed"]


def test_expectations_gate_designs(project, monkeypatch):
    project.makefile(
        ".blueprint.yaml",
        tfc=BLUEPRINT + 'expect:\n  estimated_throughput_fps: ">= 200000"\n  LUT: "<= 100000"\n',
    )
    monkeypatch.setenv("CI", "1")  # pytest prints the summary lines untrimmed
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--junitxml=junit.xml")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*design does not meet the blueprint's expectations:",
            "*estimated_throughput_fps >= 200000: got estimated_throughput_fps = 127551 *(from estimate_network_performance.json)",
        ]
    )
    # one line per design in the short summary and in junit's message
    result.stdout.fnmatch_lines(
        [
            "FAILED *target_fps[[]100000] - expectations not met: estimated_throughput_fps >= 200000: got 127551"
        ]
    )
    junit = (project.path / "junit.xml").read_text()
    assert (
        'message="expectations not met: estimated_throughput_fps &gt;= 200000: got 127551"' in junit
    )

    assert len(builds(project)) == 7
    # narrowed per choice: the target_fps=100000 designs are held to their own floor
    project.makefile(
        ".blueprint.yaml",
        tfc=BLUEPRINT
        + 'expect:\n  estimated_throughput_fps: ">= 200000"\n'
        + "  when:\n    - choices: {target_fps: 100000}\n"
        + '      estimated_throughput_fps: ">= 120000"\n',
    )
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=4)
    assert builds(project) == []  # expectations are not part of any cache key


def test_vivado_steps_are_skipped_with_the_reason(project):
    project.makefile(
        ".blueprint.yaml",
        tfc=BLUEPRINT.replace("xc7z020clg400-1", "xc7z020clg400-1\nboard: Pynq-Z1\noutput: rtl"),
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=4)
    result.stdout.fnmatch_lines(
        [
            "*step generate_hardware cannot run here: Vitis HLS is not installed here (XILINX_HLS is not set); Vivado is not installed here (XILINX_VIVADO is not set)"
        ]
    )
    assert builds(project) == []
    with sqlite3.connect(project.path / "build" / "brainsmith" / "results.sqlite") as db:
        stored = db.execute("SELECT outcome, error FROM designs").fetchall()
    assert len(stored) == 4
    assert all(outcome == "skipped" and "Vivado is not installed" in why for outcome, why in stored)


def test_rebuild_and_prune_keep_the_cache_bounded(project):
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=4)
    assert len(builds(project)) == 7
    entries = project.path / "build" / "brainsmith" / "cache" / "v1" / "entries"

    rebuilt = project.runpytest_subprocess("-p", "no:cacheprovider", "--brainsmith-rebuild")
    rebuilt.assert_outcomes(passed=4)
    assert (
        sorted(b["status"] for b in builds(project)) == ["built"] * 7
    )  # each once, not per design

    # change the design space: the target_fps=400000 leaves are no longer reachable
    project.makefile(
        ".blueprint.yaml", tfc=BLUEPRINT.replace("[100000, 400000]", "[100000, 200000]")
    )
    dry = project.runpytest_subprocess("-p", "no:cacheprovider", "--brainsmith-prune=dry-run")
    dry.stdout.fnmatch_lines(["*brainsmith prune: would remove 2 unused cache entries (* MB)*"])
    assert len(list(entries.glob("*/*"))) == 7
    refused = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "--brainsmith-prune", "-n", "2"
    )
    refused.stderr.fnmatch_lines(["*--brainsmith-prune needs a run without -n (pytest-xdist)"])
    assert len(list(entries.glob("*/*"))) == 7
    pruned = project.runpytest_subprocess("-p", "no:cacheprovider", "--brainsmith-prune")
    pruned.stdout.fnmatch_lines(["*brainsmith prune: removed 2 unused cache entries*"])
    assert len(list(entries.glob("*/*"))) == 5
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=4)
    assert len(builds(project)) == 2  # only the new target_fps=200000 leaves


def test_xdist_workers_share_the_cache_and_build_each_segment_once(project):
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        ["*this run built 7 segments, 0 failed *"]
    )  # summed over the workers
    rows = builds(project)
    assert len(rows) == len({r["key"] for r in rows}) == 7


def test_missing_finn_is_a_clear_error_and_not_recorded_as_a_failure(project, monkeypatch):
    # a sitecustomize that hides FINN from this pytest process only
    hide = project.path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'finn' or name.startswith('finn.'):\n"
        "            raise ImportError('No module named ' + repr(name))\n"
        "sys.meta_path.insert(0, Hide())\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")]))
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(
        ["*brainsmith: cannot import FINN (*); install finn-plus with scripts/setup-env"]
    )
    assert not (project.path / "build" / "brainsmith" / "cache" / "v1" / "failures").exists()
