"""pytest-brainsmith: explore FINN design spaces as pytest runs, or from Python.

``explore(blueprint)`` builds a blueprint's designs without pytest; ``pytest
blueprints/`` collects them as test items (the ``plugin`` package).
"""

from .core.explore import Exploration, explore
from .core.outcomes import DesignOutcome, SegmentOutcome

__all__ = ["DesignOutcome", "Exploration", "SegmentOutcome", "explore"]
