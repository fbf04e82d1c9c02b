"""Hooks pytest-brainsmith offers to conftest.py files and plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..core.launchers import ClusterLike
    from ..core.outcomes import SegmentResult
    from ..core.registry import Registry
    from ..core.tree import Segment


@pytest.hookspec
def pytest_brainsmith_register(registry: Registry) -> None:
    """Register steps, transforms, kernels and backends that blueprints may name.

    Called for every blueprint file with the conftest.py files that apply to it,
    and with installed plugins (a package's ``pytest11`` entry point), e.g.::

        def pytest_brainsmith_register(registry):
            registry.register_step(my_step, reads=["target_fps"])
    """


@pytest.hookspec
def pytest_brainsmith_segment_start(
    segment: Segment, config: dict[str, Any], build_dir: str
) -> None:
    """A segment is about to be built (not called when it comes from the cache)."""


@pytest.hookspec
def pytest_brainsmith_segment_finish(segment: Segment, result: SegmentResult) -> None:
    """A segment was built or failed (not called when it comes from the cache)."""


@pytest.hookspec(firstresult=True)
def pytest_brainsmith_dask_cluster(config: pytest.Config) -> ClusterLike | None:
    """A Dask cluster object to build this session's segments on (e.g. a
    ``dask_jobqueue.SLURMCluster``); the session connects to it when it starts and
    closes it when it ends. None: ``--brainsmith-scheduler`` decides (default: this
    machine's worker processes), e.g.::

        def pytest_brainsmith_dask_cluster(config):
            from dask_jobqueue import SLURMCluster

            cluster = SLURMCluster(cores=1, processes=1, memory="16GB", walltime="04:00:00")
            cluster.scale(jobs=8)
            return cluster
    """
