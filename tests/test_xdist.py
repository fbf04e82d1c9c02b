"""pytest-xdist on real FINN: every distribution mode builds each segment exactly
once and gives the sequential run's results; failures propagate the same way;
workers in separate directories share nothing but the cache; and the subtree
partition that the default scheduling starts from."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAILING_STEPS, MODEL, TFC_BLUEPRINT

from pytest_brainsmith.plugin.xdist_scheduling import partition

#: Every build, with the process and directory that ran it.
RECORDING_CONFTEST = """
import json, os

LOG = os.environ["BRAINSMITH_TEST_LOG"]

def pytest_brainsmith_segment_finish(segment, result):
    with open(LOG, "a") as log:
        log.write(json.dumps({"segment": result.segment, "status": result.status,
                              "key": result.key, "pid": os.getpid(), "cwd": os.getcwd()}) + "\\n")
"""


def make_project(folder: Path, conftest: str = RECORDING_CONFTEST) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MODEL, folder / "tfc.onnx")
    (folder / "tfc.blueprint.yaml").write_text(TFC_BLUEPRINT)
    (folder / "conftest.py").write_text(conftest)
    return folder


def pytest_run(folder: Path, log: Path, *args: str, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "BRAINSMITH_TEST_LOG": str(log), **(env or {})},
    )


def read_log(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def stored_designs(folder: Path) -> dict[str, tuple]:
    with sqlite3.connect(folder / "build" / "brainsmith" / "results.sqlite") as db:
        rows = db.execute("SELECT design, outcome, estimates FROM designs").fetchall()
    return {design: (outcome, estimates) for design, outcome, estimates in rows}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """The reference: the same blueprint explored without xdist."""
    folder = make_project(tmp_path_factory.mktemp("sequential"))
    done = pytest_run(folder, folder / "builds.jsonl")
    assert done.returncode == 0, done.stdout
    return stored_designs(folder)


@pytest.mark.parametrize(
    "dist",
    [
        ["-n", "2"],  # subtree scheduling (the default with -n)
        ["-n", "auto"],
        ["-n", "2", "--dist", "load", "--brainsmith-schedule=xdist"],
        ["-n", "2", "--dist", "loadscope"],
        ["-n", "2", "--dist", "worksteal"],
    ],
    ids=["tree", "auto", "load", "loadscope", "worksteal"],
)
def test_each_segment_is_built_once_and_results_equal_the_sequential_run(
    tmp_path: Path, sequential: dict, dist: list[str]
):
    folder = make_project(tmp_path / "project")
    log = tmp_path / "builds.jsonl"
    done = pytest_run(folder, log, *dist)
    assert done.returncode == 0, done.stdout
    assert "4 passed" in done.stdout
    rows = read_log(log)
    assert len(rows) == len({r["key"] for r in rows}) == 7
    assert stored_designs(folder) == sequential


def test_a_failure_propagates_once_under_xdist(tmp_path: Path):
    folder = make_project(
        tmp_path / "project",
        RECORDING_CONFTEST + FAILING_STEPS,
    )
    (folder / "tfc.blueprint.yaml").write_text(
        TFC_BLUEPRINT
        + "  steps:\n    - after: convert_to_hw\n      insert: [[pass_through, explode]]\n"
    )
    log = tmp_path / "builds.jsonl"
    # CI set: pytest then prints each failure's whole message in the short summary too
    done = pytest_run(folder, log, "-n", "2", env={"CI": "1"})
    assert "4 failed, 4 passed" in done.stdout
    assert done.stdout.count("error: ValueError: explode was asked to fail") == 4
    summary = [line for line in done.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(summary) == 4
    assert all(
        line.endswith("explode failed at step user_explode: ValueError: explode was asked to fail")
        for line in summary
    ), summary
    failed = [r for r in read_log(log) if r["status"] == "failed"]
    assert len(failed) == 1  # built once, by one worker
    log.unlink()

    retried = pytest_run(folder, log, "-n", "2", "--brainsmith-retry-failed")
    assert "4 failed, 4 passed" in retried.stdout
    assert [r["status"] for r in read_log(log)] == ["failed"]  # retried once, not per worker


def test_workers_in_separate_directories_share_only_the_cache(tmp_path: Path):
    # as on several hosts: each worker has its own checkout, the cache is shared
    for name in ("controller", "host1", "host2"):
        make_project(tmp_path / name)
    log = tmp_path / "builds.jsonl"
    done = pytest_run(
        tmp_path / "controller",
        log,
        "--dist",
        "load",
        "--tx",
        f"popen//chdir={tmp_path / 'host1'}",
        "--tx",
        f"popen//chdir={tmp_path / 'host2'}",
        env={"BRAINSMITH_CACHE": str(tmp_path / "shared-cache")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    rows = read_log(log)
    assert len(rows) == len({r["key"] for r in rows}) == 7
    assert {r["cwd"] for r in rows} == {str(tmp_path / "host1"), str(tmp_path / "host2")}
    assert not (tmp_path / "controller" / "build" / "brainsmith" / "cache").exists()


def test_partition_starts_workers_on_different_subtrees():
    designs = [
        "a.yaml::root::M[hls]::t[1]",
        "a.yaml::root::M[hls]::t[2]",
        "a.yaml::root::M[rtl]::t[1]",
        "a.yaml::root::M[rtl]::t[2]",
        "b.yaml::root::x[1]",
        "b.yaml::root::x[2]",
    ]
    # two blueprints, two workers: one root each
    assert partition(designs, 2) == [[0, 1, 2, 3], [4, 5]]
    # one blueprint: split at its first branch point, below the shared root
    assert partition(designs[:4], 2) == [[0, 1], [2, 3]]
    # more workers than subtrees at one level: split the biggest again
    assert partition(designs, 3) == [[0, 1], [2, 3], [4, 5]]
    assert partition(designs[:1], 2) == [[0], []]
    assert sorted(i for part in partition(designs, 4) for i in part) == list(range(6))
