"""Blueprint YAML -> DesignSpace, in stages, one module each:

- ``read``: one file's bytes -> a mapping with the line of every key, refusing unsafe YAML
- ``variables``: ``${VAR}``/``$VAR`` expansion per file
- ``validate``: each file's keys and shapes; the merged FINN config and its types
- ``extends``: a blueprint and its parents merged; step lists split into base and operations
- ``step_operations``: step entries, branch points and BrainSmith's step operations
- ``pipeline``: the resolved, numbered, cut pipeline
- ``kernels``, ``sweeps``, ``expect``, ``limits``, ``explore``: the design space's other parts
- ``space``: the result, ``DesignSpace``; ``load``: the stages in order
- ``report``: where a problem is (file, line, key), for errors and warnings

Every problem becomes a BlueprintError (or a BlueprintWarning) naming the file, the
key, the line where known, and what was expected. Nothing here imports FINN.
"""

from .load import load_design_space
from .space import (
    DEFAULT_MAX_DESIGNS,
    MODEL_CHOICE,
    OUTPUT_PRODUCTS,
    OUTPUTS,
    DesignSpace,
    ExploreSettings,
    FoldingSearchSettings,
    KernelChoice,
    ModelChoice,
    StepSlot,
    default_steps,
)
from .validate import RESERVED_CONFIG_FIELDS

__all__ = [
    "DEFAULT_MAX_DESIGNS",
    "MODEL_CHOICE",
    "OUTPUTS",
    "OUTPUT_PRODUCTS",
    "RESERVED_CONFIG_FIELDS",
    "DesignSpace",
    "ExploreSettings",
    "FoldingSearchSettings",
    "KernelChoice",
    "ModelChoice",
    "StepSlot",
    "default_steps",
    "load_design_space",
]
