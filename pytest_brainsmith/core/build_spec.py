"""What a worker needs to build one segment: plain data and registered steps.

The engine makes it, a worker process (or the caller, inline) builds from it
(``builder.py``) and verifies what it built (``verify/run.py``); both read it, so it
stands below both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .registry import Step


@dataclass
class BuildSpec:
    """Everything needed to build one segment (plain data and registered steps)."""

    key: str
    label: str
    components: dict[str, Any]
    path_steps: list[Step]
    first: int  # index in path_steps of the segment's first step
    input_model: Path
    config: dict[str, Any]
    generate_outputs: list[str]
    staged: Path
    work_dir: Path
    run_id: str
    keep_step_models: bool = False
    limits: dict[str, float] = field(default_factory=dict)  # timeout, max_memory in force
    verify: dict[str, Any] | None = None  # what to verify (core/verify/plan.py)
    #: where it is built: "process" (a fresh process forked from a clean zygote) or
    #: "inline" (the caller's own process, ``--brainsmith-workers 0``: whatever that
    #: process holds reaches the build); recorded in the entry's manifest
    isolation: str = "process"
    #: the cache keys of the entries above it, nearest first (a child's key names its
    #: parent's output content, not its parent: verification finds models up there)
    ancestors: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[Step]:
        return self.path_steps[self.first :]
