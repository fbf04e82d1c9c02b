"""Segments as batch jobs: ``--brainsmith-scheduler slurm`` (pbs, lsf, sge, ...) through
dask-jobqueue.

dask-jobqueue turns a batch system into a Dask cluster: each job runs Dask workers that
join a scheduler in this process. Everything about the jobs (queue, account, walltime,
cores, memory, job directives, the environment set-up, the workers' ``--resources``) is
dask-jobqueue's own configuration (``jobqueue.yaml``, ``DASK_*`` variables), read from
the section named after the batch system (``jobqueue.slurm``) or the sections the
caller names: the first is the jobs every segment may run on, each further one a job
class whose workers declare resources (``--resources vivado=1``) that some steps ask
for. Each class adapts its job count to the segments the engine has handed out and not
seen end (those are exactly the runnable ones: the engine submits a segment once its
parent is built), within ``distributed.adaptive.minimum``/``maximum`` (in workers, as
dask defines them) or the section's ``minimum-jobs``/``maximum-jobs``; idle jobs are
given back (dask's ``Adaptive`` retires them after its wait count).

Everything else is ``dask_cluster``'s: a segment is a task, a job the batch system ends
(walltime, preemption, ``scancel``) is a lost worker whose task Dask runs again on
another job; the launcher keeps the lost jobs for the summary. Closing the session
closes the clusters, which cancels every job they submitted (``scancel``, ``qdel``...).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from .dask_cluster import ClusterError, DaskLauncher, DaskSession, require_distributed
from .dask_worker import preload
from .job_classes import BATCH_SYSTEMS, JobClass, parse_resources


def require_jobqueue() -> ModuleType:
    """dask-jobqueue is optional: a clear error names what to install."""
    require_distributed()
    # dask_jobqueue.runner replaces SIGINT's handler with sys.exit when imported (for its
    # own runner processes): Ctrl-C here must stay KeyboardInterrupt, so it is put back
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ClusterError(
            f"running segments as batch jobs needs dask-jobqueue ({exc}): "
            "pip install 'pytest-brainsmith[slurm]' (or pip install dask-jobqueue)"
        ) from None
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGINT, handler)
    return dask_jobqueue


class JobqueueLauncher(DaskLauncher):
    """``DaskLauncher`` on batch jobs: resources are what the job classes declare (jobs
    may not run yet), the cache is probed on the workers there are (each later task
    checks it again where it runs), and the status line counts jobs."""

    def __init__(self, client: Any, control_dir: Path, *, address: str, kind: str) -> None:
        super().__init__(client, control_dir, address=address)
        self.kind = kind

    def resources(self) -> dict[str, float]:
        offered = super().resources()
        for job_class in self.classes:
            for name, amount in job_class.resources.items():
                offered[name] = max(offered.get(name, 0.0), amount)
        return offered

    def unserved(self, resources: dict[str, float]) -> str | None:
        if not resources or any(c.serves(resources) for c in self.classes):
            return None
        wanted = ", ".join(f"{n}={a:g}" for n, a in sorted(resources.items()))
        return (
            f"no job class of the {self.kind} cluster declares the resources {wanted}: add a "
            "section whose worker-extra-args has --resources (see the README, 'Batch jobs')"
        )

    def undeclared(self, tool: str) -> str:
        return (
            f"no {self.kind} job class declares the resource {tool} (worker-extra-args: "
            f'["--resources", "{tool}=1"] in a jobqueue section)'
        )

    def wait_for_workers(self, timeout: float = 0.0) -> None:
        """Jobs start when the batch system says: the session does not wait for them."""
        self.workers(fresh=True)

    def class_of(self, resources: dict[str, float]) -> JobClass | None:
        """The job class a segment asking for ``resources`` runs on: the first serving it."""
        return next((c for c in self.classes if c.serves(resources)), None)

    def runnable(self, job_class: JobClass) -> int:
        """Segments handed to Dask and not ended whose job class is ``job_class``."""
        return sum(
            1
            for build in self.builds
            if build.future is not None
            and not build.future.done()
            and self.class_of(build.resources) is job_class
        )

    def describe(self) -> str | None:
        builds = [b for b in self.builds if not b._done]
        building = sum(1 for b in builds if b.started)
        jobs = [j for c in self.classes for j in c.jobs().values()]
        return (
            f"{self.kind}: {len(jobs)} jobs, {len(self.workers())} workers, "
            f"{building} building, {len(builds) - building} queued"
        )


def _segment_adaptive(distributed: ModuleType) -> type:
    class SegmentAdaptive(distributed.deploy.Adaptive):  # type: ignore[name-defined,misc]
        """Dask's Adaptive whose target is the runnable segments of its job class (dask's
        own target guesses from task durations, unknown for builds of minutes or hours)."""

        def __init__(
            self,
            *args: Any,
            runnable: Callable[[], int],
            threads: int,
            address: str,
            **kw: Any,
        ):
            self._runnable = runnable
            self._address = address
            self._comm: Any = None
            self._seen: dict[str, bool] = {}
            self._threads = max(1, threads)
            super().__init__(*args, **kw)

        async def target(self) -> int:
            return math.ceil(self._runnable() / self._threads)

        async def _mine(self) -> dict[str, bool]:
            """This class's workers on the session's scheduler: name -> busy (anything
            processing there). Asked of that scheduler, since a further class's own
            scheduler has no workers: its jobs joined the first class's."""
            from distributed.core import rpc

            if self._comm is None:
                self._comm = rpc(self._address)
            identity = await self._comm.identity(n_workers=-1)
            processing = await self._comm.processing()
            jobs = [str(n) for n in self.cluster.worker_spec]
            found = {}
            for address, info in (identity.get("workers") or {}).items():
                name = str(info.get("name"))
                if any(name == j or name.startswith(f"{j}-") for j in jobs):
                    found[name] = bool(processing.get(address))
            return found

        @property
        def observed(self) -> set[str]:
            return set(self._seen)

        async def recommendations(self, target: int) -> dict[str, Any]:
            self._seen = await self._mine()
            return await super().recommendations(target)

        async def workers_to_close(self, target: int) -> list[str]:
            """Idle workers (nothing processing), as many as exceed ``target``."""
            mine = await self._mine()
            idle = sorted(name for name, busy in mine.items() if not busy)
            return idle[: max(0, len(mine) - target)]

    return SegmentAdaptive


def _section(section: str) -> dict[str, Any]:
    import dask.config

    found = dask.config.get(f"jobqueue.{section}", default=None)
    return dict(found or {})


def _make_class(
    dask_jobqueue: ModuleType, kind: str, section: str, base: str, scheduler: str | None
) -> JobClass:
    import dask.config

    cls = getattr(dask_jobqueue, BATCH_SYSTEMS[kind])
    config = _section(section)
    if section != kind and not config:
        raise ClusterError(
            f"no dask configuration section jobqueue.{section} (named for the {kind} jobs): "
            "add it to a jobqueue.yaml dask reads (~/.config/dask/, DASK_CONFIG)"
        )
    if section != base:  # what a section does not set, it has of the first (or the kind's)
        config = {**_section(base), **config}
        dask.config.set({f"jobqueue.{section}": config})
    extra = list(config.get("worker-extra-args") or [])
    # the section names the jobs' workers: two classes' worker names never clash
    options: dict[str, Any] = {"config_name": section, "name": section}
    if not any("--preload" in str(a) for a in extra):  # FINN imported when a worker starts
        options["worker_extra_args"] = [*extra, "--preload", preload()]
    scheduler_options = dict(config.get("scheduler-options") or {})
    scheduler_options.setdefault("dashboard_address", ":0")  # never fight over 8787
    if scheduler is not None:  # a further class: its jobs join the first class's scheduler
        scheduler_options["contact_address"] = scheduler
        scheduler_options["dashboard_address"] = None
    options["scheduler_options"] = scheduler_options
    try:
        cluster = cls(**options)
    except Exception as exc:
        raise ClusterError(
            f"cannot start the {kind} cluster from jobqueue.{section}: {type(exc).__name__}: {exc}"
        ) from None
    processes = max(1, int(cluster._dummy_job.worker_processes))
    threads = max(1, int(cluster._dummy_job.worker_process_threads))
    low = config.get("minimum-jobs")
    high = config.get("maximum-jobs")
    minimum = dask.config.get("distributed.adaptive.minimum")
    maximum = dask.config.get("distributed.adaptive.maximum")
    return JobClass(
        section=section,
        cluster=cluster,
        resources=parse_resources(options.get("worker_extra_args", extra)),
        minimum_jobs=int(low) if low is not None else math.ceil(float(minimum) / processes),
        maximum_jobs=float(high) if high is not None else float(maximum) / processes,
        processes=processes,
        threads=threads,
    )


class JobqueueSession(DaskSession):
    """The session's batch-job clusters (one per job class) and their one scheduler."""

    def __init__(self, client: Any, classes: list[JobClass], control_dir: Path, kind: str) -> None:
        self.client = client
        self.cluster = classes[0].cluster
        self.classes = classes
        self.launcher = JobqueueLauncher(
            client, control_dir, address=client.scheduler.address, kind=kind
        )
        self.launcher.classes = classes

    def close(self) -> None:
        """Stop adapting, then close every cluster: each cancels the jobs it submitted."""
        for job_class in self.classes:
            if job_class.adaptive is not None:
                with contextlib.suppress(Exception):
                    job_class.adaptive.stop(reason="session ended")
        with contextlib.suppress(Exception):
            self.client.close(timeout=10)
        for job_class in reversed(self.classes):  # the scheduler's owner last
            with contextlib.suppress(Exception):
                job_class.cluster.close(timeout=30)


def connect(kind: str, *, sections: Sequence[str] = (), control_dir: Path) -> JobqueueSession:
    """Batch-job clusters for ``kind`` (a key of ``BATCH_SYSTEMS``) from the dask config
    ``sections`` (default: the one named ``kind``), adapting to the runnable segments."""
    dask_jobqueue = require_jobqueue()
    distributed = require_distributed()
    names = list(sections) or [kind]
    classes: list[JobClass] = []
    try:
        for name in names:
            scheduler = classes[0].cluster.scheduler_address if classes else None
            base = kind if name == names[0] else names[0]
            classes.append(_make_class(dask_jobqueue, kind, name, base, scheduler))
        client = distributed.Client(classes[0].cluster, timeout="30s")
    except BaseException:
        for job_class in classes:
            with contextlib.suppress(Exception):
                job_class.cluster.close()
        raise
    session = JobqueueSession(client, classes, control_dir, kind)
    adaptive = _segment_adaptive(distributed)
    for job_class in classes:
        job_class.adaptive = job_class.cluster.adapt(
            minimum_jobs=job_class.minimum_jobs,
            maximum_jobs=None if math.isinf(job_class.maximum_jobs) else job_class.maximum_jobs,
            Adaptive=adaptive,
            runnable=partial_runnable(session.launcher, job_class),
            threads=job_class.threads,
            address=session.address,
        )
    return session


def partial_runnable(launcher: JobqueueLauncher, job_class: JobClass) -> Callable[[], int]:
    return lambda: launcher.runnable(job_class)
