"""Step lists and BrainSmith's step operations on them.

An entry is a step name or a branch point ``[a, b, ~]`` (``~``, ``"~"``, null or
``""`` = skip). Operations: ``{after: T, insert: X}``, ``{before: T, insert: X}``,
``{replace: T, with: X}``, ``{remove: T}``, ``{at_start: {insert: X}}``,
``{at_end: {insert: X}}``; a target T is a step or a branch point (matched as a set),
X a step, a list of steps, or ``[[a, b]]`` for a branch point. As in BrainSmith an
operation applies at every match, and one whose target is not there changes nothing
(a warning here, an error under the strict option).

Names are resolved against the registry as they are read, so ``streamline``,
``finn:streamline`` and ``step_streamline`` are the same target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import RegistryError, did_you_mean
from ..registry import Registry, Step
from .report import FileReport, KeyPath, typename

SKIP_MARKERS = (None, "", "~")
_OPERATIONS: dict[str, tuple[str, ...]] = {
    "after": ("insert",),
    "before": ("insert",),
    "replace": ("with",),
    "remove": (),
    "at_start": (),
    "at_end": (),
}


@dataclass(frozen=True)
class SlotSpec:
    """A pipeline position as written: its alternatives (None = skip), and where."""

    options: tuple[Step | None, ...]
    key: KeyPath
    report: FileReport

    @property
    def is_branch(self) -> bool:
        return len(self.options) > 1


def _step(name: str, key: KeyPath, registry: Registry, report: FileReport) -> Step:
    try:
        return registry.step(name)
    except RegistryError as exc:
        raise report.error(
            key, str(exc), "register your own steps with the pytest_brainsmith_register hook"
        ) from None


def parse_entry(entry: Any, key: KeyPath, registry: Registry, report: FileReport) -> SlotSpec:
    """A step name or a branch point."""
    if isinstance(entry, str) and entry not in SKIP_MARKERS:
        return SlotSpec((_step(entry, key, registry, report),), key, report)
    if isinstance(entry, list):
        return SlotSpec(_branch(entry, key, registry, report), key, report)
    raise report.error(
        key,
        f"expected a step name or a list of alternatives, got {typename(entry)} {entry!r}"[:200],
        "skip markers (~) are only allowed inside a branch point",
    )


def _branch(
    entry: list[Any], key: KeyPath, registry: Registry, report: FileReport
) -> tuple[Step | None, ...]:
    if not entry:
        raise report.error(key, "a branch point needs at least one alternative")
    options: list[Step | None] = []
    for i, option in enumerate(entry):
        if option in SKIP_MARKERS:
            options.append(None)
        elif isinstance(option, str):
            options.append(_step(option, (*key, i), registry, report))
        else:
            raise report.error(
                (*key, i),
                f"a branch alternative must be a step name or ~ (skip), got {typename(option)}",
                "branch points do not nest",
            )
    if options.count(None) > 1:
        raise report.error(key, 'a branch point may have at most one skip (~, null or "")')
    if all(o is None for o in options):
        raise report.error(key, "a branch point needs at least one step besides the skip")
    named = [o for o in options if o is not None]
    if len(set(named)) != len(named):
        raise report.error(key, "a branch point lists the same step twice")
    return tuple(options)


def _insertion(value: Any, key: KeyPath, registry: Registry, report: FileReport) -> list[SlotSpec]:
    """An operation's X: a step, a list of steps, or [[a, b]] for a branch point."""
    if isinstance(value, str):
        return [parse_entry(value, key, registry, report)]
    if isinstance(value, list) and value:
        return [parse_entry(v, (*key, i), registry, report) for i, v in enumerate(value)]
    raise report.error(key, f"expected a step, a list of steps or [[a, b]], got {typename(value)}")


def _target(
    value: Any, key: KeyPath, registry: Registry, report: FileReport
) -> frozenset[Step | None]:
    if isinstance(value, str) and value not in SKIP_MARKERS:
        return frozenset({_step(value, key, registry, report)})
    if isinstance(value, list) and value:
        return frozenset(_branch(value, key, registry, report))
    raise report.error(
        key, f"expected a step name or a branch point [a, b] as target, got {typename(value)}"
    )


def apply_operation(
    slots: list[SlotSpec], op: Any, key: KeyPath, registry: Registry, report: FileReport
) -> list[SlotSpec]:
    """One step operation applied to ``slots`` (a new list)."""
    if not isinstance(op, dict):
        raise report.error(key, f"expected a step operation, got {typename(op)}")
    kinds = [k for k in op if k in _OPERATIONS]
    if len(kinds) != 1:
        raise report.error(
            key,
            "expected exactly one of after, before, replace, remove, at_start, at_end",
            did_you_mean(str(next(iter(op), "")), _OPERATIONS),
        )
    kind = kinds[0]
    if kind in ("at_start", "at_end"):
        body = op[kind]
        if not isinstance(body, dict) or set(body) != {"insert"} or len(op) != 1:
            raise report.error((*key, kind), "expected {insert: X}")
        new = _insertion(body["insert"], (*key, kind, "insert"), registry, report)
        return new + slots if kind == "at_start" else slots + new
    allowed = (kind, *_OPERATIONS[kind])
    for extra in op:
        if extra not in allowed:
            raise report.error(
                (*key, extra),
                f"unknown key in a {kind!r} operation",
                did_you_mean(str(extra), allowed),
            )
    for needed in _OPERATIONS[kind]:
        if needed not in op:
            raise report.error(key, f"a {kind!r} operation needs {needed!r}")
    target = _target(op[kind], (*key, kind), registry, report)
    new = []
    if kind != "remove":
        part = "with" if kind == "replace" else "insert"
        new = _insertion(op[part], (*key, part), registry, report)
    result: list[SlotSpec] = []
    matched = False
    for slot in slots:
        if frozenset(slot.options) != target:
            result.append(slot)
            continue
        matched = True
        if kind == "after":
            result += [slot, *new]
        elif kind == "before":
            result += [*new, slot]
        elif kind == "replace":
            result += new
    if not matched:
        _warn_missing(slots, target, op[kind], (*key, kind), report)
    return result


def _warn_missing(
    slots: list[SlotSpec],
    target: frozenset[Step | None],
    written: Any,
    key: KeyPath,
    report: FileReport,
) -> None:
    present = [s.name for slot in slots for s in slot.options if s is not None]
    hint = None
    if len(target) == 1:
        (step,) = target
        branch = next((slot for slot in slots if slot.is_branch and step in slot.options), None)
        if branch is not None:
            names = ", ".join(s.name if s else "~" for s in branch.options)
            hint = f"it is an alternative of the branch point [{names}]; name that as the target"
        elif step is not None:
            hint = did_you_mean(step.name, present)
    report.warn(
        key,
        f"{written!r} is not in the steps; the operation changes nothing (as in BrainSmith)"[:300],
        hint or (f"steps: {', '.join(present)}" if present else None),
    )
