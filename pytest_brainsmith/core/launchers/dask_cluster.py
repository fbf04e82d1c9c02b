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

The task on the worker is ``dask_worker``'s, the session's handle on it ``dask_build``'s;
this module is the launcher, the session's connection and its checks.

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
import os
import sys
import sysconfig
import time
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from .dask_build import DaskBuild, remove_tree
from .dask_worker import preload, probe_cache, run_on_worker
from .job_classes import JobClass

#: How long a session waits for the first worker of a cluster that is still starting.
WORKER_WAIT_SECONDS = 60.0
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


class DaskLauncher:
    """The engine's launcher on a Dask cluster (``Engine(launcher=...)``)."""

    remote = True
    local = False  # the workers have memory of their own
    imports = 0  # the workers import the compiler (``preload``), never this process

    def __init__(self, client: Any, control_dir: Path, *, address: str) -> None:
        self.client = client
        self.address = address
        self.control_dir = control_dir
        self.builds: list[DaskBuild] = []
        #: where each lost attempt of a segment ran (its worker died mid-build)
        self.lost: list[str] = []
        #: the batch-job classes the cluster's workers come from (``jobqueue_cluster``)
        self.classes: list[JobClass] = []
        self.spares = 0  # Dask starts the builds: nothing is forked ahead here
        self.started = 0  # builds handed to Dask
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
        resources = resources or {}
        control = self.control_dir / output.parent.name
        spec = job.args[0] if isinstance(job, partial) and job.args else None
        missing = self.unserved(resources)
        future = None
        if missing is None:
            future = self.client.submit(
                run_on_worker,
                self.payload(job),
                str(output),
                max_memory,
                timeout,
                str(control),
                key=f"brainsmith-segment-{output.parent.name}",
                priority=round(priority * 1000),  # Dask runs higher numbers first
                resources=resources or None,
                pure=False,
            )
        build = DaskBuild(
            future,
            output=output,
            control=control,
            label=str(getattr(spec, "label", "") or output.parent.name),
            resources=resources,
            lost=self.lost,
            refused=missing,
        )
        self.builds = [b for b in self.builds if not b._done] + [build]
        self.started += 1
        return build

    def share(self, objects: Iterable[Any]) -> None:
        """Nothing is shared by identity: a build travels pickled by value (``payload``)."""

    def prepare(self, close_fds: tuple[int, ...] = ()) -> str | None:
        return None  # each worker prepares the compiler (``dask_worker.run_on_worker``)

    def close(self) -> None:
        """Nothing of the launcher's own: the session closes the client (``DaskSession``)."""

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

    def describe(self) -> str | None:
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
                    remove_tree(mark)

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
) -> DaskSession:
    """Connect to ``cluster`` (any Dask cluster object), a scheduler address, or with
    ``scheduler="local"`` a LocalCluster of ``local_workers`` single-threaded worker
    processes with FINN preloaded, on loopback. (Batch jobs: ``jobqueue_cluster``; which
    of the two a run uses is ``launchers.connect``'s choice.)"""
    distributed = require_distributed()
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
