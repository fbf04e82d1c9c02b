"""Segments as real Slurm jobs: a one-node Slurm on loopback (``scripts/start-slurm``:
munge, slurmctld, slurmd), ``--brainsmith-scheduler slurm`` configured only through a
``jobqueue.yaml`` (dask-jobqueue's own configuration) that ``DASK_CONFIG`` points at.
Each job runs one Dask worker (FINN preloaded) that joins the session's scheduler; the
session adapts the job count to the runnable segments. Skipped where Slurm cannot start
(not root, slurm-wlm or munge not installed)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MODEL, TFC_BLUEPRINT, need, need_module, run_in, step_project, take_builds

need_module("dask_jobqueue")

ROOT = Path(__file__).resolve().parent.parent
SLURM_DIR = Path("/tmp/brainsmith-slurm")  # scripts/start-slurm's default

#: Steps that log each call with the Slurm job that ran it.
STEPS = """
import json, os, time

HERE = os.path.dirname(__file__)

def _log(name):
    with open(os.path.join(HERE, "calls.jsonl"), "a") as f:
        f.write(json.dumps({"step": name, "job": os.environ.get("SLURM_JOB_ID"),
                            "job_name": os.environ.get("SLURM_JOB_NAME")}) + "\\n")

def pass_through(model, cfg):
    _log("pass_through")
    return model

def fine(model, cfg):
    _log("fine")
    return model

def slow(model, cfg):
    _log("slow")
    first = not os.path.exists(os.path.join(HERE, "slow.started"))
    with open(os.path.join(HERE, "slow.started"), "a") as f:
        f.write(os.environ.get("SLURM_JOB_ID", "?") + "\\n")
    time.sleep(60 if first else 2)  # the first attempt waits to be cancelled
    return model

def pytest_brainsmith_register(registry):
    for step in (pass_through, fine, slow):
        registry.register_step(step, reads=())
"""

#: Logs every segment the session saw end (in the pytest process).
RECORDING = """
import json, os

def pytest_brainsmith_segment_finish(segment, result):
    with open(os.path.join(os.path.dirname(__file__), "builds.jsonl"), "a") as log:
        log.write(json.dumps({"segment": result.segment, "status": result.status}) + "\\n")
"""


def jobqueue_yaml(folder: Path, extra: str = "") -> str:
    """dask-jobqueue's configuration of the test jobs: one core, one worker, on loopback."""
    return f"""jobqueue:
  slurm:
    name: bs-test
    cores: 1
    processes: 1
    memory: 3GB
    walltime: "00:10:00"
    interface: lo
    death-timeout: 90  # FINN is imported before the worker connects: slow on a busy machine
    log-directory: {folder}/jobs
    job-script-prologue:
      - export PYTHONPATH={ROOT}
    scheduler-options: {{host: 127.0.0.1}}
{extra}"""


@pytest.fixture(scope="module")
def slurm() -> Iterator[dict[str, str]]:
    """A running one-node Slurm (started here unless it already runs); the environment
    its commands need."""
    script = ROOT / "scripts" / "start-slurm"
    env = {"SLURM_CONF": str(SLURM_DIR / "slurm.conf")}
    already = (
        subprocess.run(
            ["sinfo", "-h"], env={**os.environ, **env}, capture_output=True, timeout=10
        ).returncode
        == 0
        if (SLURM_DIR / "slurm.conf").exists()
        else False
    )
    started = subprocess.run(
        [str(script), str(SLURM_DIR)], capture_output=True, text=True, timeout=120
    )
    need(started.returncode == 0, f"Slurm cannot start here: {started.stderr.strip()}")
    try:
        yield env
    finally:
        if not already:
            subprocess.run([str(script), "--stop", str(SLURM_DIR)], timeout=60)


def squeue(env: dict[str, str], states: str = "all") -> list[str]:
    """Job ids the queue holds (``states`` as squeue's -t)."""
    done = subprocess.run(
        ["squeue", "-h", "-o", "%i %j %T", "-t", states],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if "bs-" in line]


def wait_empty(env: dict[str, str], timeout: float = 30.0) -> list[str]:
    """The queue's test jobs once none is left (or what is left after ``timeout``)."""
    deadline = time.monotonic() + timeout
    left = squeue(env)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = squeue(env)
    return left


def project_env(folder: Path, slurm: dict[str, str], extra: str = "") -> dict[str, str]:
    (folder / "jobqueue.yaml").write_text(jobqueue_yaml(folder, extra))
    return {**slurm, "DASK_CONFIG": str(folder), "PYTHONPATH": str(ROOT)}


def calls(folder: Path) -> list[dict]:
    log = folder / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def outcomes(folder: Path) -> dict[str, str]:
    with sqlite3.connect(folder / "build" / "brainsmith" / "results.sqlite") as db:
        return dict(db.execute("SELECT design, outcome FROM designs").fetchall())


def session(folder: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfs"]
        + ["--brainsmith-scheduler", "slurm", *args],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CI": "1", **env},
    )


def wait_for(path: Path, timeout: float = 90.0) -> None:
    """Until ``path`` has a whole line (the step creates it, then writes)."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().endswith("\n")):
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.2)


def test_the_tfc_sweep_on_slurm_jobs_equals_a_local_run_each_segment_built_once(
    slurm: dict[str, str], tmp_path: Path
):
    folders = {}
    for name in ("slurm", "local"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "tfc.onnx").write_bytes(MODEL.read_bytes())
        (folder / "tfc.blueprint.yaml").write_text(TFC_BLUEPRINT)
        (folder / "conftest.py").write_text(RECORDING)
        folders[name] = folder
    env = project_env(folders["slurm"], slurm)
    done = run_in(folders["slurm"], "--brainsmith-scheduler", "slurm", env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    # the session started with no job: adapt submitted them
    assert "Dask scheduler tcp://127.0.0.1:" in done.stdout and ": 0 workers" in done.stdout
    built = take_builds(folders["slurm"])
    assert len(built) == 7 and {b["status"] for b in built} == {"built"}
    assert len({b["segment"] for b in built}) == 7  # each segment once
    # the builds ran in Slurm jobs: their workers' logs are in the jobs folder
    assert list((folders["slurm"] / "jobs").glob("bs-test-*.err"))
    reference = run_in(folders["local"], env={"PYTHONPATH": str(ROOT)})
    assert reference.returncode == 0, reference.stdout
    assert outcomes(folders["slurm"]) == outcomes(folders["local"])
    assert len(take_builds(folders["local"])) == 7
    assert wait_empty(slurm) == []  # every job given back


def test_adapt_scales_up_from_no_job_and_back_to_none_while_the_session_runs(
    slurm: dict[str, str], tmp_path: Path
):
    folder = step_project(tmp_path / "p", STEPS, "    - pass_through\n    - [slow, fine]\n")
    (folder / "slow.started").write_text("not first\n")  # slow sleeps 2 s, once
    # a test after the designs: it watches the jobs go while the session still runs
    (folder / "test_zz_after.py").write_text(
        "import os, subprocess, time\n"
        "def test_jobs_given_back():\n"
        "    deadline = time.monotonic() + 40\n"
        "    while time.monotonic() < deadline:\n"
        "        out = subprocess.run(['squeue', '-h', '-o', '%j'], capture_output=True,"
        " text=True).stdout\n"
        "        if 'bs-' not in out:\n"
        "            return\n"
        "        time.sleep(0.5)\n"
        "    raise AssertionError(out)\n"
    )
    env = project_env(folder, slurm)
    assert wait_empty(slurm) == []
    proc = session(folder, env)
    seen = 0
    while proc.poll() is None:
        seen = max(seen, len(squeue(slurm)))
        time.sleep(0.3)
    out = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, out
    assert "3 passed" in out, out
    assert seen >= 1  # jobs were submitted (the session started with none)
    assert len({c["job"] for c in calls(folder)} - {None}) >= 1


def test_a_job_cancelled_mid_build_has_its_segment_rebuilt_on_another_job(
    slurm: dict[str, str], tmp_path: Path
):
    folder = step_project(tmp_path / "p", STEPS, "    - pass_through\n    - [slow, fine]\n")
    env = project_env(folder, slurm)
    proc = session(folder, env)
    try:
        wait_for(folder / "slow.started")
        (job,) = (folder / "slow.started").read_text().split()
        subprocess.run(["scancel", job], env={**os.environ, **slurm}, check=True, timeout=30)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 0, out
    assert "2 passed" in out, out
    attempts = (folder / "slow.started").read_text().split()
    assert len(attempts) == 2 and attempts[1] != job, attempts
    # the summary names the lost job; nothing recorded as a failure
    (lost,) = [line for line in out.splitlines() if "lost mid-segment" in line]
    assert (
        f"Slurm job {job})" in lost and "building e.blueprint.yaml::pass_through::slow" in lost
    ), lost
    base = folder / "build" / "brainsmith" / "cache" / "v1"
    assert list((base / "failures").glob("*")) == []
    assert wait_empty(slurm) == []


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ending_the_session_cancels_every_job_it_submitted(
    slurm: dict[str, str], tmp_path: Path, stop: signal.Signals
):
    folder = step_project(tmp_path / "p", STEPS, "    - pass_through\n    - [slow, fine]\n")
    env = project_env(folder, slurm, "    minimum-jobs: 2\n")  # one more job, idle
    proc = session(folder, env)
    try:
        wait_for(folder / "slow.started")
        assert squeue(slurm)
        proc.send_signal(stop)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    # nothing pending or running once pytest returned; gone from the queue soon after
    assert squeue(slurm, "PENDING,RUNNING,SUSPENDED") == [], out
    assert wait_empty(slurm, timeout=20) == []


def test_a_step_asking_for_vivado_runs_on_the_job_class_that_declares_it(
    slurm: dict[str, str], tmp_path: Path
):
    folder = step_project(tmp_path / "p", STEPS, "    - pass_through\n    - [fine, ~]\n")
    with open(folder / "e.blueprint.yaml", "a") as blueprint:
        blueprint.write("step_resources:\n  fine: {vivado: 1}\n")
    (folder / "pytest.ini").write_text("[pytest]\nbrainsmith_jobqueue = slurm slurm-vivado\n")
    vivado = jobqueue_yaml(folder).split("  slurm:\n", 1)[1].replace("bs-test", "bs-vivado")
    env = project_env(
        folder,
        slurm,
        "  slurm-vivado:\n" + vivado + '    worker-extra-args: ["--resources", "vivado=1"]\n',
    )
    done = run_in(folder, "--brainsmith-scheduler", "slurm", env=env, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    ran = {c["step"]: c["job_name"] for c in calls(folder)}
    assert ran == {"pass_through": "bs-test", "fine": "bs-vivado"}
    assert wait_empty(slurm) == []


def test_a_job_that_cannot_see_the_cache_names_itself_and_the_path(
    slurm: dict[str, str], tmp_path: Path
):
    folder = step_project(tmp_path / "p", STEPS, "    - pass_through\n")
    hide = f'unshare -rm sh -c \'mount -t tmpfs none "{folder}" && exec "$0" "$@"\''
    need(
        subprocess.run(["sh", "-c", f"{hide} true"], capture_output=True).returncode == 0,
        "needs unshare -rm (a mount namespace) to hide the cache from a job",
    )
    # the jobs' workers run in a mount namespace where the project (and its cache) is empty
    env = project_env(folder, slurm, f"    python: {hide} {sys.executable}\n")
    done = run_in(folder, "--brainsmith-scheduler", "slurm", env=env, timeout=240)
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("FAILED ")]
    cache = folder / "build" / "brainsmith" / "cache"
    assert "Slurm job " in line and f"cannot see the cache directory: {cache}" in line, line
    assert calls(folder) == []
    base = cache / "v1"
    assert list((base / "failures").glob("*")) == []  # the machine's fault: not recorded
    assert wait_empty(slurm) == []


def test_without_dask_jobqueue_the_error_names_the_package(monkeypatch: pytest.MonkeyPatch):
    from pytest_brainsmith.core.launchers import ClusterError
    from pytest_brainsmith.core.launchers.jobqueue_cluster import require_jobqueue

    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with pytest.raises(ClusterError, match=r"pytest-brainsmith\[slurm\].*dask-jobqueue"):
        require_jobqueue()


def test_a_worker_command_line_declares_its_resources():
    from pytest_brainsmith.core.launchers.jobqueue_cluster import parse_resources

    assert parse_resources(["--resources", "vivado=1,memory=32e9", "--nthreads", "2"]) == {
        "vivado": 1.0,
        "memory": 32e9,
    }
    assert parse_resources(["--resources=vivado=2 licence=1"]) == {"vivado": 2.0, "licence": 1.0}
    assert parse_resources(["--preload", "x"]) == {}
