"""Batch systems and job classes: what ``--brainsmith-scheduler slurm`` (pbs, lsf...) names,
and one kind of job a run's segments may run on, with the resources its workers declare.

Plain facts about the jobs, with no Dask in them: the launcher on Dask (``dask_cluster``)
lists a run's job classes, ``jobqueue_cluster`` makes them from dask-jobqueue's
configuration and adapts their job counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: ``--brainsmith-scheduler`` names: dask-jobqueue's cluster class for each batch system.
BATCH_SYSTEMS = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "lsf": "LSFCluster",
    "sge": "SGECluster",
    "htcondor": "HTCondorCluster",
    "oar": "OARCluster",
    "moab": "MoabCluster",
}


def parse_resources(args: Sequence[str]) -> dict[str, float]:
    """The resources a worker's command line declares (``--resources "a=1,b=2"``)."""
    found: dict[str, float] = {}
    words = [str(arg) for arg in args]  # one argument a word, as dask-jobqueue passes them
    for i, word in enumerate(words):
        value = None
        if word == "--resources" and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith("--resources="):
            value = word.split("=", 1)[1]
        for part in (value or "").replace(",", " ").split():
            name, _, amount = part.partition("=")
            with contextlib.suppress(ValueError):
                found[name.strip()] = float(amount)
    return found


@dataclass
class JobClass:
    """One kind of job: a dask-jobqueue cluster made from one configuration section."""

    section: str
    cluster: Any
    resources: dict[str, float]
    minimum_jobs: int
    maximum_jobs: float
    #: worker processes per job and segments each worker builds at once
    processes: int = 1
    threads: int = 1
    adaptive: Any = field(default=None, repr=False)

    def serves(self, resources: dict[str, float]) -> bool:
        return all(self.resources.get(n, 0.0) >= a for n, a in resources.items() if a > 0)

    def jobs(self) -> dict[str, str]:
        """Its jobs by worker name: the batch system's job id, or 'not submitted'."""
        return {
            str(name): str(getattr(job, "job_id", None) or "not submitted")
            for name, job in list(getattr(self.cluster, "workers", {}).items())
        }
