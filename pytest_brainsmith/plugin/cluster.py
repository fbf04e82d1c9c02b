"""The session on a Dask cluster: which cluster (option, ini, env or a conftest hook),
its checks at the start (every worker sees the cache), and its end.

The process that runs the tests connects when the session starts, points the engine's
launcher at the cluster and closes what it opened when the session ends. A cluster
that cannot serve the run (no worker sees the cache, none joined, Dask distributed not
installed) is a usage error, never a failed design.
"""

from __future__ import annotations

import pytest

from ..core import toolchain
from ..core.launchers import (
    ClusterError,
    DaskSession,
    JobClass,
    Launcher,
    attach,
    available_cores,
    connect,
)
from .run_context import RunContext, run_settings, step_resources

__all__ = ["header", "scheduler_option", "start", "step_resources"]


def scheduler_option(config: pytest.Config) -> str | None:
    """``--brainsmith-scheduler``, ``BRAINSMITH_SCHEDULER`` or the ini option."""
    return run_settings(config).scheduler


def start(config: pytest.Config, context: RunContext) -> DaskSession | None:
    """Connect the run's engine to its cluster, if it has one; check the cluster."""
    scheduler = scheduler_option(config)
    if hasattr(config, "workerinput"):  # an xdist worker: -n was refused unless a hook's
        if scheduler or config.hook.pytest_brainsmith_dask_cluster.get_hookimpls():
            raise pytest.UsageError(
                "a Dask cluster and -n (pytest-xdist) do not go together: Dask schedules "
                "the segments on its workers; run without -n"
            )
        return None
    cluster = config.hook.pytest_brainsmith_dask_cluster(config=config)
    if cluster is None and scheduler is None:
        return None
    engine = context.engine
    try:
        session = connect(
            scheduler,
            cluster=cluster,
            control_dir=engine.cache.base / "dask",
            local_workers=available_cores(),
            job_classes=config.getini("brainsmith_jobqueue"),
        )
    except ClusterError as exc:
        raise pytest.UsageError(str(exc)) from None
    tools = set(toolchain.current().tools_needed) | set(context.tools)
    try:
        attach(engine, session, tools)
    except ClusterError as exc:
        session.close()
        raise pytest.UsageError(str(exc)) from None
    context.tools = engine.limits.tools
    return session


def lost_jobs(launcher: Launcher) -> list[str]:
    """The summary's lines on workers (batch jobs) lost mid-segment, if any."""
    lost = launcher.lost
    return [f"worker lost mid-segment (its job ended?): {where}" for where in lost]


def header(session: DaskSession) -> str:
    workers = session.launcher.workers(fresh=True)
    threads = sum(int(w.get("nthreads", 1)) for w in workers.values())
    dashboard = session.launcher.dashboard() or "none (the scheduler needs bokeh to serve one)"
    resources = session.launcher.resources()
    offered = ", ".join(f"{n}={a:g}" for n, a in sorted(resources.items())) or "none"
    line = (
        f"brainsmith: Dask scheduler {session.address}: {len(workers)} workers, "
        f"{threads} threads, resources {offered}; dashboard {dashboard}"
    )
    if session.launcher.classes:
        described = "; ".join(_job_class(c) for c in session.launcher.classes)
        line += f"\nbrainsmith: job classes (adapting to the runnable segments): {described}"
    return line


def _job_class(job_class: JobClass) -> str:
    offered = ", ".join(f"{n}={a:g}" for n, a in sorted(job_class.resources.items()))
    jobs = f"{job_class.minimum_jobs}-{job_class.maximum_jobs:g} jobs"
    return f"jobqueue.{job_class.section} {jobs}" + (f" with {offered}" if offered else "")
