"""Errors a user can act on: each names the file, the key and what was expected."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class BlueprintError(Exception):
    """A blueprint cannot be used as written; raised at collection time."""

    def __init__(
        self,
        file: Path | str,
        key: str,
        message: str,
        *,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = Path(file)
        self.key = key
        self.message = message
        self.line = line
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        text = f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"
        if self.hint:
            text += f"\n  {self.hint}"
        return text


class BlueprintWarning(UserWarning):
    """A blueprint that works but likely not as meant (an unknown key, an operation
    whose target is missing, two settings that disagree). An error under the strict
    option. Made from one string, like any warning, so it pickles (xdist)."""

    file: Path
    line: int | None
    key: str
    text: str
    hint: str | None

    @classmethod
    def at(
        cls,
        file: Path | str,
        key: str,
        message: str,
        *,
        line: int | None = None,
        hint: str | None = None,
    ) -> BlueprintWarning:
        text = f"{key}: {message}" if key else message
        warning = cls(f"{text} ({hint})" if hint else text)
        warning.file, warning.line, warning.key = Path(file), line, key
        warning.text, warning.hint = message, hint
        return warning


class RegistryError(Exception):
    """A name is registered twice, or looked up but unknown."""


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """A 'did you mean' hint with the closest known names, or None."""
    close = difflib.get_close_matches(name, sorted(set(known)), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"
