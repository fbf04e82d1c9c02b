"""pytest-brainsmith: explore FINN design spaces as pytest runs, or from Python.

``explore(blueprint)`` builds a blueprint's designs without pytest; ``pytest
blueprints/`` collects them as test items (the ``plugin`` package).
"""

from .core import toolchain as _toolchain
from .core.explore import Exploration, explore
from .core.outcomes import DesignOutcome, SegmentOutcome

__all__ = ["DesignOutcome", "Exploration", "SegmentOutcome", "explore"]


def _finn() -> _toolchain.Toolchain:
    """FINN is the compiler unless something else was plugged in (``toolchain.use``)."""
    from .finn.toolchain import FinnToolchain

    return FinnToolchain()


_toolchain.default_factory = _finn
