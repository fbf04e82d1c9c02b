"""The worker pool (core/launchers/worker_pool.py): every build in a process of its own, forked
ahead from the zygote, with its own log, memory limit and peak; what cannot be pickled
still builds in a fresh worker.
The pool's own tests fork from this process (no FINN); the project tests run pytest on
the real FINN builder with registered pure-Python steps, as test_engine.py does."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from conftest import MODEL, run_in, step_project, take_builds

from pytest_brainsmith.core.launchers import ForkedBuild, Worker, WorkerPool


def answer(status: str = "built", **extra: Any) -> dict[str, Any]:
    """A job's answer, with what the process looked like while it ran."""
    return {
        "status": status,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "cwd": os.getcwd(),
        "leak": os.environ.get("BRAINSMITH_TEST_LEAK"),
        **extra,
    }


def messy(folder: str) -> dict[str, Any]:
    """A build that changes the process: its directory and its environment."""
    seen = answer()
    os.chdir(folder)
    os.environ["BRAINSMITH_TEST_LEAK"] = "left behind"
    print("messy was here")
    return seen


def fails() -> dict[str, Any]:
    return answer("failed")


def sleeps() -> dict[str, Any]:
    time.sleep(600)
    return answer()


def allocates(size: int) -> dict[str, Any]:
    block = bytearray(size)
    block[::4096] = b"x" * len(block[::4096])  # touched: resident
    del block
    return answer()


def exits() -> dict[str, Any]:
    os._exit(3)


def exits_leaving_a_child() -> dict[str, Any]:
    """Dies while a process it forked holds its pipe open (a build's helper process)."""
    if os.fork() == 0:
        time.sleep(5)
        os._exit(0)
    os._exit(3)


def reads_environment() -> dict[str, Any]:
    return answer(
        seen=os.environ.get("BRAINSMITH_TEST_SETTING"), out=os.readlink("/proc/self/fd/1")
    )


def uses(guard: Any) -> dict[str, Any]:
    return answer(locked=guard.locked())


def finish(worker: ForkedBuild | Worker, timeout: float = 30.0) -> dict[str, Any] | None:
    """Wait for the build as the scheduler does; its answer (None if the process died)."""
    deadline = time.monotonic() + timeout
    while not worker.poll():
        assert time.monotonic() < deadline, "the build did not end"
        time.sleep(0.01)
    worker.reap()
    return worker.result


#: what the pool is told before its first fork (the engine shares every step function)
KNOWN = (
    answer,
    messy,
    fails,
    sleeps,
    allocates,
    uses,
    exits,
    exits_leaving_a_child,
    reads_environment,
)


@pytest.fixture
def pool():
    made = WorkerPool(share=KNOWN)
    yield made
    made.close()
    assert not made.processes


def test_every_build_runs_in_a_process_of_its_own_and_leaves_nothing_behind(
    pool: WorkerPool, tmp_path: Path
):
    first = finish(pool(partial(messy, str(tmp_path)), output=tmp_path / "1.log"))
    second = finish(pool(answer, output=tmp_path / "2.log"))
    assert first and second and first["pid"] != second["pid"]
    assert os.getpid() not in (first["pid"], second["pid"])
    assert pool.started == 2
    # what the first build changed never reaches the second
    assert second["cwd"] == first["cwd"] == os.getcwd()
    assert first["leak"] is None and second["leak"] is None
    # each build writes its own log
    assert "messy was here" in (tmp_path / "1.log").read_text()
    assert "messy was here" not in (tmp_path / "2.log").read_text()


def test_the_next_process_is_forked_ahead_while_a_build_runs(pool: WorkerPool, tmp_path: Path):
    building = pool(sleeps, output=tmp_path / "1.log")
    spares = [p.pid for p in pool._spares]
    assert len(spares) == pool.spares == 1 and building.pid not in spares
    after = finish(pool(answer, output=tmp_path / "2.log"))
    assert after and after["pid"] == spares[0]  # no fork on the next build's path
    building.kill("cancel")


def test_each_build_sees_the_environment_as_it_is_when_it_starts(
    pool: WorkerPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    before = finish(pool(reads_environment, output=tmp_path / "1.log"))
    # the next build's process was forked ahead, before this change: it still sees it
    monkeypatch.setenv("BRAINSMITH_TEST_SETTING", "set after the fork")
    after = finish(pool(reads_environment, output=tmp_path / "2.log"))
    assert before and after
    assert before["seen"] is None and after["seen"] == "set after the fork"
    assert after["out"] == str(tmp_path / "2.log")  # its output goes to its own log


def test_a_killed_build_ends_its_process_only(pool: WorkerPool, tmp_path: Path):
    hanging = pool(sleeps, output=tmp_path / "1.log")
    assert isinstance(hanging, ForkedBuild)
    time.sleep(0.2)
    hanging.kill("timeout")
    assert hanging.poll() and hanging.result is None
    assert hanging.exit_cause()[0] == "killed"
    assert not os.path.exists(f"/proc/{hanging.pid}/stat") or _zombie_or_gone(hanging.pid)
    after = finish(pool(answer, output=tmp_path / "2.log"))
    assert after and after["pid"] != hanging.pid


def _zombie_or_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_a_function_made_after_the_spare_was_forked_gets_a_process_that_knows_it(
    pool: WorkerPool, tmp_path: Path
):
    before = finish(pool(answer, output=tmp_path / "1.log"))
    spare = pool._spares[0].pid
    secret = f"closure-{time.time()}"

    def late() -> dict[str, Any]:  # a closure: pickle cannot name it, the fork has it
        return answer(secret=secret)

    after = finish(pool(late, output=tmp_path / "2.log"))
    assert before and after and after["secret"] == secret
    assert after["pid"] != spare  # the spare never saw ``late``: it was ended
    assert _zombie_or_gone(spare)


def test_a_job_that_cannot_be_pickled_builds_in_a_fresh_worker(pool: WorkerPool, tmp_path: Path):
    guard = threading.Lock()  # a lock cannot be pickled

    worker = pool(partial(uses, guard), output=tmp_path / "1.log")
    assert isinstance(worker, Worker)
    result = finish(worker)
    assert result and result["locked"] is False and result["pid"] != os.getpid()
    assert pool.fresh == 1


def test_each_build_measures_its_own_peak_memory(pool: WorkerPool, tmp_path: Path):
    big = finish(pool(partial(allocates, 300 << 20), output=tmp_path / "1.log"))
    small = finish(pool(answer, output=tmp_path / "2.log"))
    assert big and small

    def extra(result: dict[str, Any]) -> int:
        return result["memory"]["VmHWM"] - result["memory"]["start_rss"]

    assert extra(big) > 250 << 20
    assert extra(small) < 50 << 20  # not the 300 MB the process peaked at before


def test_a_memory_limit_applies_per_build_beyond_what_the_process_holds(
    pool: WorkerPool, tmp_path: Path
):
    over = finish(
        pool(partial(allocates, 512 << 20), output=tmp_path / "1.log", max_memory=128 << 20)
    )
    assert over and over["status"] == "error" and "MemoryError" in over["error"]
    within = finish(
        pool(partial(allocates, 64 << 20), output=tmp_path / "2.log", max_memory=128 << 20)
    )
    unlimited = finish(pool(partial(allocates, 512 << 20), output=tmp_path / "3.log"))
    assert within and within["status"] == "built"
    assert unlimited and unlimited["status"] == "built"


def test_closing_the_pool_ends_its_processes(tmp_path: Path):
    pool = WorkerPool(share=KNOWN)
    pids = [finish(pool(answer, output=tmp_path / f"{i}.log"))["pid"] for i in range(2)]
    assert pool.processes  # the spare
    pids += [p.pid for p in pool.processes]
    pool.close()
    assert not pool.processes
    assert all(_zombie_or_gone(pid) for pid in pids)


def test_a_fork_server_imports_the_compiler_and_forks_the_processes(tmp_path: Path):
    pool = WorkerPool(share=KNOWN, fork_server=True)
    try:
        assert pool.prepare() is None and pool.imports == 1
        assert pool.server is not None
        server = pool.server.process.pid
        first = finish(pool(answer, output=tmp_path / "1.log"))
        assert first and first["ppid"] == server  # forked there, not here
        again = finish(pool(answer, output=tmp_path / "2.log"))
        assert again and again["pid"] != first["pid"] and again["ppid"] == server
        # its children's deaths are told as those of the pool's own children
        crashed = pool(exits, output=tmp_path / "3.log")
        assert finish(crashed) is None
        assert crashed.exit_cause() == ("crash", "the worker process exited with code 3")
        hanging = pool(sleeps, output=tmp_path / "4.log")
        time.sleep(0.2)
        hanging.kill("timeout")
        assert hanging.poll() and hanging.exit_cause()[0] == "killed"
        after = finish(pool(answer, output=tmp_path / "5.log"))
        assert after and after["ppid"] == server
        # the server collects the processes that answered and exited: no zombie piles up
        time.sleep(0.2)  # they exit on their own time
        finish(pool(answer, output=tmp_path / "6.log"))  # a fork asked: it collects first
        children = Path(f"/proc/{server}/task/{server}/children").read_text().split()
        assert first["pid"] not in map(int, children)
        assert again["pid"] not in map(int, children)
    finally:
        pool.close()
    assert _zombie_or_gone(server) and _zombie_or_gone(after["pid"])


def test_a_served_process_that_dies_is_seen_even_if_its_pipe_stays_open(tmp_path: Path):
    pool = WorkerPool(share=KNOWN, fork_server=True)
    try:
        assert pool.prepare() is None
        worker = pool(exits_leaving_a_child, output=tmp_path / "1.log")
        assert finish(worker, timeout=4) is None  # not the 5 s its child keeps the pipe
        assert worker.exit_cause() == ("crash", "the worker process exited with code 3")
    finally:
        pool.close()


def test_a_dead_fork_server_ends_its_builds_as_killed_and_the_pool_forks_from_here(
    tmp_path: Path,
):
    pool = WorkerPool(share=KNOWN, fork_server=True)
    try:
        assert pool.prepare() is None and pool.server is not None
        building = pool(sleeps, output=tmp_path / "1.log")
        assert building.pid is not None  # the server forked it (its answer waited for)
        os.kill(pool.server.process.pid, signal.SIGKILL)  # e.g. the OOM killer's choice
        assert finish(building) is None
        # the machine's doing, not the design's: never recorded as the build's crash
        kind, why = building.exit_cause()
        assert kind == "killed" and "the fork server" in why and "died" in why
        # the spare it forked may not have died yet (the kernel's signal is asynchronous;
        # a loaded CI machine saw the next build sent to it, lost with it): as if so, it
        # still looks alive and takes messages; it is never handed the next build
        (spare,) = pool._spares
        sent: list[object] = []
        spare.process.is_alive = lambda: True
        spare.conn.send = sent.append
        after = finish(pool(answer, output=tmp_path / "2.log"))
        assert sent == []
        assert after and after["ppid"] == os.getpid() and pool.server is None
    finally:
        pool.close()


# -- in a pytest run, on FINN's builder ------------------------------------------------
STEPS = """
import json, os, threading

HERE = os.path.dirname(__file__)

def _log(name):
    with open(os.path.join(HERE, "seen.jsonl"), "a") as log:
        log.write(json.dumps({"step": name, "pid": os.getpid(),
                              "leak": os.environ.get("BRAINSMITH_TEST_LEAK")}) + "\\n")

def root(model, cfg):
    _log("root")
    return model

def raises(model, cfg):
    _log("raises")
    raise ValueError("raises was asked to fail")

class Guarded:
    # a step object holding a lock: pickle cannot send it, the fork has it
    def __init__(self):
        self.lock = threading.Lock()
        self.__name__ = "guarded"

    def __call__(self, model, cfg):
        _log("guarded")
        return model

def pytest_brainsmith_register(registry):
    registry.register_step(root, reads=())
    registry.register_step(raises, reads=())
    registry.register_step(Guarded(), name="guarded", reads=())
    for i in range(4):
        def leaf(model, cfg, i=i):  # closures made in a loop, as generated steps are
            _log(f"leaf{i}")
            os.environ["BRAINSMITH_TEST_LEAK"] = f"leaf{i}"
            return model
        registry.register_step(leaf, name=f"leaf{i}", reads=())

def pytest_brainsmith_segment_finish(segment, result):
    with open(os.path.join(HERE, "builds.jsonl"), "a") as log:
        log.write(json.dumps({"segment": result.segment, "status": result.status,
                              "kind": result.kind}) + "\\n")

def pytest_sessionfinish(session):
    import sys
    with open(os.path.join(HERE, "finn_here"), "w") as f:
        f.write(str("finn.builder.build_dataflow" in sys.modules))
"""


def seen(folder: Path) -> dict[str, dict[str, Any]]:
    log = folder / "seen.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    log.unlink()
    return {row["step"]: row for row in rows}


def processes(out: str) -> int:
    found = re.search(r"(\d+) worker process\(es\) started", out)
    assert found, out
    return int(found[1])


def test_a_run_builds_each_segment_in_a_process_forked_from_the_zygote(tmp_path: Path):
    folder = step_project(
        tmp_path / "p", STEPS, "    - root\n    - [leaf0, leaf1, leaf2, leaf3, guarded, raises]\n"
    )
    done = run_in(folder, "--brainsmith-workers", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "5 passed, 1 failed" in done.stdout, done.stdout
    assert "raises was asked to fail" in done.stdout
    steps = seen(folder)
    assert len(take_builds(folder)) == 7
    # a process per segment (the step object holding a lock too: it is sent by
    # identity), none of them pytest; none saw what another left behind
    pids = {row["pid"] for row in steps.values()}
    assert len(pids) == 7 and processes(done.stdout) == 7, steps
    assert all(row["leak"] is None for row in steps.values()), steps
    # FINN was imported by the fork server the processes came from, not by pytest
    assert "FINN imported by 1 process(es)" in done.stdout
    assert (folder / "finn_here").read_text() == "False"
    # every entry says how it was built
    manifests = (folder / "build" / "brainsmith" / "cache" / "v1" / "entries").glob(
        "*/*/manifest.json"
    )
    assert {json.loads(m.read_text())["isolation"] for m in manifests} == {"process"}


def test_fresh_workers_is_obsolete_and_says_so(tmp_path: Path):
    folder = step_project(tmp_path / "p", STEPS, "    - root\n    - [leaf0, leaf1]\n")
    done = run_in(folder, "--brainsmith-workers", "1", "--brainsmith-fresh-workers")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--brainsmith-fresh-workers" in done.stdout and "changes nothing" in done.stdout
    assert processes(done.stdout) == 3


def test_inline_builds_say_so_in_their_entries(tmp_path: Path):
    folder = step_project(tmp_path / "p", STEPS, "    - root\n    - [leaf0, leaf1]\n")
    done = run_in(folder, "--brainsmith-workers", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    manifests = (folder / "build" / "brainsmith" / "cache" / "v1" / "entries").glob(
        "*/*/manifest.json"
    )
    assert {json.loads(m.read_text())["isolation"] for m in manifests} == {"inline"}


SWEEP = """
model: tfc.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10.0
output: estimates
design_space:
  kernels:
    - MVAU: [hls, rtl]
    - Thresholding
  finn_config:
    target_fps: [50000, 400000]
  steps:
    - qonnx_to_finn
    - tidy_up
    - streamline
    - convert_to_hw
    - create_dataflow_partition
    - specialize_layers
    - target_fps_parallelization
    - apply_folding_config
    - generate_estimate_reports
"""


def digest(path: Path) -> str:
    """A file's digest; for a model, with the build's staging folder (a path FINN writes
    into the dataflow partition's node, different for every build) taken out."""
    import hashlib

    if path.suffix != ".onnx":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.STRING:
                text = re.sub(r"\S*/v1/tmp/[0-9a-f]+\.[^/]+/", "STAGED/", attribute.s.decode())
                attribute.s = text.encode()
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def entries(cache: Path) -> dict[str, dict[str, str]]:
    """Every cache entry's models and estimate reports by their digest (not its logs nor
    its manifest: they say when and by whom)."""
    found = {}
    for entry in (cache / "v1" / "entries").glob("*/*"):
        found[entry.name] = {
            str(path.relative_to(entry)): digest(path)
            for path in sorted(entry.rglob("*"))
            if path.suffix == ".onnx" or path.name.startswith("estimate_")
        }
    return found


def test_one_worker_and_two_build_on_finn_exactly_the_same_files(tmp_path: Path):
    """A segment's files do not depend on which worker built it, nor on what that worker's
    process built before: with one worker every segment follows another, with two they
    are spread over both."""
    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copyfile(MODEL, folder / "tfc.onnx")
    (folder / "sweep.blueprint.yaml").write_text(SWEEP)
    runs = {}
    for workers in ("1", "2"):
        cache = tmp_path / f"cache-{workers}"
        done = run_in(
            folder, "--brainsmith-cache", str(cache), "--brainsmith-workers", workers, timeout=600
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "4 passed" in done.stdout, done.stdout
        runs[workers] = (entries(cache), processes(done.stdout))
    (one, one_processes), (two, two_processes) = runs["1"], runs["2"]
    assert len(one) == one_processes == two_processes >= 5  # a front end and its branches
    assert one.keys() == two.keys()
    for key, files in one.items():
        assert files, key
        assert two[key] == files, key
