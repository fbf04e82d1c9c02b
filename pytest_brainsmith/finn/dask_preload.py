"""``dask worker ADDRESS --preload pytest_brainsmith.finn.dask_preload``: the worker
imports FINN (with the workarounds it needs without Vivado) when it starts, so a
segment's build is forked from a process that has it and no run pays the import."""

from __future__ import annotations

from typing import Any

from .runner import import_finn


def dask_setup(worker: Any = None) -> None:
    """Called by Dask when the worker starts."""
    import_finn()
