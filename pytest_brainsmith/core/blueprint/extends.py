"""``extends``: a blueprint and its parents, merged into one mapping.

Scalars are replaced; ``finn_config``, ``expect``, ``step_timeouts``, ``explore``,
``verify``, ``regress`` and ``design_space.finn_config`` are merged key by key,
``step_resources`` step by step and then resource by resource; ``kernels`` is replaced. Step
lists follow BrainSmith: a file's plain steps replace the inherited list and its
step operations then apply to the result, in file order from the root parent down.
Every merged key remembers the file that set it, for messages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .read import read_document
from .report import FileReport, KeyPath, Warnings, typename
from .validate import check_file
from .variables import Variables, expand, expand_text

#: Longer chains of parents are refused (a safety net; cycles are found by identity).
MAX_PARENTS = 32
#: Keys whose mappings are merged key by key.
_MERGED_MAPPINGS = ("finn_config", "expect", "step_timeouts", "explore", "verify", "regress")
#: Keys whose mappings of mappings are merged two levels deep.
_MERGED_NESTED = ("step_resources",)

StepEntry = tuple[KeyPath, Any, FileReport]  # where, what was written, which file


@dataclass
class StepsSpec:
    """The pipeline as written across the files: the base list (None: FINN's own
    pipeline) and the step operations to apply to it, in order."""

    base: list[StepEntry] | None = None
    operations: list[StepEntry] = field(default_factory=list)


@dataclass
class Merged:
    data: dict[Any, Any]
    origin: dict[KeyPath, FileReport]  # key path -> the file that set it last
    top: FileReport
    steps: StepsSpec
    sources: list[Path]


def load_chain(path: Path, env: Mapping[str, str], warnings: Warnings) -> Merged:
    """Read ``path`` and its ``extends`` parents, and merge them."""
    chain: list[tuple[dict[Any, Any], FileReport]] = []
    seen: dict[str, Path] = {}
    current: Path | None = path
    while current is not None:
        document = read_document(current)
        report = FileReport(current, document.lines, warnings)
        variables = Variables(env, path.parent, current.parent)
        parent_ref = document.data.pop("extends", None)
        data = check_file(expand(document.data, (), variables, report), report)
        seen[_identity(current)] = current
        chain.append((data, report))
        current = _parent(parent_ref, report, variables, seen, len(chain))
    merged: Merged | None = None
    for data, report in reversed(chain):
        merged = _merge(merged, data, report)
    assert merged is not None
    return merged


def _identity(path: Path) -> str:
    """The file itself, whatever symlinked folder led to it."""
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return str(path)


def _parent(
    ref: Any, report: FileReport, variables: Variables, seen: dict[str, Path], depth: int
) -> Path | None:
    if ref is None:
        return None
    key: KeyPath = ("extends",)
    if not isinstance(ref, str) or not ref:
        raise report.error(key, f"expected a path to a parent blueprint, got {typename(ref)}")
    ref = expand_text(ref, key, variables, report)
    try:
        parent = Path(ref)
        if not parent.is_absolute():
            parent = report.path.parent / parent
        parent = Path(os.path.normpath(parent))
        identity = _identity(parent)
        found = parent.is_file()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise report.error(key, f"cannot use parent blueprint {ref[:80]!r}: {reason}") from None
    if identity in seen:
        chain = " -> ".join(str(p) for p in (*seen.values(), parent))
        raise report.error(key, f"extends cycle: {chain}")
    if not found:
        raise report.error(key, f"parent blueprint not found: {parent}")
    if depth >= MAX_PARENTS:
        raise report.error(key, f"more than {MAX_PARENTS} blueprints extend one another")
    return parent


def _merge(parent: Merged | None, child: dict[Any, Any], report: FileReport) -> Merged:
    child_origin: dict[KeyPath, FileReport] = {key: report for key in report.lines}
    steps_written = _take_steps(child, report)
    if parent is None:
        steps = steps_written or StepsSpec()
        return Merged(child, child_origin, report, steps, [report.path])
    data = dict(parent.data)
    data.pop("abstract", None)  # a parent being abstract does not make its children so
    origin = dict(parent.origin)
    steps = StepsSpec(parent.steps.base, list(parent.steps.operations))
    if steps_written is not None:
        if steps_written.base is not None:  # plain steps replace the list and its edits
            steps = steps_written
        else:
            steps.operations.extend(steps_written.operations)

    def take(key: KeyPath) -> None:
        """The child's value replaces the parent's whole subtree under key."""
        for other in [k for k in origin if k[: len(key)] == key]:
            del origin[other]
        for other, where in child_origin.items():
            if other[: len(key)] == key:
                origin[other] = where

    for name, value in child.items():
        if name in _MERGED_MAPPINGS:
            merged = dict(data.get(name) or {})
            for sub, subvalue in value.items():
                merged[sub] = subvalue
                take((name, sub))
            data[name] = merged
            origin[(name,)] = report
        elif name in _MERGED_NESTED:
            nested = {sub: dict(inner) for sub, inner in (data.get(name) or {}).items()}
            for sub, subvalue in value.items():
                inner = nested.pop(sub, {})  # to the end: the last file's spelling wins
                for leaf, leafvalue in subvalue.items():
                    inner[leaf] = leafvalue
                    take((name, sub, leaf))
                nested[sub] = inner
                origin[(name, sub)] = report
            data[name] = nested
            origin[(name,)] = report
        elif name == "design_space":
            space = dict(data.get("design_space") or {})
            for sub, subvalue in value.items():
                if sub == "finn_config":
                    sweeps = dict(space.get("finn_config") or {})
                    for fname, values in subvalue.items():
                        sweeps[fname] = values
                        take(("design_space", sub, fname))
                    space[sub] = sweeps
                else:
                    space[sub] = subvalue
                    take(("design_space", sub))
            data["design_space"] = space
        else:
            data[name] = value
            take((name,))
    return Merged(data, origin, report, steps, [report.path, *parent.sources])


def _take_steps(data: dict[Any, Any], report: FileReport) -> StepsSpec | None:
    """Split a file's ``design_space.steps`` into plain steps and operations (BrainSmith
    allows both in one list: the plain steps are the base, then the operations apply)."""
    space = data.get("design_space")
    if not isinstance(space, dict) or "steps" not in space:
        return None
    written = space.pop("steps")
    key: KeyPath = ("design_space", "steps")
    if not isinstance(written, list):
        raise report.error(key, f"expected a list of steps, got {typename(written)}")
    base: list[StepEntry] = []
    operations: list[StepEntry] = []
    for index, entry in enumerate(written):
        (operations if isinstance(entry, dict) else base).append(((*key, index), entry, report))
    # an empty or operations-only list keeps the inherited steps, as in BrainSmith
    return StepsSpec(base or None, operations)
