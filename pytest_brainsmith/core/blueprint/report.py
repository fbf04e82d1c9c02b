"""Where a blueprint problem is: errors and warnings placed on a file, a line and a key.

Every stage reports through one of these instead of raising bare exceptions, so a
message always names the file, the line, the key (a dotted path such as
``design_space.finn_config.target_fps``) and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ..errors import BlueprintError, BlueprintWarning

KeyPath = tuple[Any, ...]


def dotted(key: KeyPath) -> str:
    """``("design_space", "steps", 1)`` -> ``design_space.steps[1]``."""
    text = ""
    for part in key:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def typename(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class Warnings:
    """The warnings of one load; under the strict option each one is an error instead."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.items: list[BlueprintWarning] = []


class Reporter(Protocol):
    """What every stage reports through."""

    def error(self, key: KeyPath, message: str, hint: str | None = None) -> BlueprintError: ...

    def warn(self, key: KeyPath, message: str, hint: str | None = None) -> None: ...


class FileReport:
    """Problems in one blueprint file, each on the line of its key (or of the
    nearest enclosing key that has one)."""

    def __init__(self, path: Path, lines: Mapping[KeyPath, int], warnings: Warnings) -> None:
        self.path = path
        self.lines = lines
        self.warnings = warnings

    def line(self, key: KeyPath) -> int | None:
        for end in range(len(key), 0, -1):
            part = key[:end]
            line = self.lines.get(part)
            if line is None:  # a key the YAML wrote as 1 or true is stored as its text
                line = self.lines.get(
                    tuple(p if isinstance(p, int | str) else str(p) for p in part)
                )
            if line is not None:
                return line
        return None

    def error(self, key: KeyPath, message: str, hint: str | None = None) -> BlueprintError:
        return BlueprintError(self.path, dotted(key), message, line=self.line(key), hint=hint)

    def warn(self, key: KeyPath, message: str, hint: str | None = None) -> None:
        if self.warnings.strict:
            raise self.error(key, message, _strict_hint(hint))
        self.warnings.items.append(
            BlueprintWarning.at(self.path, dotted(key), message, line=self.line(key), hint=hint)
        )


class MergedReport:
    """Problems in a blueprint merged through ``extends``: each key is reported in
    the file that set it last; whole-blueprint problems in the file being loaded."""

    def __init__(self, origin: Mapping[KeyPath, FileReport], top: FileReport) -> None:
        self.origin = origin
        self.top = top

    def at(self, key: KeyPath) -> FileReport:
        for end in range(len(key), 0, -1):
            where = self.origin.get(tuple(key[:end]))
            if where is not None:
                return where
        return self.top

    def error(self, key: KeyPath, message: str, hint: str | None = None) -> BlueprintError:
        return self.at(key).error(key, message, hint)

    def warn(self, key: KeyPath, message: str, hint: str | None = None) -> None:
        self.at(key).warn(key, message, hint)


def _strict_hint(hint: str | None) -> str:
    strict = "an error because of --brainsmith-strict (ini brainsmith_strict or strict)"
    return f"{hint}\n  {strict}" if hint else strict
