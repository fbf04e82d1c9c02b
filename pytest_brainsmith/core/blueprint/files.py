"""Paths a blueprint names: resolved against the folder of the file that wrote them and
checked to be regular files, with an error that names the key and what the path is
instead (a directory, a FIFO, a NUL byte...)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from .report import FileReport, KeyPath, typename


def resolve_file(value: Any, key: KeyPath, report: FileReport, what: str) -> Path:
    """A path as written (relative to the file's folder) -> an existing file."""
    if not isinstance(value, str) or not value:
        raise report.error(key, f"expected a path to {what}, got {typename(value)}")
    try:
        path = Path(value)
        if not path.is_absolute():
            path = report.path.parent / path
        path = Path(os.path.normpath(path))
        found = path.is_file()
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise report.error(key, f"cannot use {what} {value[:80]!r}: {reason}") from None
    if not found:
        shown = str(path) if str(path).isprintable() else repr(str(path))
        raise report.error(key, f"{what} {_not_a_file(path)}: {shown}")
    return path


def _not_a_file(path: Path) -> str:
    """What a path that is not a regular file is instead."""
    try:
        mode = path.stat().st_mode
    except ValueError:  # is_file() says False for a NUL byte, stat() raises
        return "cannot be a file name (it holds a NUL byte)"
    except OSError:
        return "not found"
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return f"is {kind}, not a file"
    return "is not a regular file"
