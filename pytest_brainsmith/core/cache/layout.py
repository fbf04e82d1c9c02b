"""The cache's layout on disk: the names of its folders and bookkeeping files, and the
file operations every part of it shares (markers, read-only modes, whole-tree removal).

Layout under the cache root (``v1/`` is the layout version)::

    entries/<k[:2]>/<key>/      a built segment: manifest.json, output.onnx,
                                build/ (FINN's output dir), COMPLETE (written last),
                                VERIFIED (stat fingerprints of files found intact)
    failures/<key>/             a failed segment: failure.json and its build log
    locks/<key>.lock            one filelock per key: whoever holds it builds
    tmp/<key>.<random>/         builds in progress, published by os.rename
    work/<key>/                 FINN_BUILD_DIR of the segment (generated code that
                                checkpoints refer to by absolute path)
    quarantine/<key>.<when>/    damaged entries moved aside, kept for inspection
                                (QUARANTINE.json says why); --brainsmith-prune removes them
    verify/<key>/<hash>.json    the entry's verification records (core/verification.py)
    executions/<digest>.npz     outputs of executing a model (execution_memo.py)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LAYOUT = "v1"
MARKER = "COMPLETE"
MANIFEST = "manifest.json"
FAILURE = "failure.json"
VERIFIED = "VERIFIED"
#: An entry's files left on a remote cache, fetched when first used (a JSON list).
DEFERRED = "DEFERRED"
QUARANTINE_NOTE = "QUARANTINE.json"
#: Files of an entry that are not its content (written around the content).
BOOKKEEPING = {MANIFEST, MARKER, VERIFIED, DEFERRED}


def listdir(path: Path) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


def write_marker(directory: Path, segment: Any = None) -> None:
    """COMPLETE: when, and the segment (which names the entry if its manifest is lost)."""
    marker = directory / MARKER
    with open(marker, "w") as handle:
        handle.write(f"{time.time()}\n{segment or ''}\n")
        handle.flush()
        os.fsync(handle.fileno())


def marked_segment(path: Path) -> str | None:
    """The segment COMPLETE names: what names an entry whose manifest is lost."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        lines = (path / MARKER).read_text().splitlines()
        if len(lines) > 1 and lines[1]:
            return lines[1][:1000]
    return None


def deferred_names(entry: Path) -> list[str]:
    """The files ``entry`` left on a remote cache (its DEFERRED list; none without one)."""
    try:
        names = json.loads((entry / DEFERRED).read_text())
    except (OSError, ValueError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def make_read_only(root: Path, umask: int) -> None:
    """The same modes for every entry, whatever the build's steps did to their umask or
    their files: folders 0777 and files read-only (0444, 0555 if executable), less the
    run's ``umask``, so every user of a shared cache reads what any one published."""
    for dirpath, _, files in os.walk(root):
        os.chmod(dirpath, 0o777 & ~umask)
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                os.chmod(path, (0o555 if executable else 0o444) & ~umask)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def remove_tree(path: Path) -> None:
    def make_writable(func: Callable[..., Any], target: str, _: Any) -> None:
        os.chmod(os.path.dirname(target), 0o755)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(target, 0o644)
        func(target)

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=make_writable)  # onexc is 3.12+
    else:
        path.unlink()


def entry_path(base: Path, key: str) -> Path:
    return base / "entries" / key[:2] / key


def work_dir(base: Path, key: str) -> Path:
    return base / "work" / key


#: Subfolder of verification records (``verify/<segment key>/<plan hash>.json``):
#: beside the entries, not in them (core/verify/records.py writes and reads them).
RECORDS = "verify"


def record_path(base: Path | str, key: str, digest: str) -> Path:
    """Where segment ``key``'s verification record for the plan ``digest`` lives."""
    return Path(base) / key / f"{digest}.json"
