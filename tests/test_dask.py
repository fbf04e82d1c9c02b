"""The engine on a real Dask cluster, on loopback: a ``dask scheduler`` and two ``dask
worker`` processes (with nannies, FINN preloaded), each in a folder of its own, sharing
nothing with the session but the cache directory. User steps come from the project's
``conftest.py``, which the workers cannot import: they travel by value. Real FINN
builder, pure-Python steps on the bundled model."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MODEL, STEPS_HEAD, need, need_module, run_in, step_project

distributed = need_module("distributed")

ROOT = Path(__file__).resolve().parent.parent
DASK = [sys.executable, "-m", "dask"]

#: Steps that log each call (pid and parent pid: a Dask worker's build is its child).
STEPS = """
import json, os, signal, time

HERE = os.path.dirname(__file__)

def _log(name):
    with open(os.path.join(HERE, "calls.jsonl"), "a") as f:
        f.write(json.dumps({"step": name, "pid": os.getpid(), "ppid": os.getppid()}) + "\\n")

def pass_through(model, cfg):
    _log("pass_through")
    return model

def fine(model, cfg):
    _log("fine")
    return model

def raises(model, cfg):
    _log("raises")
    raise ValueError("raises was asked to fail")

def hangs(model, cfg):
    _log("hangs")
    time.sleep(600)

def tail_a(model, cfg):
    _log("tail_a")
    return model

def tail_b(model, cfg):
    _log("tail_b")
    return model

def slow(model, cfg):
    _log("slow")
    first = not os.path.exists(os.path.join(HERE, "slow.started"))
    with open(os.path.join(HERE, "slow.started"), "a") as f:
        f.write(f"{os.getpid()} {os.getppid()}\\n")
    if first:  # the first attempt waits to be killed with its worker
        time.sleep(60)
    return model

def kills_its_worker(model, cfg):
    _log("kills_its_worker")
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(60)

def pytest_brainsmith_register(registry):
    for step in (pass_through, fine, raises, hangs, tail_a, tail_b, slow, kills_its_worker):
        registry.register_step(step, reads=())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A scheduler and its workers as subprocesses; every one is stopped at the end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            # a segment that kills its worker twice ends as KilledWorker (default 3)
            "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1",
        }

    def start(self, *args: str, name: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
        folder = self.base / name
        folder.mkdir(parents=True, exist_ok=True)
        log = open(folder / "log", "w")  # noqa: SIM115 -- closed with the process
        proc = subprocess.Popen(
            [*prefix, *DASK, *args],
            cwd=folder,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def scheduler(self) -> None:
        self.start(
            "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard",
            name="scheduler",
        )  # fmt: skip

    def worker(self, name: str, *extra: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
        return self.start(
            "worker", self.address, "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard",
            "--preload", "pytest_brainsmith.finn.dask_preload", "--name", name, *extra,
            name=name, prefix=prefix,
        )  # fmt: skip

    def worker_pids(self) -> set[int]:
        with distributed.Client(self.address, timeout="20s") as client:
            return set(client.run(os.getpid).values())

    def wait_for(self, count: int, timeout: float = 90.0) -> dict[str, dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with distributed.Client(self.address, timeout="20s") as client:
                found = client.scheduler_info(n_workers=-1)["workers"]
            if len(found) == count:
                return found
            time.sleep(0.5)
        raise AssertionError(f"{count} workers did not join within {timeout} s: {found}")

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            with _suppress():
                os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    found = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        found.scheduler()
        found.worker("w1")
        found.worker("w2")
        found.wait_for(2)
        yield found
    finally:
        found.close()


def gone(pid: int, timeout: float = 10.0) -> bool:
    """The process ended (a zombie has ended) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split()[2] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def make_project(folder: Path, steps: str) -> Path:
    return step_project(folder, STEPS, steps)


def run(folder: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return run_in(folder, *args, env={"PYTHONPATH": str(ROOT)}, timeout=timeout)


@contextlib.contextmanager
def session_once_slow_started(folder: Path, address: str) -> Iterator[subprocess.Popen[str]]:
    """A pytest session on the cluster, handed over once the ``slow`` step has started
    (its ``slow.started`` file exists); killed at the end if it is still running."""
    session = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfs"]
        + ["--brainsmith-scheduler", address],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CI": "1", "PYTHONPATH": str(ROOT)},
    )
    try:
        started = folder / "slow.started"
        deadline = time.monotonic() + 60
        # a whole line: the step creates the file, then writes it
        while not (started.exists() and started.read_text().endswith("\n")):
            assert time.monotonic() < deadline, "the slow segment never started"
            time.sleep(0.1)
        yield session
    finally:
        if session.poll() is None:
            session.kill()
            session.wait(timeout=10)


def calls(folder: Path) -> list[dict]:
    log = folder / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def outcomes(folder: Path) -> dict[str, str]:
    with sqlite3.connect(folder / "build" / "brainsmith" / "results.sqlite") as db:
        return dict(db.execute("SELECT design, outcome FROM designs").fetchall())


def failed_lines(out: str) -> dict[str, str]:
    """FAILED lines by design, without where it ran (a Dask worker names itself)."""
    found = {}
    for line in out.splitlines():
        if line.startswith("FAILED "):
            design, _, cause = line[len("FAILED ") :].partition(" - ")
            found[design] = cause.split(" (on Dask worker")[0]
    return found


SIBLINGS = """    - pass_through
    - [fine, raises, hangs]
    - [tail_a, tail_b]
"""


def test_a_run_on_dask_equals_a_local_run_each_segment_built_once(cluster: Cluster, tmp_path: Path):
    on_dask = make_project(tmp_path / "dask", SIBLINGS)
    local = make_project(tmp_path / "local", SIBLINGS)
    limit = ("--brainsmith-timeout", "3")
    done = run(on_dask, "--brainsmith-scheduler", cluster.address, *limit)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 passed, 4 failed" in done.stdout, done.stdout
    assert f"brainsmith: Dask scheduler {cluster.address}: 2 workers" in done.stdout
    reference = run(local, *limit)
    assert outcomes(on_dask) == outcomes(local)
    assert failed_lines(done.stdout) == failed_lines(reference.stdout)
    assert "raises was asked to fail" in done.stdout
    # the timeout is enforced on the worker: the hung build was killed there
    assert "timed out after 3 s (its timeout)" in done.stdout
    assert all(gone(c["pid"]) for c in calls(on_dask) if c["step"] == "hangs")

    # every step ran once, in a build process forked by a Dask worker, never here
    ran = calls(on_dask)
    steps = ["fine", "hangs", "pass_through", "raises", "tail_a", "tail_b"]
    assert sorted(c["step"] for c in ran) == steps
    worker_pids = cluster.worker_pids()
    assert {c["ppid"] for c in ran} <= worker_pids, (ran, worker_pids)
    # the failure is recorded once, with its cause; nothing left behind
    base = on_dask / "build" / "brainsmith" / "cache" / "v1"
    recorded = [json.loads((f / "failure.json").read_text()) for f in (base / "failures").glob("*")]
    assert sorted(r["kind"] for r in recorded) == ["exception", "timeout"]
    (raised,) = [r for r in recorded if r["kind"] == "exception"]
    assert raised["step"] == "user_raises" and "raises was asked to fail" in raised["error"]
    assert list((base / "tmp").glob("*")) == [] and list((base / "running").glob("*")) == []

    # again: everything from the cache, the failure reported without building
    again = run(on_dask, "--brainsmith-scheduler", cluster.address, *limit)
    assert "2 passed, 4 failed" in again.stdout and "failed in an earlier run" in again.stdout
    assert len(calls(on_dask)) == len(ran)


def test_a_worker_lost_mid_segment_is_rebuilt_on_another_and_the_session_passes(
    cluster: Cluster, tmp_path: Path
):
    folder = make_project(tmp_path / "p", "    - pass_through\n    - [slow, fine]\n")
    started = folder / "slow.started"
    with session_once_slow_started(folder, cluster.address) as session:
        build_pid, worker_pid = map(int, started.read_text().split()[:2])
        os.kill(worker_pid, 9)  # the Dask worker itself; its nanny starts a new one
        out, _ = session.communicate(timeout=120)
    assert session.returncode == 0, out
    assert "2 passed" in out
    attempts = started.read_text().splitlines()
    assert len(attempts) == 2 and attempts[1].split()[1] != str(worker_pid)
    assert gone(build_pid)  # the lost build went with its worker
    base = folder / "build" / "brainsmith" / "cache" / "v1"
    assert list((base / "tmp").glob("*")) == [] and list((base / "failures").glob("*")) == []
    cluster.wait_for(2)  # the nanny's new worker joined: the next test has two again


def test_a_segment_that_kills_every_worker_fails_its_design_not_the_session(
    cluster: Cluster, tmp_path: Path
):
    folder = make_project(tmp_path / "p", "    - pass_through\n    - [kills_its_worker, fine]\n")
    done = run(folder, "--brainsmith-scheduler", cluster.address, timeout=150)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 passed, 1 failed" in done.stdout
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("FAILED ")]
    assert "kills_its_worker" in line and "KilledWorker" in line, line
    assert [c["step"] for c in calls(folder)].count("kills_its_worker") == 2  # allowed failures 1
    # not recorded (a preempted node looks the same): the next run builds it again
    base = folder / "build" / "brainsmith" / "cache" / "v1"
    assert list((base / "failures").glob("*")) == []
    cluster.wait_for(2)


def test_a_worker_that_cannot_see_the_cache_is_a_usage_error(cluster: Cluster, tmp_path: Path):
    folder = make_project(tmp_path / "p", "    - pass_through\n")
    unshare = shutil.which("unshare")
    hide = ("unshare", "-rm", "sh", "-c", f'mount -t tmpfs none "{folder}" && exec "$0" "$@"')
    need(
        unshare is not None
        and subprocess.run([*hide, "true"], capture_output=True).returncode == 0,
        "needs unshare -rm (a mount namespace) to hide the cache from a worker",
    )
    blind = cluster.worker("blind", prefix=hide)
    try:
        cluster.wait_for(3)
        done = run(folder, "--brainsmith-scheduler", cluster.address)
    finally:
        cluster.stop(blind)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    cache = folder / "build" / "brainsmith" / "cache"
    assert "Dask worker tcp://127.0.0.1:" in done.stderr
    assert f"cannot see the cache directory {cache}" in done.stderr, done.stderr
    assert done.stderr.count("cannot see") == 1  # only the blind worker
    assert calls(folder) == []
    cluster.wait_for(2)


def test_without_distributed_the_error_names_the_package(monkeypatch: pytest.MonkeyPatch):
    from pytest_brainsmith.core.launchers import ClusterError, require_distributed

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ClusterError, match=r"pytest-brainsmith\[cluster\]"):
        require_distributed()


def test_sigterm_stops_the_builds_on_the_workers_and_records_nothing(
    cluster: Cluster, tmp_path: Path
):
    folder = make_project(tmp_path / "p", "    - pass_through\n    - [slow, fine]\n")
    started = folder / "slow.started"
    with session_once_slow_started(folder, cluster.address) as session:
        build_pid = int(started.read_text().split()[0])
        session.send_signal(15)
        out, _ = session.communicate(timeout=60)
    assert session.returncode == pytest.ExitCode.INTERRUPTED, out
    assert gone(build_pid)  # killed on its worker, not left to sleep out its minute
    base = folder / "build" / "brainsmith" / "cache" / "v1"
    assert list((base / "tmp").glob("*")) == [] and list((base / "failures").glob("*")) == []
    marks = list((base / "dask").rglob("*")) if (base / "dask").exists() else []
    assert all(m.is_dir() or m.name == "cancel" for m in marks), marks  # only never-started
    assert len(started.read_text().splitlines()) == 1  # never started again


def test_step_resources_from_the_ini_hold_the_most_any_step_asks(tmp_path: Path):
    from types import SimpleNamespace

    from pytest_brainsmith.core.cache import SegmentCache
    from pytest_brainsmith.core.composition import SettingError, parse_resources
    from pytest_brainsmith.core.engine import Engine
    from pytest_brainsmith.core.registry import Step

    ini = ["synth: vivado=2, MEMORY=32e9", "step_ipgen: vitis_hls=1, memory=2G", "tidy: memory=0"]
    assert parse_resources(ini) == {
        "synth": {"vivado": 2.0, "MEMORY": 32e9},  # any name but memory: a plain number
        "ipgen": {"vitis_hls": 1.0, "memory": float(2 << 30)},  # by short name; a size
        "tidy": {"memory": 0.0},
    }
    engine = Engine(SegmentCache(tmp_path), step_resources=parse_resources(ini))
    steps = [
        Step("ipgen", "user", needs=frozenset({"vivado", "vitis_hls"})),
        Step("synth", "user", needs=frozenset({"vivado"})),
        Step("tidy", "user"),
    ]
    segment = SimpleNamespace(steps=steps, tree=SimpleNamespace(space=None))
    assert engine.limits.segment_resources(segment) == {
        "vivado": 2.0,
        "vitis_hls": 1.0,
        "MEMORY": 32e9,
        "memory": float(2 << 30),
    }
    for bad in ("synth vivado=1", "synth: vivado=-1", "synth: vivado=nan", "synth: memory=lots"):
        ini[:] = [bad]
        with pytest.raises(SettingError, match="STEP: NAME=AMOUNT"):
            parse_resources(ini)


def test_a_blueprints_step_resources_reach_the_dask_task(cluster: Cluster, tmp_path: Path):
    folder = make_project(tmp_path / "p", "    - pass_through\n    - [fine, tail_a]\n")
    with open(folder / "e.blueprint.yaml", "a") as blueprint:
        blueprint.write("step_resources:\n  fine: {memory: 1G}\n  tail_a: {licences: 1}\n")
    big = cluster.worker("big", "--resources", "memory=2e9")
    try:
        workers = cluster.wait_for(3)
        (address,) = [a for a, info in workers.items() if info.get("name") == "big"]
        with distributed.Client(cluster.address, timeout="20s") as client:
            big_pid = client.run(os.getpid, workers=[address])[address]
        done = run(folder, "--brainsmith-scheduler", cluster.address)
    finally:
        cluster.stop(big)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 passed, 1 failed" in done.stdout, done.stdout
    # fine asks for 1G of memory: only the worker that declares 2e9 bytes runs it
    ran = {c["step"]: c for c in calls(folder)}
    assert ran["fine"]["ppid"] == big_pid
    # nobody declares licences: tail_a fails at once, naming it, instead of waiting forever
    assert "tail_a" not in ran
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("FAILED ")]
    assert "tail_a" in line and "declares the resources licences=1" in line, line
    cluster.wait_for(2)


def _tagged(model, cfg):  # a user step outside any installed package: sent by value
    model.set_metadata_prop("brainsmith_test", "on-dask")
    return model


def test_explore_on_a_local_cluster_with_a_user_step(tmp_path: Path):
    from pytest_brainsmith import explore

    shutil.copyfile(MODEL, tmp_path / "tfc.onnx")
    blueprint = tmp_path / "e.blueprint.yaml"
    blueprint.write_text(STEPS_HEAD + "    - _tagged\n    - [tidy_up, ~]\n")
    result = explore(
        blueprint,
        cache=tmp_path / "cache",
        scheduler="local",
        register=lambda registry: registry.register_step(_tagged, reads=()),
    )
    assert [d.status for d in result.designs] == ["passed", "passed"], [
        d.reason for d in result.designs
    ]
    assert result.stats["segments_built"] == 2
    from qonnx.core.modelwrapper import ModelWrapper

    first = result.designs[0].segments[0]
    assert ModelWrapper(first.output_model).get_metadata_prop("brainsmith_test") == "on-dask"


def test_the_status_line_shows_the_cluster():
    from pytest_brainsmith.views.status import describe

    pool = {
        "done": 3,
        "running": ["a", "b", "c"],
        "queued": 4,
        "seconds_left": 12.0,
        "cluster": "Dask tcp://127.0.0.1:8786: 2 workers, 2 building, 1 queued",
    }
    line = describe([], pool=pool)
    assert line == (
        "brainsmith: 3/10 segments done, 3 on the cluster, 4 waiting for a parent, ~12 s left"
        " | Dask tcp://127.0.0.1:8786: 2 workers, 2 building, 1 queued"
    )


def test_the_preload_gives_builds_back_what_the_nanny_limits():
    """Dask's nanny starts workers with one thread per pool and glibc trimming at 64 KiB,
    which made FINN builds forked from them 1.8x slower (CNV sweep: 29.2 s against 16.1 s
    after this); the preload undoes it for the builds."""
    code = (
        "import os, json, threadpoolctl\n"
        "from pytest_brainsmith.finn.dask_preload import release_nanny_limits\n"
        "release_nanny_limits()\n"
        "import torch\n"
        "print(json.dumps({'trim': os.environ.get('MALLOC_TRIM_THRESHOLD_'),"
        " 'omp': os.environ.get('OMP_NUM_THREADS'), 'torch': torch.get_num_threads(),"
        " 'pools': [p['num_threads'] for p in threadpoolctl.threadpool_info()]}))\n"
    )
    nanny = {"MALLOC_TRIM_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "OPENBLAS_NUM_THREADS": "1"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **nanny, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    cores = len(os.sched_getaffinity(0))
    assert found["trim"] is None
    assert found["omp"] == str(cores)
    assert found["torch"] == cores
    assert found["pools"] and all(n == cores for n in found["pools"])
