"""Files an entry fetched from a remote cache left behind (its checkpoint), fetched when
first needed.

The entry's manifest records them and DEFERRED names them; ``SegmentCache.verify_file``
fetches one through ``source`` (the remote tier's) when a child build resumes from it.
An entry whose deferred file cannot be had is dropped (no damage of its own) and built
here.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import CacheError, why
from .layout import MARKER, deferred_names
from .locks import KeyLocks
from .staging import owner, set_aside

#: ``source(key, name, record, dest)``: download the file ``record`` (its size and
#: sha256) describes to ``dest``, checked; None when done, else why it cannot.
DeferredSource = Callable[[str, str, dict[str, Any], Path], "str | None"]


class DeferredFiles:
    """The deferred files of one cache's entries, and where they come from."""

    def __init__(self, base: Path, locks: KeyLocks) -> None:
        self.base = base
        self.locks = locks
        #: where files an entry left on a remote cache come from (cache/remote/)
        self.source: DeferredSource | None = None

    def fetch(self, key: str, path: Path, manifest: dict[str, Any], name: str) -> str | None:
        """Fetch ``name`` (and the files with its content) if the entry left it on a
        remote cache; None when it is here now (or never was deferred), else why not."""
        deferred = deferred_names(path)
        if name not in deferred or os.path.lexists(path / name):
            return None
        files: dict[str, dict[str, Any]] = manifest["files"]
        record = files.get(name) or {}
        if self.source is None:
            return (
                f"{name} of entry {key[:12]} was left on a remote cache and no remote cache "
                "is configured"
            )
        tmp = self.base / "tmp" / f"{key}.{owner('deferred')}.{time.time_ns()}"
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            problem = self.source(key, name, record, tmp)
            if problem is not None:
                return problem
            os.chmod(tmp, 0o444)
            twins = [n for n in deferred if files.get(n, {}).get("sha256") == record.get("sha256")]
            for twin in sorted(set(twins) | {name}):
                (path / twin).parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileExistsError):  # another process was first
                    os.link(tmp, path / twin)
        except OSError as exc:
            return f"{name} of entry {key[:12]} cannot be fetched into {path}: {why(exc, path)}"
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return None

    def drop(self, key: str, path: Path) -> None:
        """Remove an entry whose deferred file cannot be had (no damage of its own: no
        quarantine, no warning; the remote cache said why), so that it is built here."""
        with contextlib.suppress(CacheError, OSError), self.locks.own(key):
            if (path / MARKER).is_file():
                set_aside(self.base, key, path)
