"""``${VAR}`` and ``$VAR`` in blueprint values, as BrainSmith expands them.

``${BLUEPRINT_DIR}`` is the directory of the blueprint being loaded (also inside its
``extends`` parents, as in BrainSmith), ``${YAML_DIR}`` the directory of the file
being read, ``${BSMITH_DIR}`` BrainSmith's directory (from the environment), every
other name the environment's. ``$$`` is a literal ``$``. Unlike BrainSmith, an
undefined variable is an error: left in place it would surface later as a missing
file with a ``$`` in its name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .report import FileReport, KeyPath

_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Variables:
    """What the variables of one file expand to."""

    env: Mapping[str, str]
    blueprint_dir: Path
    yaml_dir: Path

    def value(self, name: str) -> str | None:
        if name == "BLUEPRINT_DIR":
            return str(self.blueprint_dir)
        if name == "YAML_DIR":
            return str(self.yaml_dir)
        return self.env.get(name)


def expand_text(text: str, key: KeyPath, variables: Variables, report: FileReport) -> str:
    """Expand one string (e.g. an ``extends`` path before it is followed)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name = match.group(2) or match.group(3)
        value = variables.value(name)
        if value is None:
            hint = (
                "set BSMITH_DIR to BrainSmith's directory (BrainSmith defaults it to its "
                "installation)"
                if name == "BSMITH_DIR"
                else "set it in the environment, or write $$ for a literal $"
            )
            raise report.error(key, f"undefined variable ${{{name}}}", hint)
        return value

    return _VAR.sub(substitute, text)


def expand(value: Any, key: KeyPath, variables: Variables, report: FileReport) -> Any:
    """Expand every string value (not keys) of a file's data."""
    if isinstance(value, str):
        return expand_text(value, key, variables, report) if "$" in value else value
    if isinstance(value, dict):
        return {k: expand(v, (*key, k), variables, report) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, (*key, i), variables, report) for i, v in enumerate(value)]
    return value
