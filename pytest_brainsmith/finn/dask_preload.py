"""``dask worker ADDRESS --preload pytest_brainsmith.finn.dask_preload``: the worker
imports FINN (with the workarounds it needs without Vivado) when it starts, so a
segment's build is forked from a process that has it and no run pays the import.

Dask's nanny starts a worker with one thread for OpenMP, MKL and OpenBLAS and with
glibc trimming memory at 64 KiB (``distributed.nanny.pre-spawn-environ``): right for a
worker running many small tasks on threads, but a FINN build forked from it is one
process per segment, like a local build, and ran 1.5x slower so (CNV sweep on 2 cores,
30.8 s against 20.2 s without the nanny). The preload gives the builds back what a
local build has: thread pools as wide as the worker's cores and glibc's default
trimming."""

from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Any

from .runner import import_finn

#: what the nanny sets (distributed.nanny.pre-spawn-environ) and a build should not have
NANNY_LIMITS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# glibc mallopt parameters: with the trim threshold set (by the nanny's environment), glibc
# no longer raises its mmap threshold as a process allocates, so every large numpy array
# is a fresh mmap and its page faults; fixed values in the range glibc's dynamic ones reach
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM, _MMAP = 64 * 1024 * 1024, 32 * 1024 * 1024


def dask_setup(worker: Any = None) -> None:
    """Called by Dask when the worker starts."""
    import_finn()
    release_nanny_limits()


def release_nanny_limits() -> None:
    """Thread pools as wide as this process's cores, glibc's default trimming."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    for name in NANNY_LIMITS:
        if os.environ.get(name) == "1":
            os.environ[name] = str(cores)  # for processes the build starts
    with contextlib.suppress(ImportError):
        import threadpoolctl

        threadpoolctl.threadpool_limits(cores)
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(cores)
    if os.environ.pop("MALLOC_TRIM_THRESHOLD_", None) is not None:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP)
            libc.mallopt(_M_TRIM_THRESHOLD, _TRIM)
