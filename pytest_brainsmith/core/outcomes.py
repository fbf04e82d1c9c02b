"""What the engine answers: each segment's outcome and each design's outcome.

A design's record (the JSON data every view shows: terminal, html, junit, tree
export, results store) is built here and nowhere else, from its outcome.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .gates import GATES
from .segment_states import OK_STATES
from .tree import Segment, trial_of
from .verify.execute import execute_design
from .verify.records import summary

if TYPE_CHECKING:
    from .cache.execution_memo import ExecutionMemo
    from .expectations import Expectation


@dataclass
class SegmentOutcome:
    """What happened to one segment in this run."""

    segment: str  # readable path, e.g. "tfc.blueprint.yaml::qonnx_to_finn..streamline::MVAU[rtl]"
    key: str | None
    status: str
    seconds: float = 0.0  # build time (for reused entries: the time it took when built)
    entry: str | None = None
    log: str | None = None
    output_model: str | None = None
    step: str | None = None  # the failing step
    error: str | None = None
    traceback: str | None = None
    kind: str | None = None  # why it failed (segment_states.py's LASTING_KINDS and others)
    control: dict[str, str] | None = None  # for ``aborted``: {"type", "module", "message"}
    step_seconds: dict[str, float] = field(default_factory=dict)
    cause: SegmentOutcome | None = field(default=None, repr=False)  # for ``blocked``
    #: for ``failed-before``: recorded by an earlier run (not by another process of this one)
    earlier: bool = True
    #: for ``built``: by another process of this run (an xdist worker building ahead), so
    #: this process's build count leaves it out
    elsewhere: bool = False
    #: for ``pruned`` and a budget's ``cancelled``: the recorded seconds not spent on it
    saved_seconds: float = 0.0
    #: the verification record of its steps (core/verify/), if verified
    verification: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status in OK_STATES

    @property
    def root_cause(self) -> SegmentOutcome:
        """The outcome that explains this one (itself unless blocked)."""
        return self.cause.root_cause if self.cause is not None else self


#: Backwards-compatible name (hooks receive it as ``result``).
SegmentResult = SegmentOutcome


@dataclass(frozen=True)
class Equivalent:
    """The design a design equals (an earlier one in tree order) and why
    (``engine/equivalence.py`` finds it)."""

    design: Segment
    reason: str


@dataclass
class DesignOutcome:
    """One design: its choices, effective config, segments, estimates and verdict."""

    leaf: Segment = field(repr=False)
    status: str  # "passed" | "failed" | "skipped" | "error"
    segments: list[SegmentOutcome]
    keys: list[str | None]
    estimates: dict[str, Any] = field(default_factory=dict)
    checked: list[tuple[Expectation, Any]] = field(default_factory=list)
    reason: str | None = None  # for skipped / failed / error: one line
    gate: str | None = None  # the gate that stopped it early (gates.py), if one did
    #: where ``execute`` keeps its answers (the engine's cache; cache/execution_memo.py)
    executions: ExecutionMemo | None = field(default=None, repr=False, compare=False)
    #: the earlier design this one equals: a choice on its path changed nothing
    #: (``engine/equivalence.py``); None if it has no equal before it
    equivalent: Equivalent | None = field(default=None, repr=False, compare=False)

    @property
    def verification(self) -> dict[str, Any]:
        """Its verification over its segments (core/verify/records.py)."""
        records = [o.verification for o in self.segments if o.verification]
        enabled = self.leaf.tree.space.verify is not None
        return summary(records, enabled, all(o.ok for o in self.segments))

    def execute(self, inputs: Any, *, after: str | None = None) -> Any:
        """Run the design's final model (or its model after the step ``after``) on
        ``inputs`` (one vector per row) and return the outputs, one row per vector."""
        return execute_design(self, inputs, after)

    @property
    def choices(self) -> dict[str, Any]:
        return dict(c.describe() for c in self.leaf.choices())

    @property
    def config(self) -> dict[str, Any]:
        return self.leaf.config()

    @property
    def blueprint(self) -> Path:
        return self.leaf.tree.space.path

    @property
    def misses(self) -> list[tuple[Expectation, Any]]:
        return [(e, v) for e, v in self.checked if v is None or not e.holds(v)]

    @property
    def failure(self) -> SegmentOutcome | None:
        """The segment outcome that stopped this design, if any (its root cause); a
        gate's ``pruned`` segments are not a failure (the gate is: ``gate``, ``reason``)."""
        for outcome in self.segments:
            if not outcome.ok and outcome.status != "pruned":
                return outcome.root_cause
        return None

    @property
    def final_model(self) -> str | None:
        last = self.segments[-1] if self.segments else None
        return last.output_model if last is not None and last.ok else None

    @property
    def report_dir(self) -> str | None:
        return self.estimates.get("report_dir")

    def equivalent_to(self, nodeid: str) -> str | None:
        """The node id of the earlier design this one equals (written as ``nodeid``, this
        design's own, is), if any."""
        if self.equivalent is None:
            return None
        own = "::".join(self.leaf.nodeid_parts())
        space = self.leaf.tree.space
        head = nodeid[: -len(own)] if nodeid.endswith(own) else f"{space.path.name}::"
        return head + "::".join(self.equivalent.design.nodeid_parts())

    def record(self, nodeid: str | None = None) -> dict[str, Any]:
        """This design as JSON data for the reports and the results store."""
        space = self.leaf.tree.space
        chain = self.leaf.chain()
        segments = []
        for segment, outcome, key in zip(chain, self.segments, self.keys, strict=True):
            own = outcome.status not in ("blocked", "cancelled", "not-run", "skipped", "pruned")
            gated = outcome.status in ("pruned", "cancelled") and outcome.kind in GATES
            segments.append(
                {
                    "path": outcome.segment,
                    "name": segment.name,
                    "choice": dict([segment.choice.describe()]) if segment.choice else None,
                    "steps": len(segment.steps),
                    "step_names": [s.qualified for s in segment.steps],
                    "status": outcome.status,
                    "key": key,
                    "seconds": outcome.seconds if own else 0.0,
                    "log": outcome.log if own else None,
                    "step_seconds": outcome.step_seconds if own else {},
                    "gate": outcome.kind if gated else None,
                    "saved_seconds": outcome.saved_seconds if gated else 0.0,
                }
            )
        failing = self.failure
        estimates = {k: v for k, v in self.estimates.items() if k not in ("layers", "report_dir")}
        nodeid = nodeid or f"{space.path.name}::{'::'.join(self.leaf.nodeid_parts())}"
        return jsonable(
            {
                "nodeid": nodeid,
                "order": self.leaf.index,  # the leaf's place in the tree
                "blueprint": nodeid.split("::", 1)[0],
                "blueprint_name": space.name,
                "choices": self.choices,
                "config": self.config,
                "estimates": estimates,
                "layers": self.estimates.get("layers", {}),
                "report_dir": self.report_dir,
                "expectations": [
                    {"expect": str(e), "value": v, "met": v is not None and e.holds(v)}
                    for e, v in self.checked
                ],
                "segments": segments,
                "finn_seconds": round(sum(s["seconds"] for s in segments), 3),
                "cache_key": self.keys[-1] if self.keys else None,
                "final_model": self.final_model,
                "error": failing.error if failing else self.reason,
                "failed_step": failing.step if failing else None,
                "engine_outcome": self.status,
                "gate": self.gate,
                "folding": _folding(self.leaf),
                "verification": self.verification,
                # the earlier design it equals (its node id) and why; the views show
                # that one as the representative and this one as pointing to it
                "equivalent_to": self.equivalent_to(nodeid),
                "equivalence": self.equivalent.reason if self.equivalent else None,
            }
        )


def _folding(leaf: Any) -> dict[str, Any] | None:
    """A folding search trial's folding (the JSON file FINN read, and its content)."""
    trial = trial_of(leaf)
    if trial is None:
        return None
    objectives = [list(o) for o in trial.tree.space.folding.objectives]
    found = {
        "trial": trial.number,
        "file": str(trial.folding_file),
        "nodes": trial.folding,
        "objectives": objectives,
    }
    if trial.predicted is not None:  # the exact search's cost model: FINN's and corrected
        found["model"] = trial.predicted
    return found


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (paths and other objects become strings; NaN and
    infinities become null, so that no record can fail to serialize)."""
    text = json.dumps(value, default=str)
    try:
        return json.loads(text, parse_constant=lambda _: None)
    except ValueError:  # pragma: no cover - json.dumps output always parses
        return {}
