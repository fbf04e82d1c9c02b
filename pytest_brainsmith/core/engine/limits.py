"""What a segment's build may take, and how long it is expected to take.

``Limits`` answers from the blueprint (``timeout``, ``step_timeouts``, ``max_memory``,
``step_resources``) and the run's own settings (the engine's ``timeout`` and
``max_memory``, the ini's ``brainsmith_resources``, the tools this machine lacks).
``Durations`` is the history: how long each step took when it was last built (the
cache's ``durations.json``), from which the scheduler estimates the work left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import step_history
from ..blueprint.limits import MEMORY
from ..registry import Step
from ..toolchain import current as toolchain
from ..tree import Segment

#: Seconds a step is assumed to take before any build of it was timed.
DEFAULT_STEP_SECONDS = 1.0
DURATIONS_FILE = "durations.json"


@dataclass
class Limits:
    """The run's limits; the blueprint's own win where it sets them."""

    #: seconds a segment may take, where the blueprint says nothing
    timeout: float | None = None
    #: bytes a segment's build may allocate, where the blueprint says nothing
    max_memory: int | None = None
    #: worker resources a step (by short name) needs on a cluster, beyond {tool: 1}
    #: for its tools (the ini's ``brainsmith_resources``); ``memory`` (bytes) also
    #: bounds the build's memory on any launcher (``segment_max_memory``)
    step_resources: dict[str, dict[str, float]] = field(default_factory=dict)
    #: tool -> why it is missing here (None: available)
    tools: dict[str, str | None] = field(default_factory=dict)

    def segment_timeout(self, segment: Segment) -> float | None:
        """Seconds the segment may take: the blueprint's ``timeout`` (else the engine's)
        plus the ``step_timeouts`` of its steps that have one; None if unbounded."""
        space = segment.tree.space
        default = getattr(space, "timeout", None) or self.timeout
        per_step: dict[str, float] = getattr(space, "step_timeouts", None) or {}
        specific = [per_step[s.name] for s in segment.steps if s.name in per_step]
        rest = any(s.name not in per_step for s in segment.steps)
        if rest and default is None:
            return None
        return sum(specific) + (default if rest and default else 0.0) or None

    def segment_max_memory(self, segment: Segment) -> int | None:
        """Bytes the segment's build may allocate: the largest ``memory`` its steps ask
        for (``step_resources`` of the blueprint or the ini), a step without one counting
        the blueprint's ``max_memory`` (else the engine's); None if unbounded."""
        space = segment.tree.space
        default = getattr(space, "max_memory", None) or self.max_memory
        limits = [self.step_asks(space, step).get(MEMORY) for step in segment.steps]
        given = [int(m) for m in limits if m]
        if not given:
            return default
        if default and any(not m for m in limits):
            given.append(default)
        return max(given)

    def for_build(self, segment: Segment) -> dict[str, float]:
        """The limits a build of the segment runs under (``BuildSpec.limits``)."""
        limits: dict[str, float] = {}
        timeout = self.segment_timeout(segment)
        if timeout:
            limits["timeout"] = timeout
        memory = self.segment_max_memory(segment)
        if memory:
            limits["max_memory"] = memory
        return limits

    def step_asks(self, space: Any, step: Step) -> dict[str, float]:
        """The worker resources one step's build holds on a cluster: one of each tool it
        needs (``vivado: 1``), then the ini's ``brainsmith_resources`` for the step, then
        the blueprint's ``step_resources`` (each overriding the one before, resource by
        resource). ``memory`` is in bytes; an amount of 0 is not asked for."""
        asked = {tool: 1.0 for tool in step.needs}
        asked.update(self.step_resources.get(step.name, {}))
        blueprint: dict[str, dict[str, float]] = getattr(space, "step_resources", None) or {}
        asked.update(blueprint.get(step.name, {}))
        return {name: amount for name, amount in asked.items() if amount}

    def segment_resources(self, segment: Segment) -> dict[str, float]:
        """The worker resources a segment's build holds on a cluster: for each resource
        the largest amount any of its steps asks (``step_asks``; the steps run one after
        the other), ``memory`` included (bytes)."""
        wanted: dict[str, float] = {}
        for step in segment.steps:
            for name, amount in self.step_asks(segment.tree.space, step).items():
                wanted[name] = max(wanted.get(name, 0.0), amount)
        return wanted

    def unrunnable(self, leaf: Segment) -> str | None:
        """Why the design cannot run on this machine (a step needs a missing tool)."""
        for step in leaf.path_steps():
            missing = [self.tools[t] for t in sorted(step.needs) if self.tools.get(t)]
            if missing:
                return f"step {step.name} cannot run here: {'; '.join(missing)}"
        return None


def step_names(segment: Segment) -> list[str]:
    """The segment's steps as durations and memory records name them (checkpoint names)."""
    name = toolchain().checkpoint_name
    return [name(step) for step in segment.steps]


class Durations:
    """Seconds each step (by checkpoint name) took when it was last built, kept in the
    cache's ``durations.json`` across runs and processes."""

    def __init__(self, base: Path) -> None:
        self.path = base / DURATIONS_FILE
        self.seconds = step_history.read(self.path, float)

    def of(self, segment: Segment) -> float:
        """The segment's expected build time: its steps' recorded durations on its own
        model first (a MobileNet step takes minutes where a TFC one takes a second), else
        on any model, else a default."""
        model = segment.model().name
        return sum(
            self.seconds.get(f"{name}@{model}", self.seconds.get(name, DEFAULT_STEP_SECONDS))
            for name in step_names(segment)
        )

    def record(self, step_seconds: dict[str, float], model: str) -> None:
        """A build's step durations (by checkpoint name), on ``model`` (a file name)."""
        for name, seconds in step_seconds.items():
            self.seconds[name] = self.seconds[f"{name}@{model}"] = seconds

    def save(self) -> None:
        """Merge what this run timed into the file (another process may have saved too)."""
        step_history.merge(self.path, float, self.seconds, lambda saved, mine: mine)
