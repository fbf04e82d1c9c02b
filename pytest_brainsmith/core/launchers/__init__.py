"""What starts a segment's build, and the one place that chooses it for a run.

A launcher (``launcher.Launcher``) starts builds and hands the scheduler a handle on
each: the local ``WorkerPool`` (a fresh process per build, forked from a zygote), the
warm ``ServerLauncher`` (``--brainsmith-server``), a ``DaskLauncher`` on a Dask
scheduler (``--brainsmith-scheduler local`` or an address) or a ``JobqueueLauncher``
on batch jobs (``--brainsmith-scheduler slurm``...). ``launcher_class`` decides which
from the run's settings; ``launcher_for`` makes the local ones and ``connect`` the
cluster's session, whose launcher ``dask_cluster.attach`` hands the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from .dask_build import DaskBuild
from .dask_cluster import (
    CLUSTER_SLOTS,
    ClusterError,
    ClusterLike,
    DaskLauncher,
    DaskSession,
    attach,
    require_distributed,
)
from .dask_cluster import connect as connect_dask
from .dask_worker import preload, run_on_worker
from .engine_server import IDLE_SECONDS, ServerLauncher, ServerWarning, server_dir, stop_servers
from .fork_server import ForkServer, ForkServerError
from .job_classes import BATCH_SYSTEMS, JobClass, parse_resources
from .jobqueue_cluster import JobqueueLauncher, JobqueueSession
from .jobqueue_cluster import connect as connect_jobs
from .launcher import Build, Launcher
from .worker_pool import ForkedBuild, WorkerPool
from .workers import Worker, available_cores

__all__ = [
    "BATCH_SYSTEMS",
    "CLUSTER_SLOTS",
    "IDLE_SECONDS",
    "Build",
    "ClusterError",
    "ClusterLike",
    "DaskBuild",
    "DaskLauncher",
    "DaskSession",
    "ForkServer",
    "ForkServerError",
    "ForkedBuild",
    "JobClass",
    "JobqueueLauncher",
    "JobqueueSession",
    "LaunchSettings",
    "Launcher",
    "ServerLauncher",
    "ServerWarning",
    "Worker",
    "WorkerPool",
    "attach",
    "available_cores",
    "connect",
    "launcher_class",
    "launcher_for",
    "parse_resources",
    "preload",
    "require_distributed",
    "run_on_worker",
    "server_dir",
    "stop_servers",
]


class LaunchSettings(Protocol):
    """The settings a run's launcher is chosen by (``composition.RunSettings`` has them)."""

    #: build slots on this machine (0: inline, in the caller)
    workers: int
    #: the warm server's idle seconds, None: no server
    server: float | None
    #: ``--brainsmith-scheduler``: "local", a batch system's name, a Dask address, None
    scheduler: str | None


def launcher_class(
    scheduler: str | None,
    *,
    cluster: ClusterLike | None = None,
    server: float | None = None,
    workers: int = 1,
) -> type:
    """Which launcher builds a run's segments: on a cluster object (a conftest hook's,
    ``explore()``'s) or the one ``scheduler`` names, Dask's (batch jobs' for a batch
    system's name, ``BATCH_SYSTEMS``); else the warm server's when it is on (``server``:
    its idle seconds) and builds run in processes (``workers``); else the worker pool."""
    if cluster is None and scheduler in BATCH_SYSTEMS:
        return JobqueueLauncher
    if cluster is not None or scheduler:
        return DaskLauncher
    if server and workers:
        return ServerLauncher
    return WorkerPool


def launcher_for(
    settings: LaunchSettings, *, control_dir: Path, share: Iterable[Any] = ()
) -> Launcher:
    """The launcher a run's engine starts with: the warm server's or the worker pool
    (``share``: what the pool sends by identity, the engine's cache). A run on a cluster
    starts with the pool too, until its session connects at the start of the run
    (``connect``; ``attach`` then hands the engine the session's launcher)."""
    chosen = launcher_class(settings.scheduler, server=settings.server, workers=settings.workers)
    if chosen is ServerLauncher:
        assert settings.server is not None
        return ServerLauncher(
            server_dir(), control_dir, workers=settings.workers, idle=settings.server
        )
    return WorkerPool(share=share)


def connect(
    scheduler: str | None = None,
    *,
    cluster: ClusterLike | None = None,
    control_dir: Path,
    local_workers: int = 2,
    job_classes: Sequence[str] = (),
) -> DaskSession:
    """The run's cluster session (``launcher_class`` says which kind): batch jobs of
    dask-jobqueue from the dask config sections ``job_classes`` for a batch system's
    name, else ``cluster`` (any Dask cluster object), a scheduler's address, or for
    "local" a LocalCluster of ``local_workers`` worker processes on loopback."""
    if launcher_class(scheduler, cluster=cluster) is JobqueueLauncher:
        assert scheduler is not None
        return connect_jobs(scheduler, sections=job_classes, control_dir=control_dir)
    return connect_dask(
        scheduler, cluster=cluster, control_dir=control_dir, local_workers=local_workers
    )
