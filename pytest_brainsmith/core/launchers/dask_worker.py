"""A segment's Dask task, on the worker: fork the build, watch it, answer in a small dict.

This is the code a Dask worker runs (``run_on_worker``) and the checks it answers
(``probe_cache``); the session's side is ``dask_build`` (one task's handle) and
``dask_cluster`` (the launcher). The build is unpickled only in its own fork, so the
worker process never runs a build's code: every build starts from the state the worker
had when it imported the compiler (``preload``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import socket
import time
from collections.abc import Iterator
from functools import partial
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from .. import toolchain
from .workers import Worker


def preload() -> str:
    """The ``--preload`` module of a worker: the compiler imported, ready to build."""
    return toolchain.current().preload_module


#: How often a task on a worker looks at its build (cancelled? past its deadline?).
WATCH_SECONDS = 0.2
STARTED, CANCEL = "started", "cancel"


def run_on_worker(
    payload: bytes,
    output: str,
    max_memory: int | None,
    timeout: float | None,
    control: str,
) -> dict[str, Any]:
    """The Dask task of one segment: fork its build, watch it, answer in a small dict."""
    host = f"{socket.gethostname()} (pid {os.getpid()}{batch_job()})"
    marks = Path(control)
    if (marks / CANCEL).exists():
        return {"cancelled": True}
    staged = Path(output).parent
    if not staged.is_dir():
        return environment_error(f"Dask worker {host} cannot see the cache directory: {staged}")
    marks.mkdir(parents=True, exist_ok=True)
    with open(marks / STARTED, "a") as started:  # one line per attempt
        started.write(f"{host}\n")
    try:
        toolchain.current().prepare()  # once per worker (or by --preload): each fork has it
    except toolchain.ToolchainUnavailable as exc:
        return environment_error(f"on Dask worker {host}: {exc}")
    # unpickled in the build's own process: the modules it imports (and whatever they do
    # to FINN when imported) stay there, never in the worker the next build is forked from
    with _may_fork():
        worker = Worker(
            partial(_load_and_build, payload, host), output=Path(output), max_memory=max_memory
        )
    deadline = time.monotonic() + timeout if timeout else None
    while not worker.poll():
        now = time.monotonic()
        if (marks / CANCEL).exists():
            worker.kill("cancel")
            break
        if deadline is not None and now > deadline:
            worker.kill("timeout")
            break
        left = WATCH_SECONDS if deadline is None else max(0.0, min(WATCH_SECONDS, deadline - now))
        wait(worker.waitables(), timeout=left)
    if worker.result is not None:
        worker.reap(timeout=5.0)
        return {"result": worker.result}
    kind, message = worker.exit_cause()
    return {
        "dead": [kind, f"{message} (on Dask worker {host})"],
        "killed_by_us": worker.killed_by_us,
    }


def _load_and_build(payload: bytes, host: str) -> dict[str, Any]:
    """In the build's process: the segment's build, unpickled, run."""
    try:
        job = pickle.loads(payload)
    except Exception as exc:
        return environment_error(
            f"Dask worker {host} cannot load the segment's build ({type(exc).__name__}: {exc}); "
            "a worker needs pytest-brainsmith, FINN and the installed modules your steps "
            "import (steps from conftest.py files and the project's folder travel by value)"
        )["result"]
    result: dict[str, Any] = job()
    return result


#: Where batch systems tell a job its id: the system's name for messages, the variable.
BATCH_JOB_IDS = (
    ("Slurm", "SLURM_JOB_ID"),
    ("PBS", "PBS_JOBID"),
    ("LSF", "LSB_JOBID"),
    ("SGE", "JOB_ID"),
)


def batch_job() -> str:
    """``", Slurm job 123"`` on a worker that a batch job runs, else ``""``."""
    for system, variable in BATCH_JOB_IDS:
        if os.environ.get(variable):
            return f", {system} job {os.environ[variable]}"
    return ""


@contextlib.contextmanager
def _may_fork() -> Iterator[None]:
    """A nanny's worker is a daemonic process, which multiprocessing forbids children
    (they would outlive it): ours die with it (``PR_SET_PDEATHSIG``), so let it fork."""
    config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    daemon = config.pop("daemon", None)
    try:
        yield
    finally:
        if daemon is not None:
            config["daemon"] = daemon


def environment_error(error: str) -> dict[str, Any]:
    return {"result": {"status": "error", "kind": "environment", "error": error}}


def probe_cache(probe: str, token: str) -> str | None:
    """On a worker: None if it reads the session's probe file and can write next to
    it, else why not (``client.run`` calls it on every worker)."""
    path = Path(probe)
    try:
        if path.read_text() != token:
            return f"{path} holds another session's probe (a different filesystem?){batch_job()}"
        mine = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}")
        mine.write_text(token)
        mine.unlink()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}{batch_job()}"
    return None
