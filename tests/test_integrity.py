"""Nothing corrupt is reused (issue 11): a damaged cache entry is moved aside, reported
and rebuilt, with results equal to a clean build; unwritable caches end in one clear
message; and a design whose xdist worker dies is still in every report.

The unit tests run the cache alone on fake entries; the others run pytest on the
bundled TFC model against copies of one cache built once for the module. Read-only
caches are real read-only bind mounts in a private mount namespace (``unshare``), since
root, which runs these tests here, ignores file permissions."""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from conftest import MODEL, TFC_BLUEPRINT, need
from conftest import take_builds as builds

from pytest_brainsmith.core.cache import (
    CacheError,
    CacheIntegrityWarning,
    EntryInUse,
    SegmentCache,
    fingerprints,
)

#: Every segment build, for telling what a run rebuilt.
CONFTEST = """
import json, os

def pytest_brainsmith_segment_finish(segment, result):
    with open(os.path.join(os.path.dirname(__file__), "builds.jsonl"), "a") as log:
        log.write(json.dumps({"key": result.key, "status": result.status,
                              "segment": result.segment}) + "\\n")
"""

# -- unit: the cache alone ---------------------------------------------------------


def publish(
    cache: SegmentCache, key: str, files: dict[str, bytes], *, written_ago: float = 0.0
) -> Path:
    """Publish an entry of ``files``, as if FINN had written them ``written_ago`` seconds
    before (their mtime)."""
    with cache.staging(key) as staged:
        for name, content in files.items():
            (staged / name).parent.mkdir(parents=True, exist_ok=True)
            (staged / name).write_bytes(content)
            if written_ago:
                then = time.time() - written_ago
                os.utime(staged / name, (then, then))
        return cache.publish(key, staged, {"key": key, "segment": f"bp::{key[:4]}"}).path


FILES = {"output.onnx": b"model" * 1000, "build/report/estimate.json": b'{"LUT": 2924}'}


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files the cache reads to hash them."""
    names: list[str] = []
    real = fingerprints.sha256_of
    monkeypatch.setattr(fingerprints, "sha256_of", lambda p: names.append(p.name) or real(p))
    return names


def test_publish_records_every_file_and_lookup_verifies_it(tmp_path: Path):
    cache = SegmentCache(tmp_path / "c")
    path = publish(cache, "ab" * 32, FILES)
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == set(FILES)
    assert manifest["files"]["output.onnx"]["size"] == len(FILES["output.onnx"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        entry = cache.lookup("ab" * 32)
    assert entry is not None and entry.manifest["segment"] == "bp::abab"


@pytest.mark.parametrize(
    "damage, file, why",
    [
        (lambda p: os.truncate(p / "output.onnx", 10), "output.onnx", "has 10 bytes"),
        (
            lambda p: (p / "build/report/estimate.json").write_bytes(b'{"LUT":    1}'),
            "build/report/estimate.json",
            "sha256",
        ),
        (lambda p: (p / "output.onnx").unlink(), "output.onnx", "is missing"),
        (lambda p: (p / "manifest.json").unlink(), "manifest.json", "is missing"),
        (lambda p: (p / "manifest.json").write_text("{nope"), "manifest.json", "unreadable"),
        (lambda p: (p / "manifest.json").write_text("[]"), "manifest.json", "not a JSON object"),
    ],
    ids=["truncated", "rewritten", "file-missing", "manifest-missing", "manifest-garbage", "list"],
)
def test_a_damaged_entry_is_moved_aside_and_reported(tmp_path: Path, damage, file, why):
    cache = SegmentCache(tmp_path / "c")
    key = "cd" * 32
    path = publish(cache, key, FILES)
    for item in path.rglob("*"):
        item.chmod(0o755 if item.is_dir() else 0o644)
    damage(path)
    with pytest.warns(CacheIntegrityWarning) as caught:
        assert cache.lookup(key) is None
    message = str(caught[0].message)
    assert key[:12] in message and file in message and why in message
    assert not path.exists()
    (moved,) = cache.pruning.quarantined()
    assert moved.name.startswith(key)
    note = json.loads((moved / "QUARANTINE.json").read_text())
    assert note["file"] == file and why in note["why"] and note["key"] == key
    assert str(moved) in message
    # nothing left that looks like an entry, so the caller rebuilds it
    assert cache.lookup(key) is None
    assert list(cache.entries()) == []


def test_a_rewrite_that_keeps_size_and_mtime_is_caught(tmp_path: Path, reads: list[str]):
    cache = SegmentCache(tmp_path / "c")
    key = "ef" * 32
    path = publish(cache, key, FILES, written_ago=3600)
    reads.clear()
    assert cache.lookup(key) is not None and reads == []  # vouched for by stat
    report = path / "build/report/estimate.json"
    before = report.stat()
    time.sleep(0.02)  # a later timestamp tick than the one it was vouched for in
    report.chmod(0o644)
    report.write_bytes(b'{"LUT":    1}')  # same size
    os.utime(report, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime
    with pytest.warns(CacheIntegrityWarning, match="estimate.json"):
        assert cache.lookup(key) is None


def test_files_written_a_while_before_publishing_are_never_read_again(
    tmp_path: Path, reads: list[str]
):
    cache = SegmentCache(tmp_path / "c")
    key = "12" * 32
    publish(cache, key, FILES, written_ago=3600)
    reads.clear()  # publishing reads each file once, to record its digest
    for _ in range(2):
        assert cache.lookup(key) is not None
    assert reads == []  # vouched for by stat since publishing
    # another filesystem: new inodes and ctimes, the same content: read once, then trusted
    shutil.copytree(tmp_path / "c", tmp_path / "copy")
    copy = SegmentCache(tmp_path / "copy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert copy.lookup(key) is not None
    assert sorted(reads) == sorted(Path(name).name for name in FILES)
    reads.clear()
    assert copy.lookup(key) is not None and reads == []


def test_files_written_just_before_publishing_are_vouched_for_and_a_rewrite_is_caught(
    tmp_path: Path, reads: list[str], monkeypatch: pytest.MonkeyPatch
):
    """Publishing sets the mtime of files written in the current tick back a tick
    (instead of waiting for the tick to pass): the first reuse reads nothing, and a write
    right after publishing, in the same tick, still shows."""
    cache = SegmentCache(tmp_path / "c")
    key = "9a" * 32
    waits: list[float] = []
    with monkeypatch.context() as patched:
        patched.setattr(fingerprints.time, "sleep", waits.append)
        path = publish(cache, key, FILES)  # written just now
    assert waits == []  # no wait for the tick to pass
    reads.clear()
    assert cache.lookup(key) is not None and reads == []
    report = path / "build/report/estimate.json"
    report.chmod(0o644)
    report.write_bytes(b'{"LUT":    1}')  # same size, at once
    with pytest.warns(CacheIntegrityWarning, match="estimate.json"):
        assert cache.lookup(key) is None


def test_a_hard_link_within_the_entry_is_vouched_for_and_one_to_another_entry_left_alone(
    tmp_path: Path, reads: list[str]
):
    cache = SegmentCache(tmp_path / "c")
    outside = tmp_path / "elsewhere.onnx"  # stands for another entry's file
    outside.write_bytes(b"other" * 100)
    old = time.time_ns() - 10**9
    os.utime(outside, ns=(old, old))
    outside_before = outside.stat()
    key = "5e" * 32
    with cache.staging(key) as staged:
        (staged / "build").mkdir()
        (staged / "build" / "final.onnx").write_bytes(b"model" * 1000)
        os.link(staged / "build" / "final.onnx", staged / "output.onnx")
        os.link(outside, staged / "build" / "parent.onnx")
        cache.publish(key, staged, {"key": key, "segment": "bp::5e"})
    reads.clear()
    assert cache.verify_file(key, "output.onnx") is None
    assert reads == []  # the file FINN wrote last, linked twice in the entry: vouched for
    assert outside.stat().st_mtime_ns == outside_before.st_mtime_ns  # never touched


def test_files_written_within_a_timestamp_tick_are_read_until_they_settle(
    tmp_path: Path, reads: list[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(fingerprints, "settle", lambda root: None)  # publish at once
    monkeypatch.setattr(fingerprints, "TICK_NS", 10**15)  # every file was written just now
    cache = SegmentCache(tmp_path / "c")
    key = "34" * 32
    path = publish(cache, key, FILES)
    reads.clear()
    for _ in range(2):
        assert cache.lookup(key) is not None
    # a write in the same tick as the stat would show in neither mtime nor ctime
    assert len(reads) == 2 * len(FILES)
    assert not (path / "VERIFIED").exists()
    monkeypatch.setattr(fingerprints, "TICK_NS", 0)  # time passes
    reads.clear()
    assert cache.lookup(key) is not None and len(reads) == len(FILES)
    reads.clear()
    assert cache.lookup(key) is not None and reads == []


def test_verify_file_rechecks_one_file_before_use(tmp_path: Path):
    cache = SegmentCache(tmp_path / "c")
    key = "56" * 32
    path = publish(cache, key, FILES)
    assert cache.lookup(key) is not None
    assert cache.verify_file(key, "output.onnx") is None
    (path / "output.onnx").chmod(0o644)
    with open(path / "output.onnx", "r+b") as handle:
        handle.write(b"X")
    with pytest.warns(CacheIntegrityWarning, match="output.onnx"):
        problem = cache.verify_file(key, "output.onnx")
    assert problem is not None and "sha256" in problem
    assert cache.lookup(key) is None and len(cache.pruning.quarantined()) == 1


def test_an_unreadable_failure_record_is_moved_aside(tmp_path: Path):
    cache = SegmentCache(tmp_path / "c")
    key = "78" * 32
    with cache.staging(key) as staged:
        failure = cache.failures.record(key, staged, {"step": "x", "error": "boom"})
    assert cache.failure(key) is not None
    (failure.path / "failure.json").write_text("{")
    with pytest.warns(CacheIntegrityWarning, match="failure.json"):
        assert cache.failure(key) is None
    assert [p.name.split(".")[1] for p in cache.pruning.quarantined()] == ["failure"]


def test_a_failure_record_being_replaced_is_not_taken_for_damage(tmp_path: Path):
    """A reader without the lock may find a record half written while its key's builder
    replaces it (--brainsmith-retry-failed under xdist): it neither waits for the build
    nor moves the record aside (which would build the segment once more)."""
    cache = SegmentCache(tmp_path / "c")
    key = "79" * 32
    with cache.staging(key) as staged:
        old = cache.failures.record(key, staged, {"step": "x", "error": "old"})
    other = SegmentCache(tmp_path / "c")  # another process's view of the same cache
    with cache.lock(key):  # the builder, retrying the failure
        (old.path / "failure.json").unlink()  # what a reader may meet mid-replacement
        started = time.monotonic()
        assert other.failure(key) is None  # no failure to go by meanwhile ...
        assert time.monotonic() - started < 5  # ... and the reader did not wait for the build
        with cache.staging(key) as staged:
            cache.failures.record(key, staged, {"step": "x", "error": "new"})
    assert cache.pruning.quarantined() == []
    assert other.failure(key).record["error"] == "new"


def test_forgetting_a_failure_never_shows_readers_a_half_deleted_record(tmp_path: Path):
    cache = SegmentCache(tmp_path / "c")
    key = "7a" * 32
    with cache.staging(key) as staged:
        failure = cache.failures.record(key, staged, {"step": "x", "error": "boom"})
    seen: list[bool] = []
    real_rename = os.rename

    def rename(src, dst):  # the moment it goes, the record is whole or not there at all
        seen.append((failure.path / "failure.json").is_file())
        return real_rename(src, dst)

    with cache.lock(key), pytest.MonkeyPatch.context() as mp:
        mp.setattr(fingerprints.os, "rename", rename)
        cache.forget_failure(key)
    assert seen == [True]  # one rename moved it, whole, out of the readers' way
    assert cache.failure(key) is None and cache.pruning.quarantined() == []


def test_prune_candidates_include_damaged_entries_in_use_and_the_quarantine(tmp_path: Path):
    cache = SegmentCache(tmp_path / "c")
    used, unused, damaged = "a1" * 32, "b2" * 32, "c3" * 32
    for key in (used, unused, damaged):
        publish(cache, key, FILES)
    (cache.entry_path(damaged) / "manifest.json").unlink()
    (cache.base / "quarantine" / "old").mkdir(parents=True)
    ids = cache.pruning.prunable({used, damaged})
    assert sorted(ids) == sorted([unused, f"damaged/{damaged}", "quarantine/old"])
    for ident in ids:
        assert cache.pruning.size_bytes(ident) >= 0
        cache.pruning.remove(ident)
    assert [e.key for e in cache.entries()] == [used]
    assert cache.pruning.quarantined() == []


def test_the_cache_creates_nothing_until_it_writes(tmp_path: Path):
    cache = SegmentCache(tmp_path / "new" / "cache")
    cache.check_writable()
    assert cache.lookup("9a" * 32) is None and cache.failure("9a" * 32) is None
    assert list(cache.entries()) == [] and cache.pruning.prunable(set()) == []
    assert not (tmp_path / "new").exists()


def test_a_lock_file_replaced_by_a_directory_is_a_clear_error(tmp_path: Path):
    cache = SegmentCache(tmp_path / "c")
    key = "de" * 32
    (cache.base / "locks" / f"{key}.lock").mkdir(parents=True)
    with pytest.raises(CacheError, match=r"lock file .*\.lock is a directory") as caught:
        cache.lock(key).acquire()
    assert isinstance(caught.value, OSError)  # for callers that catch lock failures as such


def test_a_new_build_removes_only_the_staging_whose_owner_is_gone(tmp_path: Path):
    cache = SegmentCache(tmp_path / "c")
    key = "5a" * 32
    mine = cache.new_staging(key)  # a build of this process, still running
    owner = mine.name.split(".")[1].rsplit("-", 1)[0]  # build-<host>
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    theirs = cache.base / "tmp" / f"{key}.{owner}-{live.pid}.x"  # another session's build
    gone = cache.base / "tmp" / f"{key}.{owner}-{dead.pid}.y"  # a session that died
    unnamed = cache.base / "tmp" / f"{key}.forgotten.123"  # set aside, interrupted
    for path in (theirs, gone, unnamed):
        path.mkdir()
    try:
        fresh = cache.new_staging(key)
    finally:
        live.kill()
        live.wait()
    assert fresh.is_dir() and fresh != mine
    assert mine.is_dir() and theirs.is_dir()
    assert not gone.exists() and not unnamed.exists()


#: Three blueprints asking for one segment (one key): a step slow enough for the three
#: designs' tasks to overlap.
SHARED_STEP = """
import time

def slow_pass(model, cfg):
    time.sleep(1.5)
    return model

def pytest_brainsmith_register(registry):
    registry.register_step(slow_pass, reads=())
"""


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_segment_asked_for_by_three_blueprints_is_built_once(
    pytester: pytest.Pytester, xdist: list[str]
):
    shutil.copyfile(MODEL, pytester.path / "tfc.onnx")
    pytester.makeconftest(SHARED_STEP)
    blueprint = (
        "model: tfc.onnx\nfpga_part: xc7z020clg400-1\nclock_ns: 10\n"
        "finn_config:\n  target_fps: 1000\ndesign_space:\n  steps:\n    - slow_pass\n"
    )
    for name in ("a", "b", "c"):
        pytester.makefile(".blueprint.yaml", **{name: blueprint})
    done = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--brainsmith-cache=c", *xdist)
    out = done.stdout.str()
    assert done.ret == 0, out
    assert "3 passed" in out
    assert "segments: 1 built, 2 reused, 0 failed" in out, out
    assert "No such file or directory" not in out
    assert list((pytester.path / "c" / "v1" / "tmp").iterdir()) == []  # nothing left behind


def test_check_writable_names_a_path_that_is_a_file(tmp_path: Path):
    (tmp_path / "file").write_text("")
    with pytest.raises(CacheError, match="is not a directory"):
        SegmentCache(tmp_path / "file" / "cache").check_writable()


# -- real FINN: damaged entries in a run -----------------------------------------------


def run_pytest(folder: Path, *args: str, wrap: list[str] | None = None):
    """pytest in ``folder``; the user's cache directory (where the fingerprints of a
    read-only cache's entries are kept) is the project's ``xdg``."""
    return subprocess.run(
        [*(wrap or []), sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "XDG_CACHE_HOME": str(folder / "xdg")},
    )


def stored(folder: Path) -> dict[str, tuple]:
    """The last run's designs in the results store: outcome and estimates."""
    with contextlib.closing(
        sqlite3.connect(folder / "build" / "brainsmith" / "results.sqlite")
    ) as db:
        (run,) = db.execute("SELECT run_id FROM runs ORDER BY started DESC, rowid DESC LIMIT 1")
        rows = db.execute(
            "SELECT design, outcome, estimates, error FROM designs WHERE run_id = ?", run
        ).fetchall()
    return {
        design: (outcome, json.loads(estimates), error)
        for design, outcome, estimates, error in rows
    }


def entries_by_segment(cache: Path) -> dict[str, Path]:
    """Entry directory of each segment, by its label's part below the blueprint."""
    found = {}
    for manifest in (cache / "v1" / "entries").glob("*/*/manifest.json"):
        label = json.loads(manifest.read_text())["segment"].split("::", 1)[1]
        found[label] = manifest.parent
    return found


ROOT = "qonnx_to_finn..create_dataflow_partition"
HLS = f"{ROOT}::MVAU[hls]"
RTL = f"{ROOT}::MVAU[rtl]"
LEAF = f"{RTL}::target_fps[100000]"
OTHER_LEAF = f"{HLS}::target_fps[400000]"


#: Not copied with a project: each run's results are compared on their own.
IGNORED = shutil.ignore_patterns("results.sqlite*", "builds.jsonl")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A project whose cache holds the 4 designs (7 segments), and their stored results."""
    folder = tmp_path_factory.mktemp("pristine")
    shutil.copyfile(MODEL, folder / "tfc.onnx")
    (folder / "tfc.blueprint.yaml").write_text(TFC_BLUEPRINT)
    (folder / "conftest.py").write_text(CONFTEST)
    done = run_pytest(folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(builds(folder)) == 7
    return folder, stored(folder)


@pytest.fixture
def project(pristine: tuple[Path, dict], tmp_path: Path) -> Path:
    """A copy of the pristine project and its cache (new inodes: read once, then trusted)."""
    folder = tmp_path / "project"
    shutil.copytree(pristine[0], folder, symlinks=True, ignore=IGNORED)
    return folder


def writable(path: Path) -> Path:
    path.chmod(0o644)
    return path


def truncate_checkpoint(entry: Path) -> str:
    os.truncate(writable(entry / "output.onnx"), 1000)
    return "output.onnx"


def edit_lut(entry: Path) -> str:
    report = writable(entry / "build" / "report" / "estimate_layer_resources.json")
    data = json.loads(report.read_text())
    data["total"]["LUT"] = 1.0  # the "best LUT" an edited report would win
    report.write_text(json.dumps(data))
    return "build/report/estimate_layer_resources.json"


def drop_manifest(entry: Path) -> str:
    (entry / "manifest.json").unlink()
    return "manifest.json"


def garble_manifest(entry: Path) -> str:
    writable(entry / "manifest.json").write_text('{"key": ')
    return "manifest.json"


def drop_report(entry: Path) -> str:
    (entry / "build" / "report" / "estimate_network_performance.json").unlink()
    return "build/report/estimate_network_performance.json"


@pytest.mark.parametrize(
    "segment, damage",
    [
        (LEAF, truncate_checkpoint),
        (LEAF, edit_lut),
        (RTL, drop_manifest),
        (LEAF, garble_manifest),
        (OTHER_LEAF, drop_report),
    ],
    ids=["truncated-leaf-checkpoint", "edited-report", "no-manifest", "bad-manifest", "no-report"],
)
def test_a_damaged_entry_is_quarantined_warned_rebuilt_and_results_equal_a_clean_build(
    project: Path, pristine: tuple[Path, dict], segment: str, damage
):
    cache = project / "build" / "brainsmith" / "cache"
    entry = entries_by_segment(cache)[segment]
    file = damage(entry)
    done = run_pytest(project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout and done.stdout.count("CacheIntegrityWarning") == 1
    warning = next(line for line in done.stdout.splitlines() if "CacheIntegrityWarning" in line)
    assert entry.name[:12] in warning and f"{file}:" in warning and segment in warning
    # moved aside whole, with the reason, not deleted
    (moved,) = (cache / "v1" / "quarantine").iterdir()
    assert moved.name.startswith(entry.name)
    assert json.loads((moved / "QUARANTINE.json").read_text())["file"] == file
    # rebuilt: that segment only; nothing recorded as failed; the same results
    assert [(b["key"], b["status"]) for b in builds(project)] == [(entry.name, "built")]
    assert not (cache / "v1" / "failures").exists()
    assert stored(project) == pristine[1]
    again = run_pytest(project)
    assert "4 passed in" in again.stdout and "warning" not in again.stdout
    assert builds(project) == []


def test_a_rewritten_root_is_rebuilt_before_a_new_child_and_never_charged_to_it(
    project: Path, pristine: tuple[Path, dict]
):
    cache = project / "build" / "brainsmith" / "cache"
    found = entries_by_segment(cache)
    root, child = found[ROOT], found[RTL]
    for entry in (child, found[f"{RTL}::target_fps[100000]"], found[f"{RTL}::target_fps[400000]"]):
        shutil.rmtree(entry)  # a child that must be built from the root's checkpoint
    checkpoint = writable(root / "output.onnx")
    before = checkpoint.stat()
    checkpoint.write_bytes(b"\0" * before.st_size)  # same size, and the old mtime
    os.utime(checkpoint, ns=(before.st_atime_ns, before.st_mtime_ns))
    done = run_pytest(project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout and done.stdout.count("CacheIntegrityWarning") == 1
    assert f"{root.name[:12]} (segment tfc.blueprint.yaml::{ROOT}) is damaged" in done.stdout
    built = [b["segment"].split("::", 1)[1] for b in builds(project)]
    # the root first, then the child from it; its two leaves build side by side on the
    # two workers, logged in the order they finish
    assert built[:2] == [ROOT, RTL]
    assert sorted(built[2:]) == [f"{RTL}::target_fps[100000]", f"{RTL}::target_fps[400000]"]
    assert not (cache / "v1" / "failures").exists()
    assert stored(project) == pristine[1]


#: Damages the root's checkpoint when the first child is built from it: the next child
#: must find out right before it resumes from it (the root was verified long before).
DAMAGE_AFTER_FIRST_CHILD = """
import json, os, pathlib

def pytest_brainsmith_segment_finish(segment, result):
    with open(os.path.join(os.path.dirname(__file__), "builds.jsonl"), "a") as log:
        log.write(json.dumps({"key": result.key, "status": result.status,
                              "segment": result.segment}) + "\\n")
    if segment.name == "MVAU[hls]":
        root = pathlib.Path(os.environ["BRAINSMITH_TEST_ROOT"]) / "output.onnx"
        root.chmod(0o644)
        with open(root, "r+b") as handle:
            handle.seek(100)
            handle.write(b"corrupt")
"""


def test_the_checkpoint_a_child_resumes_from_is_checked_right_before_it_builds(
    project: Path, pristine: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
):
    cache = project / "build" / "brainsmith" / "cache"
    found = entries_by_segment(cache)
    for label, entry in found.items():
        if label != ROOT:
            shutil.rmtree(entry)
    (project / "conftest.py").write_text(DAMAGE_AFTER_FIRST_CHILD)
    monkeypatch.setenv("BRAINSMITH_TEST_ROOT", str(found[ROOT]))
    # one worker: the sibling starts after the damage (two would start both at once)
    done = run_pytest(project, "--brainsmith-workers", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout and done.stdout.count("CacheIntegrityWarning") == 1
    assert "output.onnx: does not match its sha256" in done.stdout
    labels = [b["segment"].split("::", 1)[1] for b in builds(project)]
    assert labels.count(ROOT) == 1 and labels.index(ROOT) > labels.index(HLS)
    assert labels.index(ROOT) < labels.index(RTL)  # the root again, then the child
    assert not (cache / "v1" / "failures").exists()
    assert stored(project) == pristine[1]


def test_rebuild_and_prune_handle_an_entry_without_manifest(project: Path):
    cache = project / "build" / "brainsmith" / "cache"
    found = entries_by_segment(cache)
    (found[HLS] / "manifest.json").unlink()
    (cache / "v1" / "quarantine" / "earlier").mkdir(parents=True)
    pruned = run_pytest(project, "--brainsmith-prune")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    # the engine finds the entry damaged while it keys the designs (moved aside, then
    # removed); what was built on its output cannot be keyed without it: unused
    assert f"removed quarantine/{found[HLS].name}." in pruned.stdout, pruned.stdout
    assert "removed quarantine/earlier" in pruned.stdout
    assert not found[HLS].exists() and not (cache / "v1" / "quarantine" / "earlier").exists()
    assert all(found[label].exists() for label in found if not label.startswith(HLS))

    (found[RTL] / "manifest.json").unlink()
    done = run_pytest(project, "--brainsmith-rebuild")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    assert len(builds(project)) == 7


# -- unwritable caches -----------------------------------------------------------------


def _read_only_mounts_work(tmp: Path) -> str | None:
    """None if ``unshare`` can make a private read-only bind mount here, else why not."""
    if shutil.which("unshare") is None:
        return "needs unshare(1) for a private read-only bind mount"
    tmp.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [*read_only(tmp), "sh", "-c", f"! touch {tmp}/probe 2>/dev/null"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return f"cannot make a read-only bind mount here: {done.stderr.strip()}"
    return None


def read_only(directory: Path) -> list[str]:
    """A command prefix that runs the rest with ``directory`` read-only: a bind mount in
    a private mount namespace, so root is denied too and nothing outlives the command."""
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(directory)]


@pytest.fixture(scope="module")
def mounts(tmp_path_factory: pytest.TempPathFactory) -> None:
    why = _read_only_mounts_work(tmp_path_factory.mktemp("probe") / "ro")
    need(why is None, why or "")


def small_project(folder: Path, cache: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MODEL, folder / "tfc.onnx")
    (folder / "tfc.blueprint.yaml").write_text(TFC_BLUEPRINT)
    (folder / "pytest.ini").write_text(f"[pytest]\nbrainsmith_cache = {cache}\n")
    return folder


def test_an_empty_cache_that_cannot_be_written_is_one_usage_error(tmp_path: Path, mounts):
    locked = tmp_path / "locked"
    locked.mkdir()
    folder = small_project(tmp_path / "project", locked / "cache")
    done = run_pytest(folder, wrap=read_only(locked))
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error
    assert "INTERNALERROR" not in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert f"brainsmith cache {locked / 'cache'} is not writable" in line
    assert "read-only file system" in line and "--brainsmith-cache" in line
    # collecting needs no cache at all, nor does a run without designs
    collected = run_pytest(folder, "--collect-only", wrap=read_only(locked))
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert "4 tests collected" in collected.stdout
    (folder / "test_plain.py").write_text("def test_plain():\n    pass\n")
    plain = run_pytest(folder, "test_plain.py", wrap=read_only(locked))
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "1 passed" in plain.stdout


def test_collecting_creates_no_cache_directory(tmp_path: Path):
    folder = small_project(tmp_path / "project", tmp_path / "cache")
    done = run_pytest(folder, "--collect-only")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp_path / "cache").exists()


def read_only_copy(pristine: Path, folder: Path) -> Path:
    """The project with its cache moved out to ``folder/cache`` (to mount read-only)."""
    project = folder / "project"
    shutil.copytree(pristine, project, symlinks=True, ignore=IGNORED)
    shutil.move(project / "build" / "brainsmith" / "cache", folder / "ro" / "cache")
    (project / "pytest.ini").write_text(f"[pytest]\nbrainsmith_cache = {folder / 'ro' / 'cache'}\n")
    return project


def test_a_read_only_cache_that_holds_every_entry_keeps_working(
    tmp_path: Path, pristine: tuple[Path, dict], mounts
):
    project = read_only_copy(pristine[0], tmp_path)
    for _ in range(2):
        done = run_pytest(project, wrap=read_only(tmp_path / "ro"))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "4 passed in" in done.stdout and "warning" not in done.stdout
        assert "segments: 0 built, 7 reused" in done.stdout
        assert stored(project) == pristine[1]
    # a copy (new inodes): its files were read once; the fingerprints that spare reading
    # them again are this user's, since the cache cannot take them
    assert len(list((project / "xdg" / "pytest-brainsmith" / "verified").glob("*.json"))) == 7


def test_a_read_only_cache_missing_an_entry_fails_those_designs_clearly(
    tmp_path: Path, pristine: tuple[Path, dict], mounts
):
    project = read_only_copy(pristine[0], tmp_path)
    cache = tmp_path / "ro" / "cache"
    found = entries_by_segment(cache)
    shutil.rmtree(found[LEAF])  # missing
    os.truncate(writable(found[OTHER_LEAF] / "output.onnx"), 10)  # damaged
    done = run_pytest(project, wrap=read_only(tmp_path / "ro"))
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "2 failed, 2 passed" in out
    assert "INTERNALERROR" not in out and "Traceback" not in out and "PermissionError" not in out
    assert re.search(
        rf"brainsmith cache error: cannot lock \S+{found[LEAF].name}\.lock to build cache entry "
        rf"{found[LEAF].name}: \S+ is on a read-only file system\. Building a segment that is "
        "not in the cache needs write access",
        out,
    ), out
    assert (
        f"cache entry {found[OTHER_LEAF].name[:12]} (segment tfc.blueprint.yaml::{OTHER_LEAF}) "
        "is damaged: output.onnx: has 10 bytes" in out
    )
    assert "it cannot be moved aside and rebuilt" in out


def test_prune_on_a_read_only_cache_says_what_it_could_not_remove(
    tmp_path: Path, pristine: tuple[Path, dict], mounts
):
    project = read_only_copy(pristine[0], tmp_path)
    cache = tmp_path / "ro" / "cache"
    (cache / "v1" / "quarantine" / "earlier").mkdir(parents=True)
    unused = entries_by_segment(cache)[LEAF].name  # -k leaves that design out
    done = run_pytest(
        project, "--brainsmith-prune", "-k", "not (rtl and 100000)", wrap=read_only(tmp_path / "ro")
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "INTERNALERROR" not in out and "Traceback" not in out, out
    assert re.search(rf"cannot remove {unused}: \S+ is on a read-only file system", out), out
    assert re.search(r"cannot remove quarantine/earlier: \S+ is on a read-only file system", out)
    assert "removed 0 unused cache entries (0.0 MB); 2 could not be removed (above)" in out, out


def test_prune_leaves_an_entry_another_process_is_building(tmp_path: Path):
    cache = SegmentCache(tmp_path / "c")
    key = "7b" * 32
    with cache.staging(key) as staged:
        cache.failures.record(key, staged, {"step": "x", "error": "boom"})
    other = SegmentCache(tmp_path / "c")  # another process's view of the same cache
    with other.lock(key):  # it is building the key again
        with pytest.raises(EntryInUse, match="is in use"):
            cache.pruning.remove(key)
    assert cache.failure(key) is not None
    cache.pruning.remove(key)
    assert cache.failure(key) is None


def test_a_lock_file_replaced_by_a_directory_fails_the_design_clearly(project: Path):
    cache = project / "build" / "brainsmith" / "cache"
    leaf = entries_by_segment(cache)[LEAF]
    shutil.rmtree(leaf)
    lock = cache / "v1" / "locks" / f"{leaf.name}.lock"
    lock.unlink()
    lock.mkdir()
    done = run_pytest(project)
    out = done.stdout + done.stderr
    assert "1 failed, 3 passed" in out, out
    assert f"the lock file {cache / 'v1' / 'locks' / leaf.name}.lock is a directory" in out
    assert "IsADirectoryError" not in out and "INTERNALERROR" not in out


# -- a worker that dies mid-design -------------------------------------------------------

CRASHING_STEPS = """
import os

def pass_through(model, cfg):
    return model

def crash(model, cfg):
    os._exit(3)  # the process dies: no exception, no report from it

def pytest_brainsmith_register(registry):
    registry.register_step(pass_through, reads=())
    registry.register_step(crash, reads=())
"""


def test_a_design_whose_worker_dies_is_in_the_summary_the_html_report_and_the_store(
    tmp_path: Path,
):
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copyfile(MODEL, folder / "tfc.onnx")
    (folder / "conftest.py").write_text(CRASHING_STEPS)
    (folder / "tfc.blueprint.yaml").write_text(
        "model: tfc.onnx\nfpga_part: xc7z020clg400-1\nclock_ns: 10\n"
        "finn_config:\n  target_fps: 100000\n"
        "design_space:\n  steps:\n    - at_end:\n        insert: [[pass_through, crash]]\n"
    )
    # inline builds: the step's os._exit ends the xdist worker itself (with the engine's
    # worker processes it would end only that build: tests/test_engine.py)
    done = run_pytest(
        folder,
        "-n",
        "2",
        "--brainsmith-workers",
        "0",
        "--html=report.html",
        "--self-contained-html",
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "1 failed, 1 passed" in out
    assert "crashed while running" in out
    assert "designs: 1 passed, 1 failed" in out
    designs = stored(folder)
    (crashed,) = [d for d, (outcome, _, _) in designs.items() if outcome == "failed"]
    assert crashed.endswith("crash") and len(designs) == 2
    error = designs[crashed][2]
    assert "crashed while running" in error
    assert (
        "it was building segment tfc.blueprint.yaml::" in error and "step 1/1 crash, when" in error
    )
    assert "brainsmith: it was building segment" in done.stdout  # under FAILURES
    page = (folder / "report.html").read_text()
    assert "designs: 1 passed, 1 failed" in page
    blob = re.search(r'data-jsonblob="([^"]*)"', page).group(1)
    rows = json.loads(html.unescape(blob))["tests"]
    assert set(rows) == set(designs)
    (row,) = rows[crashed]
    assert row["result"] == "Failed"
    cells = "".join(row["resultsTableRow"])
    assert 'class="col-bs_design"' in cells and "crash" in cells


def test_a_builders_key_lock_is_exclusive_in_one_process_and_the_caches_repairs_nest_in_it(
    tmp_path: Path,
):
    from filelock import Timeout

    cache, other = SegmentCache(tmp_path / "c"), SegmentCache(tmp_path / "c")
    key = "f0" * 32
    path = publish(cache, key, FILES)
    os.truncate(writable(path / "output.onnx"), 10)
    outer = cache.lock(key).acquire(timeout=0)
    with pytest.raises(Timeout):  # another task of the same engine asking for the key
        cache.lock(key).acquire(timeout=0)
    with pytest.raises(Timeout):  # another process's view of the cache
        other.lock(key).acquire(timeout=0)
    with pytest.warns(CacheIntegrityWarning, match="has 10 bytes"):
        assert cache.lookup(key) is None  # moved aside while its caller holds the lock
    assert not path.exists()
    outer.release()
    assert not outer.is_locked
    with other.lock(key):
        with pytest.raises(Timeout):
            cache.lock(key).acquire(timeout=0)


def test_a_failure_after_a_design_reported_is_kept_with_its_record(project: Path):
    (project / "conftest.py").write_text(
        CONFTEST
        + """
import pytest

@pytest.fixture(autouse=True)
def breaks_after(request):
    yield
    if request.node.nodeid.endswith("MVAU[rtl]::target_fps[400000]"):
        raise RuntimeError("teardown broke")
"""
    )
    done = run_pytest(project)
    assert "4 passed, 1 error" in done.stdout, done.stdout
    assert "designs: 3 passed, 0 failed, 0 skipped, 1 errors" in done.stdout
    (broken,) = [(d, r) for d, r in stored(project).items() if r[0] == "error"]
    assert broken[0].endswith("MVAU[rtl]::target_fps[400000]")
    assert broken[1][2] == "error in teardown: RuntimeError: teardown broke"
    assert broken[1][1]  # the estimates it reported


def test_a_design_whose_record_cannot_be_made_fails_rather_than_passes(
    pytester: pytest.Pytester,
):
    shutil.copyfile(MODEL, pytester.path / "tfc.onnx")
    pytester.makeconftest(
        """
from pytest_brainsmith.core import outcomes

def broken(self, nodeid=None):
    raise ValueError("zip() argument 2 is shorter than argument 1")

outcomes.DesignOutcome.record = broken  # a record that cannot be made, whatever the cause

def pass_through(model, cfg):
    return model

def pytest_brainsmith_register(registry):
    registry.register_step(pass_through, reads=())
"""
    )
    pytester.makefile(
        ".blueprint.yaml",
        e="model: tfc.onnx\nfpga_part: xc7z020clg400-1\nclock_ns: 10\n"
        "finn_config:\n  target_fps: 1000\ndesign_space:\n  steps:\n    - pass_through\n",
    )
    done = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--brainsmith-cache=c", "-rf")
    out = done.stdout.str()
    assert done.ret == 1, out
    assert "1 failed" in out and "passed" not in out.splitlines()[-1]
    assert "brainsmith could not build this design's record: ValueError('zip() argument 2" in out


def test_a_record_from_a_node_id_alone_names_the_choices_and_the_segments():
    from pytest_brainsmith.views.records import lost_record, record_from_nodeid

    nodeid = "bp/tfc.blueprint.yaml::a..b::MVAU[rtl]::skip[minimize_bit_width]::target_fps[1e5]"
    record = record_from_nodeid(nodeid)
    assert record["choices"] == {"MVAU": "rtl", "minimize_bit_width": "skip", "target_fps": 1e5}
    assert record["blueprint"] == "bp/tfc.blueprint.yaml"
    assert [s["path"] for s in record["segments"]][-1] == nodeid.removeprefix("bp/")
    building = {"segment": "tfc.blueprint.yaml::a..b::MVAU[rtl]", "step": "x", "steps": ["x"]}
    lost = lost_record(
        nodeid, "failed", "worker 'gw0' crashed", None, {**building, "step_index": 1}
    )
    assert lost["outcome"] == "failed" and lost["failed_step"] == "x"
    assert lost["error"] == (
        "worker 'gw0' crashed; it was building segment tfc.blueprint.yaml::a..b::MVAU[rtl], "
        "step 1/1 x, when it stopped"
    )
    assert [s["status"] for s in lost["segments"]] == ["not-run", "failed", "not-run", "not-run"]
