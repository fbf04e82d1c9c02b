"""The cache under stress, on real FINN: a build killed mid-way, two sessions at
once on one cache, and a disk that fills up while publishing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MODEL, need
from conftest import take_builds as builds

BLUEPRINT = """
model: tfc.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10
design_space:
  steps:  # FINN's estimate pipeline, with slow_point after convert_to_hw
    - after: convert_to_hw
      insert: slow_point
  finn_config:
    standalone_thresholds: [false, true]
    target_fps: [100000, 200000, 400000]
"""
# tree: front end (qonnx_to_finn..streamline), 2 x (convert_to_hw..specialize_layers,
# where slow_point runs), 2 x 3 leaves: 9 segments, 6 designs

#: A step that can be told (through the environment, which is not part of its
#: code or config) to announce itself and stall, so a test can kill the build there.
CONFTEST = """
import json, os, time

def slow_point(model, cfg):
    marker = os.environ.get("BRAINSMITH_TEST_STALL")
    if marker:
        open(marker, "w").close()
        time.sleep(600)
    return model

def pytest_brainsmith_register(registry):
    registry.register_step(slow_point, reads=())

def pytest_brainsmith_segment_finish(segment, result):
    with open(os.path.join(os.path.dirname(__file__), "builds.jsonl"), "a") as log:
        log.write(json.dumps({"key": result.key, "status": result.status, "pid": os.getpid()}) + "\\n")
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copyfile(MODEL, tmp_path / "tfc.onnx")
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "tfc.blueprint.yaml").write_text(BLUEPRINT)
    return tmp_path


def start_pytest(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=project,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def run_pytest(project: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = start_pytest(project, *args, env=env)
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


def cache_state(cache: Path) -> dict[str, list[str]]:
    """Every entry must be complete; returns what is where."""
    base = cache / "v1"
    entries = sorted(p for p in (base / "entries").glob("*/*"))
    for entry in entries:
        assert (entry / "COMPLETE").is_file(), f"torn entry {entry}"
        manifest = json.loads((entry / "manifest.json").read_text())
        assert manifest["key"] == entry.name
        assert (entry / "output.onnx").stat().st_size > 0
    return {
        "entries": [p.name for p in entries],
        "tmp": [p.name for p in (base / "tmp").glob("*")],  # glob: the dirs are made on first write
        "failures": [p.name for p in (base / "failures").glob("*")],
    }


def reports(cache: Path) -> dict[str, str]:
    found = {}
    for path in sorted(
        (cache / "v1" / "entries").glob("*/*/build/report/estimate_layer_resources.json")
    ):
        found[path.parents[2].name] = path.read_text()
    return found


def test_build_killed_mid_segment_leaves_no_torn_entry_and_rerun_completes(
    project: Path, tmp_path: Path
):
    marker = tmp_path / "stalled"
    proc = start_pytest(project, env={"BRAINSMITH_TEST_STALL": str(marker)})
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline, "the build never reached the stalling step"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    cache = project / "build" / "brainsmith" / "cache"
    state = cache_state(cache)
    assert len(state["entries"]) == 1  # only the front end was published before the kill
    # the killed builds' staging directories (one per busy worker), never published
    assert 1 <= len(state["tmp"]) <= 2
    assert state["failures"] == []  # a kill is not the design's failure
    first_builds = builds(project)
    assert [b["status"] for b in first_builds] == ["built"]

    code, out = run_pytest(project)
    assert code == 0, out
    assert "6 passed" in out
    rebuilt = builds(project)
    assert first_builds[0]["key"] not in {b["key"] for b in rebuilt}  # the front end is reused
    assert len(rebuilt) == len({b["key"] for b in rebuilt}) == 2 + 6
    state = cache_state(cache)
    assert state["tmp"] == []  # the stale staging directory was cleaned up
    assert len(state["entries"]) == 9

    # the same results as a run that was never interrupted
    fresh = tmp_path / "fresh"
    shutil.copytree(project, fresh, ignore=shutil.ignore_patterns("build", "builds.jsonl"))
    code, out = run_pytest(fresh)
    assert code == 0, out
    assert reports(cache) == reports(fresh / "build" / "brainsmith" / "cache")


def test_two_sessions_at_once_build_each_segment_exactly_once(project: Path):
    first = start_pytest(project)
    second = start_pytest(project)
    outs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outs
    rows = builds(project)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == 9, rows
    assert all(r["status"] == "built" for r in rows)
    assert cache_state(project / "build" / "brainsmith" / "cache")["tmp"] == []


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def test_full_disk_gives_a_clear_error_and_keeps_earlier_entries(project: Path, tmp_path: Path):
    disk = tmp_path / "small-disk"
    need(
        _mount_tmpfs(disk, "3m"),
        "needs permission to mount a small tmpfs (run as root) to fill a real disk",
    )
    try:
        code, out = run_pytest(project, "--brainsmith-cache", str(disk))
        assert code == 1, out
        assert "no space left on device" in out.lower() or "No space left on device" in out
        assert "brainsmith could not build segment" in out
        assert "not recorded: the machine's fault" in out
        state = cache_state(disk)  # whatever was published is complete
        assert state["failures"] == []  # a full disk is not recorded as the design's failure
        assert state["tmp"] == []  # nothing half-written left behind
        assert len(state["entries"]) >= 1
    finally:
        subprocess.run(["umount", str(disk)], check=False)


WRAPPED_DISK_FULL = """
import errno

def save_wrapped(model, cfg):
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as exc:  # a library reporting the full disk in its own words
        raise RuntimeError("could not save the checkpoint") from exc

def pytest_brainsmith_register(registry):
    registry.register_step(save_wrapped, reads=())
"""


def test_a_full_disk_wrapped_in_a_library_error_is_not_recorded(pytester: pytest.Pytester):
    """A step whose library wraps ENOSPC in its own exception: the machine's fault, so
    nothing is recorded and the next run builds it again."""
    shutil.copyfile(MODEL, pytester.path / "tfc.onnx")
    pytester.makeconftest(WRAPPED_DISK_FULL)
    pytester.makefile(
        ".blueprint.yaml",
        wrapped="model: tfc.onnx\nfpga_part: xc7z020clg400-1\nclock_ns: 10\n"
        "design_space:\n  steps:\n    - save_wrapped\n",
    )
    done = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--brainsmith-cache=c")
    out = done.stdout.str()
    assert done.ret == 1, out
    assert "not recorded: the machine's fault" in out, out
    assert cache_state(pytester.path / "c")["failures"] == []
