"""Segments on a Dask cluster: the engine's launcher when a run has a Dask scheduler.

Dask distributed already runs task graphs on Slurm, LSF, PBS, SGE and Kubernetes
(dask-jobqueue, dask-kubernetes), with priorities, worker resources, retries of lost
work and a dashboard; this module only hands it the engine's segments.

Each segment the engine starts is one Dask task, submitted once its parent is built
(the engine starts a segment only then), with the engine's critical-path priority and
the worker resources its steps need (``vivado: 1``). On the worker the task forks the
build as the local engine does (``workers.Worker``), and the build is unpickled only in
that fork: the worker process itself never runs (nor imports) a build's code, so every
build starts from the state the worker had when it imported FINN. The same memory limit
and crash report, and the timeout is enforced there, from when the build starts (Dask
has no per-task timeout). The answer is the small dict ``build_segment`` returns;
artifacts stay in the cache directory, which every worker must see (``check_cache``).

Faults: a worker lost mid-segment (killed, node preempted) takes its build's process
with it (``PR_SET_PDEATHSIG``) and Dask runs the task again elsewhere, where the build
starts over in its staging directory; the session keeps the key's lock throughout. A
segment that kills every worker it runs on ends, after Dask's allowed failures, as
``KilledWorker``: its designs fail with that cause, not recorded in the cache (a
preempted node looks the same).

User steps from a ``conftest.py`` travel by value (cloudpickle), since workers in other
directories cannot import the conftest module.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import socket
import sys
import sysconfig
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from multiprocessing.connection import wait
from pathlib import Path
from types import ModuleType
from typing import Any

from . import toolchain
from .workers import Worker, output_tail


def preload() -> str:
    """The ``--preload`` module of a worker: the compiler imported, ready to build."""
    return toolchain.current().preload_module


#: How often a task on a worker looks at its build (cancelled? past its deadline?).
WATCH_SECONDS = 0.2
#: How long a session waits for the first worker of a cluster that is still starting.
WORKER_WAIT_SECONDS = 60.0
#: Seconds ``kill`` waits for a started build to stop before it lets go of it.
CANCEL_WAIT_SECONDS = 10.0
STARTED, CANCEL = "started", "cancel"
#: The engine's worker count on a cluster: no limit of its own, Dask queues.
CLUSTER_SLOTS = 10_000
#: A Dask cluster object (LocalCluster, SLURMCluster, KubeCluster...): what Client takes.
ClusterLike = Any


class ClusterError(Exception):
    """The cluster cannot serve this run (a usage error, never a design's failure)."""


def require_distributed() -> ModuleType:
    """Dask distributed is optional: a clear error names what to install."""
    try:
        import distributed
    except ImportError as exc:
        raise ClusterError(
            f"running on a Dask cluster needs Dask distributed ({exc}): "
            "pip install 'pytest-brainsmith[cluster]' (or pip install distributed)"
        ) from None
    return distributed


# -- on the worker ---------------------------------------------------------------------
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
        return _environment(f"Dask worker {host} cannot see the cache directory: {staged}")
    marks.mkdir(parents=True, exist_ok=True)
    with open(marks / STARTED, "a") as started:  # one line per attempt
        started.write(f"{host}\n")
    try:
        toolchain.current().prepare()  # once per worker (or by --preload): each fork has it
    except toolchain.ToolchainUnavailable as exc:
        return _environment(f"on Dask worker {host}: {exc}")
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
        return _environment(
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


def _environment(error: str) -> dict[str, Any]:
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


# -- in the session --------------------------------------------------------------------
class DaskBuild:
    """The session's handle on one segment's Dask task, with ``Worker``'s methods."""

    def __init__(
        self,
        launcher: DaskLauncher,
        job: Callable[[], dict[str, Any]],
        *,
        output: Path,
        max_memory: int | None,
        timeout: float | None,
        priority: float,
        resources: dict[str, float],
    ) -> None:
        self.output = output
        self.control = launcher.control_dir / output.parent.name
        self.result: dict[str, Any] | None = None
        self.killed_by_us: str | None = None
        self.resources = resources
        self.launcher_lost = launcher.lost
        spec = job.args[0] if isinstance(job, partial) and job.args else None
        self.label = str(getattr(spec, "label", "") or output.parent.name)
        self._cause: tuple[str, str] | None = None
        self._read, self._write = os.pipe()
        self._done = False
        missing = launcher.unserved(resources)
        if missing:
            self.future = None
            self.result = _environment(missing)["result"]
            self._done = True
            return
        self.future = launcher.client.submit(
            run_on_worker,
            launcher.payload(job),
            str(output),
            max_memory,
            timeout,
            str(self.control),
            key=f"brainsmith-segment-{output.parent.name}",
            priority=round(priority * 1000),  # Dask runs higher numbers first
            resources=resources or None,
            pure=False,
        )
        self.future.add_done_callback(self._wake)

    def _wake(self, _future: Any) -> None:  # Dask's thread: only wake the engine up
        with contextlib.suppress(OSError):
            os.write(self._write, b"!")

    @property
    def started(self) -> bool:
        return (self.control / STARTED).exists()

    def waitables(self) -> list[Any]:
        return [] if self._done else [self._read]

    def poll(self) -> bool:
        if self._done:
            return True
        if self.future is None or not self.future.done():
            return False
        self._done = True
        self._take(self.future)
        self._note_lost()
        self._close()
        return True

    def _note_lost(self) -> None:
        """Attempts of this segment whose worker died under them (a job the batch system
        ended, a node preempted): every attempt but the one that answered."""
        try:
            attempts = (self.control / STARTED).read_text().splitlines()
        except OSError:
            return
        answered = self.result is not None or self.killed_by_us is not None
        lost = attempts[:-1] if answered else attempts
        self.launcher_lost.extend(f"{where} building {self.label}" for where in lost)

    def _take(self, future: Any) -> None:
        if future.status == "cancelled":
            self.killed_by_us = self.killed_by_us or "cancel"
            return
        if future.status == "error":
            self._cause = _task_error(future.exception())
            return
        answer = future.result()
        if "result" in answer:
            self.result = answer["result"]
        elif answer.get("cancelled"):
            self.killed_by_us = "cancel"
        else:
            kind, message = answer["dead"]
            self._cause = (kind, message)
            self.killed_by_us = answer.get("killed_by_us")

    def reap(self, timeout: float = 0.0) -> bool:
        return True  # nothing of ours to collect: the process was the worker's

    def kill(self, why: str) -> None:
        """Stop the build: its task sees the cancel mark within ``WATCH_SECONDS`` and
        kills the build's process; a task not started yet never starts it."""
        self.killed_by_us = why
        ended = True
        if not self._done and self.future is not None:
            with contextlib.suppress(OSError):
                self.control.mkdir(parents=True, exist_ok=True)
                (self.control / CANCEL).touch()
            if self.started:
                with contextlib.suppress(Exception):
                    self.future.result(timeout=CANCEL_WAIT_SECONDS)
            ended = self.future.done()
            self.future.cancel()
            self._done = True
        # a task that may still start keeps its cancel mark (``forget_stale`` removes it)
        self._close(keep_marks=not ended)

    def exit_cause(self) -> tuple[str, str]:
        return self._cause or ("environment", "the segment's Dask task ended without a result")

    def output_tail(self, lines: int = 30) -> str:
        return output_tail(self.output, lines)

    def _close(self, keep_marks: bool = False) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._read = self._write = -1
        if not keep_marks:
            _remove_tree(self.control)


def _task_error(exc: BaseException | None) -> tuple[str, str]:
    name = type(exc).__name__
    if name == "KilledWorker":
        return (
            "killed",
            f"every Dask worker that ran this segment died (KilledWorker after Dask's "
            f"allowed failures, distributed.scheduler.allowed-failures): {exc}; a worker's "
            "log says why (often its memory limit or the out-of-memory killer)",
        )
    hint = ""
    if isinstance(exc, ModuleNotFoundError | ImportError | AttributeError):
        hint = (
            "; a Dask worker needs pytest-brainsmith, FINN and the modules your steps import "
            "(steps in conftest.py files are sent by value)"
        )
    return "environment", f"the segment's Dask task failed: {name}: {exc}{hint}"


class DaskLauncher:
    """The engine's launcher on a Dask cluster (``Engine(launcher=...)``)."""

    remote = True

    def __init__(self, client: Any, control_dir: Path, *, address: str) -> None:
        self.client = client
        self.address = address
        self.control_dir = control_dir
        self.builds: list[DaskBuild] = []
        #: where each lost attempt of a segment ran (its worker died mid-build)
        self.lost: list[str] = []
        self._shipped: set[str] = set()
        self._info: tuple[float, dict[str, Any]] = (0.0, {})

    def __call__(
        self,
        job: Callable[[], dict[str, Any]],
        *,
        output: Path,
        max_memory: int | None = None,
        close_fds: tuple[int, ...] = (),
        timeout: float | None = None,
        priority: float = 0.0,
        resources: dict[str, float] | None = None,
    ) -> DaskBuild:
        build = DaskBuild(
            self,
            job,
            output=output,
            max_memory=max_memory,
            timeout=timeout,
            priority=priority,
            resources=resources or {},
        )
        self.builds = [b for b in self.builds if not b._done] + [build]
        return build

    # -- what the cluster offers ---------------------------------------------------------
    def workers(self, fresh: bool = False) -> dict[str, dict[str, Any]]:
        """The scheduler's workers (address -> info), asked at most every 2 s."""
        asked, info = self._info
        if fresh or time.monotonic() - asked > 2.0:
            info = self.client.scheduler_info(n_workers=-1).get("workers", {})
            self._info = (time.monotonic(), info)
        return info

    @property
    def slots(self) -> int:
        return sum(int(w.get("nthreads", 1)) for w in self.workers().values()) or 1

    def resources(self) -> dict[str, float]:
        """The most of each resource any one worker declares."""
        offered: dict[str, float] = {}
        for info in self.workers().values():
            for name, amount in (info.get("resources") or {}).items():
                offered[name] = max(offered.get(name, 0.0), float(amount))
        return offered

    def unserved(self, resources: dict[str, float]) -> str | None:
        """Why no worker could run a task asking for ``resources`` (Dask would keep it
        waiting for such a worker forever), or None."""
        if not resources:
            return None
        offered = self.resources()
        short = [f"{n}={a:g}" for n, a in sorted(resources.items()) if offered.get(n, 0.0) < a]
        if not short:
            return None
        return (
            f"no Dask worker of {self.address} declares the resources {', '.join(short)}; "
            f'start workers with e.g. dask worker ADDRESS --resources "{short[0]}"'
        )

    def tools(self, tools: Iterable[str]) -> dict[str, str | None]:
        """For each external tool: None if a worker declares it as a resource, else why
        a design needing it is skipped."""
        offered = self.resources()
        return {
            tool: None if offered.get(tool, 0.0) >= 1 else self.undeclared(tool) for tool in tools
        }

    def undeclared(self, tool: str) -> str:
        """Why a design needing ``tool`` is skipped: no worker declares it."""
        return (
            f"no Dask worker declares the resource {tool} (dask worker --resources "
            f'"{tool}=1" where it is installed)'
        )

    def describe(self) -> str:
        """The cluster's part of the status line."""
        builds = [b for b in self.builds if not b._done]
        building = sum(1 for b in builds if b.started)
        return (
            f"Dask {self.address}: {len(self.workers())} workers, {building} building, "
            f"{len(builds) - building} queued"
        )

    # -- serialization ---------------------------------------------------------------------
    def payload(self, job: Callable[[], dict[str, Any]]) -> bytes:
        """The job pickled here, with the modules of its user steps by value: a worker
        elsewhere cannot import a ``conftest`` module (nor anything else only the
        project's folder has). Pickled here because Dask uses cloudpickle only for
        objects it sees itself, and the scheduler then never needs the user's modules."""
        import cloudpickle

        spec = job.args[0] if isinstance(job, partial) and job.args else None
        for step in getattr(spec, "path_steps", ()):
            for module in _project_modules(step.func):
                if module.__name__ not in self._shipped:
                    cloudpickle.register_pickle_by_value(module)
                    self._shipped.add(module.__name__)
        return cloudpickle.dumps(job)

    # -- the session's checks --------------------------------------------------------------
    def check_cache(self, base: Path) -> list[str]:
        """Every worker must see the cache directory: what each one that does not says."""
        self.wait_for_workers()
        self.forget_stale()
        probe = self.control_dir / f"probe-{uuid.uuid4().hex}"
        token = uuid.uuid4().hex
        try:
            self.control_dir.mkdir(parents=True, exist_ok=True)
            probe.write_text(token)
        except OSError as exc:
            return [f"cannot write to the cache directory {base}: {exc}"]
        try:
            answers = self.client.run(probe_cache, str(probe), token, on_error="return")
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
        problems = []
        for worker, answer in sorted(answers.items()):
            if isinstance(answer, BaseException):
                problems.append(
                    f"Dask worker {worker} cannot run pytest-brainsmith "
                    f"({type(answer).__name__}: {answer}); install it where the workers run"
                )
            elif answer:
                problems.append(
                    f"Dask worker {worker} cannot see the cache directory {base}: {answer}"
                )
        return problems

    def forget_stale(self, age: float = 86400.0) -> None:
        """Cancel marks of tasks that never started, left by sessions a day ago or more."""
        with contextlib.suppress(OSError):
            for mark in self.control_dir.iterdir():
                if time.time() - mark.stat().st_mtime > age:
                    _remove_tree(mark)

    def wait_for_workers(self, timeout: float = WORKER_WAIT_SECONDS) -> None:
        if self.workers(fresh=True):
            return
        try:
            self.client.wait_for_workers(1, timeout=timeout)
        except Exception as exc:  # distributed raises its own TimeoutError
            raise ClusterError(
                f"no Dask worker joined the scheduler {self.address} within {timeout:g} s ({exc})"
            ) from None
        self.workers(fresh=True)

    def dashboard(self) -> str | None:
        """The dashboard's address, if the scheduler serves one (it needs bokeh)."""
        try:
            info = self.client.scheduler_info(n_workers=0)
        except Exception:
            return None
        if "dashboard" not in (info.get("services") or {}):
            return None
        return self.client.dashboard_link


def _project_modules(func: Any) -> list[ModuleType]:
    """The modules of a step's callable (and of what its closure holds, e.g. a
    registered transform's class) that are not installed packages."""
    if func is None:
        return []
    found = [func, *(c.cell_contents for c in (getattr(func, "__closure__", None) or ()))]
    modules = []
    for thing in found:
        module = sys.modules.get(getattr(thing, "__module__", "") or "")
        if module is not None and _is_project_module(module):
            modules.append(module)
    return modules


def _is_project_module(module: ModuleType) -> bool:
    name = module.__name__
    if name == "__main__" or name.split(".")[0] == "pytest_brainsmith":
        return False
    file = getattr(module, "__file__", None)
    if not file:
        return False
    installed = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")}
    resolved = str(Path(file).resolve())
    return not any(resolved.startswith(str(Path(p).resolve()) + os.sep) for p in installed)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


class DaskSession:
    """A session's connection to a cluster: the client, the launcher, and the cluster
    object when the session made (or was given) it and so closes it."""

    def __init__(self, client: Any, cluster: Any | None, control_dir: Path, address: str) -> None:
        self.client = client
        self.cluster = cluster
        self.launcher = DaskLauncher(client, control_dir, address=address)

    @property
    def address(self) -> str:
        return self.launcher.address

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close(timeout=10)
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close(timeout=20)


def connect(
    scheduler: str | None = None,
    *,
    cluster: Any | None = None,
    control_dir: Path,
    local_workers: int = 2,
    job_classes: Sequence[str] = (),
) -> DaskSession:
    """Connect to ``cluster`` (any Dask cluster object), a scheduler address, or with
    ``scheduler="local"`` a LocalCluster of ``local_workers`` single-threaded worker
    processes with FINN preloaded, on loopback; with a batch system's name (``"slurm"``,
    ``"pbs"``...) jobs of dask-jobqueue from the dask config sections ``job_classes``
    (``jobqueue_cluster``)."""
    distributed = require_distributed()
    from .jobqueue_cluster import BATCH_SYSTEMS
    from .jobqueue_cluster import connect as connect_jobs

    if cluster is None and scheduler in BATCH_SYSTEMS:
        return connect_jobs(scheduler, sections=job_classes, control_dir=control_dir)
    owned = cluster
    try:
        if cluster is None and scheduler == "local":
            owned = distributed.LocalCluster(
                n_workers=local_workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                preload=[preload()],
            )
        target = owned if owned is not None else scheduler
        client = distributed.Client(target, timeout="30s")
    except OSError as exc:
        if owned is not None and cluster is None:
            with contextlib.suppress(Exception):
                owned.close()
        raise ClusterError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
    address = client.scheduler.address
    return DaskSession(client, owned, control_dir, address)


def attach(engine: Any, session: DaskSession, tools: Iterable[str]) -> None:
    """Build ``engine``'s segments on the session's cluster, once every worker is seen
    to share the cache (else ``ClusterError`` naming each that does not). ``tools``:
    external tools designs may need, available when a worker declares them."""
    problems = session.launcher.check_cache(engine.cache.root)
    if problems:
        raise ClusterError("\n".join(problems))
    engine.starter.launcher = session.launcher
    # Dask queues by the engine's priority: hand it everything that is ready
    engine.starter.workers = max(engine.starter.workers, CLUSTER_SLOTS)
    engine.limits.tools = session.launcher.tools(sorted(set(tools)))
