"""Where builds happen before they are published: tmp/<key>.<owner>.<random>/.

An entry is moved into place whole by one rename on the same filesystem, so a crash or
a full disk never leaves a half-written entry that looks complete. Temporary names say
who made them (host and process), so a new build removes what a dead one left behind
and never what a live one still uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from pathlib import Path

from .errors import CacheError, why
from .layout import remove_tree

#: Left-over temporary files of another host are removed after this long (its process
#: cannot be asked whether it lives).
FOREIGN_TMP_SECONDS = 24 * 3600


def new_staging(base: Path, key: str) -> Path:
    """A fresh temporary directory for building ``key`` (call with its lock held),
    named after its owner (this host and process): what an earlier build of the key
    left behind is removed only once its owner is gone, never another live build's."""
    tmp_root = base / "tmp"
    for stale in tmp_root.glob(f"{key}.*"):
        if abandoned(stale):
            with contextlib.suppress(FileNotFoundError):
                remove_tree(stale)
    try:
        tmp_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{key}.{owner('build')}.", dir=tmp_root))
    except OSError as exc:
        raise CacheError(
            f"cannot create a build directory in {tmp_root}: {why(exc, tmp_root)}"
        ) from exc


def discard(staged: Path) -> None:
    """Remove a staging directory that was not published (nothing if it was)."""
    if staged.exists():
        with contextlib.suppress(OSError):
            remove_tree(staged)


def set_aside(base: Path, key: str, path: Path) -> None:
    """Remove ``key``'s entry or failure record (its lock held) in one rename, so that
    a reader without the lock never finds it half deleted and takes it for damage."""
    aside = base / "tmp" / f"{key}.forgotten.{time.time_ns()}"
    try:
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, aside)
    except FileNotFoundError:
        return
    remove_tree(aside)  # left behind if interrupted: new_staging(key) removes it


def host_tag() -> str:
    return hashlib.sha256(os.uname().nodename.encode()).hexdigest()[:8]


def owner(kind: str) -> str:
    """``kind-host-pid``: who made a temporary name under tmp/ (``abandoned`` reads it)."""
    return f"{kind}-{host_tag()}-{os.getpid()}"


def abandoned(path: Path) -> bool:
    """Whether a temporary name under tmp/ may be removed by a new build of its key: its
    owner (``owner``) is a process of this host that is gone, or it names none (a set
    aside entry interrupted while it was removed), or another host's made it long ago.
    A live owner's is its own: it removes it (a build of this process, another session
    whose worker died, a checkpoint being downloaded)."""
    parts = path.name.split(".")
    fields = parts[1].split("-") if len(parts) > 2 else []
    if len(fields) != 3 or not fields[2].isdigit():
        return True
    _, host, pid = fields
    if host != host_tag():
        with contextlib.suppress(OSError):
            return time.time() - os.lstat(path).st_mtime > FOREIGN_TMP_SECONDS
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False
