"""pytest-brainsmith: explore FINN design spaces as pytest runs, or from Python.

``explore(blueprint)`` builds a blueprint's designs without pytest; ``pytest
blueprints/`` collects them as test items (the ``plugin`` package).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .core import explore as _explore
from .core import toolchain as _toolchain
from .core.explore import Exploration, explore
from .core.outcomes import DesignOutcome, SegmentOutcome

if TYPE_CHECKING:
    from .views.results_store import ResultsStore

__all__ = ["DesignOutcome", "Exploration", "SegmentOutcome", "explore"]


def _finn() -> _toolchain.Toolchain:
    """FINN is the compiler unless something else was plugged in (``toolchain.use``)."""
    from .finn.toolchain import FinnToolchain

    return FinnToolchain()


_toolchain.default_factory = _finn


def _results_store(path: Path) -> ResultsStore:
    """explore()'s runs go to the views' results store (imported when first used)."""
    from .views.results_store import ResultsStore

    return ResultsStore(path)


_explore.open_results_store = _results_store
