"""Python tests over explored designs (@pytest.mark.brainsmith and the `design`
fixture) and the live status of builds, on real FINN."""

from __future__ import annotations

import json
import os
import pty
import shutil
import sys
import time

import pytest
from conftest import FAILING_STEPS, MODEL, TFC_BLUEPRINT

from pytest_brainsmith.views.status import describe

RECORDING_CONFTEST = """
import json, os

def pytest_brainsmith_segment_finish(segment, result):
    with open(os.path.join(os.path.dirname(__file__), "builds.jsonl"), "a") as log:
        log.write(json.dumps({"segment": result.segment, "status": result.status}) + "\\n")
"""

CHECKS = """
import pytest

@pytest.mark.brainsmith("tfc.blueprint.yaml")
def test_design(design):
    assert set(design.choices) == {"MVAU", "target_fps"}
    assert design.config["target_fps"] == design.choices["target_fps"]
    assert design.config["kernel_backends"] == {"MVAU": design.choices["MVAU"]}
    assert design.estimates["LUT"] > 0 and "layers" in design.estimates
    assert design.final_model.is_file() and not design.final_model.stat().st_mode & 0o222
    assert design.logs and all(log.is_file() for log in design.logs)
    assert len(design.load_model().graph.node) > 0

@pytest.mark.brainsmith("tfc.blueprint.yaml", where={"MVAU": "hls"})
def test_hls_only(design, brainsmith):
    rtl = brainsmith.design("tfc.blueprint.yaml", MVAU="rtl", target_fps=design.choices["target_fps"])
    assert rtl.choices["MVAU"] == "rtl"
"""


def builds(pytester: pytest.Pytester) -> list[dict]:
    log = pytester.path / "builds.jsonl"
    if not log.exists():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    log.unlink()
    return rows


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copyfile(MODEL, pytester.path / "tfc.onnx")
    pytester.makeconftest(RECORDING_CONFTEST)
    pytester.makefile(".blueprint.yaml", tfc=TFC_BLUEPRINT)
    pytester.makepyfile(test_checks=CHECKS)
    return pytester


def test_python_tests_get_one_id_per_design_like_the_yaml_items(project):
    result = project.runpytest("--collect-only", "-q", "-k", "MVAU[rtl] and 400000")
    result.stdout.fnmatch_lines(
        [
            "test_checks.py::test_design[[]MVAU[[]rtl]-target_fps[[]400000]]",
            "tfc.blueprint.yaml::qonnx_to_finn..create_dataflow_partition::MVAU[[]rtl]::target_fps[[]400000]",
        ],
        consecutive=False,
    )
    result.stdout.fnmatch_lines(["2/* tests collected *"])


def test_design_fixture_shares_builds_with_the_yaml_items(project):
    # Python tests alone, cold: they build what they need, once
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "test_checks.py")
    result.assert_outcomes(passed=6)
    first = builds(project)
    assert len(first) == 7 and {b["status"] for b in first} == {"built"}
    # then the YAML items and the Python tests together, also under xdist: nothing to build
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=10)
    assert builds(project) == []


def test_designs_built_for_python_tests_count_as_built_for_the_yaml_items(project):
    # one process, cold: test_checks.py runs first and builds; the YAML items of the same
    # blueprint then get those same results (built in this run, not "reused")
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=10)
    assert len(builds(project)) == 7
    result.stdout.fnmatch_lines(
        ["segments: 7 built, 0 reused, 0 failed, 0 failed-before", "*this run built 7 segments*"],
        consecutive=False,
    )


def test_a_failed_design_errors_with_its_recorded_cause_and_vivado_skips(project):
    project.makeconftest(RECORDING_CONFTEST + FAILING_STEPS)
    project.makefile(
        ".blueprint.yaml",
        tfc=TFC_BLUEPRINT + "  steps:\n    - after: convert_to_hw\n      insert: explode\n",
    )
    project.makepyfile(
        test_checks="""
import pytest

@pytest.mark.brainsmith("tfc.blueprint.yaml")
def test_design(design):
    pass
"""
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "test_checks.py")
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines(
        [
            "design MVAU[[]hls]-target_fps[[]100000] was not built: segment "
            "tfc.blueprint.yaml::qonnx_to_finn..create_dataflow_partition failed at step "
            "user_explode: ValueError: explode was asked to fail"
        ]
    )
    assert [b["status"] for b in builds(project)] == ["failed"]  # once for all four
    project.runpytest_subprocess("-p", "no:cacheprovider", "test_checks.py").assert_outcomes(
        errors=4
    )
    assert builds(project) == []  # the recorded cause, no rebuild

    project.makefile(
        ".blueprint.yaml",
        tfc=TFC_BLUEPRINT.replace(
            "xc7z020clg400-1", "xc7z020clg400-1\nboard: Pynq-Z1\noutput: rtl"
        ),
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "test_checks.py")
    result.assert_outcomes(skipped=4)
    result.stdout.fnmatch_lines(
        ["*step generate_hardware cannot run here: Vitis HLS is not installed*"]
    )


def test_a_bad_marker_is_a_clear_collection_error(project):
    project.makepyfile(
        test_checks="""
import pytest

@pytest.mark.brainsmith("tfc.blueprint.yaml", where={"MVAUU": "rtl"})
def test_design(design):
    pass
"""
    )
    result = project.runpytest("--collect-only", "test_checks.py")
    result.stdout.fnmatch_lines(
        [
            "*tfc.blueprint.yaml: where: 'MVAUU' is not a branch point; did you mean 'MVAU'? "
            "(branch points: MVAU, target_fps)"
        ]
    )
    assert "Traceback" not in result.stdout.str()


SLOW_STEP_CONFTEST = """
import json, os, time
from pathlib import Path

def slow(model, cfg):
    running = Path(os.environ["BRAINSMITH_CACHE"]) / "v1" / "running"
    seen = [json.loads(p.read_text()) for p in running.glob("*.json")]
    Path(os.environ["SEEN"]).write_text(json.dumps(seen))
    time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
    return model

def pytest_brainsmith_register(registry):
    registry.register_step(slow, reads=())
"""


def slow_project(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copyfile(MODEL, pytester.path / "tfc.onnx")
    pytester.makeconftest(SLOW_STEP_CONFTEST)
    pytester.makefile(
        ".blueprint.yaml",
        tfc="model: tfc.onnx\nfpga_part: xc7z020clg400-1\nclock_ns: 10\n"
        "finn_config:\n  target_fps: 1000\n"
        "design_space:\n  steps: [qonnx_to_finn, tidy_up, slow, streamline]\n",
    )
    return pytester


def test_a_status_file_shows_the_running_segment_and_step(pytester, monkeypatch):
    slow_project(pytester)
    cache = pytester.path / "cache"
    monkeypatch.setenv("BRAINSMITH_CACHE", str(cache))
    monkeypatch.setenv("SEEN", str(pytester.path / "seen.json"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    (seen,) = json.loads((pytester.path / "seen.json").read_text())
    assert seen["segment"].endswith("qonnx_to_finn..streamline")
    assert seen["step"] == "slow" and seen["step_index"] == 3
    assert seen["steps"] == ["qonnx_to_finn", "tidy_up", "slow", "streamline"]
    assert seen["pid"] != os.getpid()
    assert list((cache / "v1" / "running").glob("*.json")) == []  # gone when done
    assert "brainsmith: building" not in result.stdout.str()  # not a terminal: quiet


def test_the_status_line_shows_on_a_terminal(pytester):
    slow_project(pytester)
    env = {
        **os.environ,
        "BRAINSMITH_CACHE": str(pytester.path / "cache"),
        "SEEN": str(pytester.path / "seen.json"),
        "SLOW_SECONDS": "3",
        "COLUMNS": "200",  # room for the pool's progress and the build on one line
    }
    pid, fd = pty.fork()
    if pid == 0:  # the child: pytest on a pseudo-terminal
        os.chdir(pytester.path)
        os.execve(
            sys.executable, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], env
        )
    output = b""
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    # the pool's progress, then the build in progress
    assert "brainsmith: 0/1 segments done, 1 running, 0 queued, ~" in text
    assert " | building qonnx_to_finn..streamline: step 3/4 slow (" in text
    assert "1 passed" in text


def test_describe_is_one_line_with_the_oldest_build_first():
    entries = [
        {
            "segment": "t.yaml::a..b::x[1]",
            "steps": ["a", "b"],
            "step": "b",
            "step_index": 2,
            "started": 100.0,
            "step_started": 130.0,
        },
        {
            "segment": "t.yaml::a..b::x[2]",
            "steps": ["a"],
            "step": "a",
            "step_index": 1,
            "started": 120.0,
            "step_started": 120.0,
        },
    ]
    assert describe(entries, now=160.0) == (
        "brainsmith: building a..b::x[1]: step 2/2 b (30 s; segment 60 s) +1 more"
    )
    assert describe([], now=0) == ""
    pool = {"done": 3, "running": ["x", "y"], "queued": 5, "seconds_left": 41.6}
    assert describe(entries[:1], now=160.0, pool=pool) == (
        "brainsmith: 3/10 segments done, 2 running, 5 queued, ~42 s left | "
        "building a..b::x[1]: step 2/2 b (30 s; segment 60 s)"
    )
    assert describe([], now=0, pool=pool).startswith("brainsmith: 3/10 segments done")
