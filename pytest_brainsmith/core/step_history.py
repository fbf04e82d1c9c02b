"""Numbers per step kept in a small JSON file beside the cache (``durations.json``,
``memory.json``): read whole, merged with what another process saved meanwhile, and
replaced in one rename. Best effort: a history that cannot be read or written is
empty, never an error."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

N = TypeVar("N", int, float)


def read(path: Path, cast: Callable[[float], N]) -> dict[str, N]:
    """The file's numbers by step (nothing if it is missing or unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: cast(v) for k, v in data.items() if isinstance(v, int | float)}


def merge(path: Path, cast: Callable[[float], N], mine: dict[str, N], keep: Callable) -> None:
    """Save ``mine`` into the file: for a step in both, ``keep(saved, mine)`` wins."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        merged = read(path, cast)
        for step, value in mine.items():
            merged[step] = keep(merged[step], value) if step in merged else value
        tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
        os.replace(tmp, path)
