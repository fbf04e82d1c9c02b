"""What goes wrong with the local cache, and how it is said.

The cache's own failures (disk full, permissions, a lock it cannot take) are never a
design's fault: they get exceptions of their own and messages that name the path and
what the user can do about it.
"""

from __future__ import annotations

import errno
from pathlib import Path


class CacheError(Exception):
    """The cache itself failed (disk full, permissions): not the design's fault."""


class CacheIntegrityWarning(UserWarning):
    """A cache entry was damaged (a file truncated, rewritten or missing) and moved aside."""


class EntryInUse(CacheError):
    """Another process holds the key's lock (it builds or repairs it): left alone."""


class CacheLockError(CacheError, OSError):
    """A key's lock cannot be taken (read-only cache, a directory in its place); an
    OSError too, for callers that treat lock failures as such."""


def why(exc: BaseException, path: Path) -> str:
    """An OSError as a reader needs it: what, and on which path."""
    if isinstance(exc, OSError):
        if exc.errno == errno.EROFS:
            return f"{path} is on a read-only file system"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"permission denied on {exc.filename or path}"
        if exc.errno == errno.EISDIR:
            return f"{exc.filename or path} is a directory"
        return f"{exc.strerror or exc} ({exc.filename or path})"
    return f"{type(exc).__name__}: {exc}"


def describe_os_error(exc: OSError, doing: str) -> str:
    if exc.errno == errno.ENOSPC:
        return f"no space left on device while {doing}; earlier entries are intact"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"no permission while {doing}: {exc}"
    return f"{exc.strerror or exc} while {doing}"
