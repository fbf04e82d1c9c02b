"""How a cached file is known intact without reading it: its sha256 once, then its stat.

Like git's index, a file whose stat fingerprint (size, mtime, ctime, inode, device)
matches the one recorded when it was last found intact is not read again. A write sets
mtime and ctime to the current timestamp tick, so a fingerprint is only recorded once
the older of the two lies a tick before the stat (else a write in that same tick would
not show): a truncated or rewritten file, even with its mtime set back, is always read
and caught. Publishing sets the mtime of the files FINN wrote last a tick back
(``settle``) so that every fingerprint is recorded and the first reuse reads nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from .layout import BOOKKEEPING, VERIFIED

#: A stat fingerprint is recorded only for a file whose mtime (or ctime, the older) lies
#: this far before the stat: a later write then sets a different one. Kernel timestamps
#: follow a clock that advances in ticks of 1-10 ms; files with whole-second timestamps
#: live on a filesystem that keeps only seconds (git's "racily clean" entries).
TICK_NS = 20_000_000
COARSE_TICK_NS = 2_100_000_000


def sha256_of(path: Path) -> str:
    """A file's sha256, read in blocks (what manifests record)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def size_mismatch(got: Any, recorded: Any) -> str:
    """Why a file of ``got`` bytes is not the one of ``recorded`` bytes, in words that
    say which way it differs (a longer file was appended to, not truncated)."""
    how = "truncated or rewritten"
    if isinstance(got, int) and isinstance(recorded, int) and got > recorded:
        how = "longer: appended to or rewritten"
    return f"has {got} bytes where the manifest records {recorded} ({how})"


def fingerprint(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def settled(stamp: int, st: os.stat_result) -> bool:
    """Whether any write after a stat taken at ``stamp`` changes the file's fingerprint:
    a write sets mtime and ctime to the current tick, so the older of the two must lie a
    tick before the stat (else a write in that same tick would leave both as they are)."""
    older = min(st.st_mtime_ns, st.st_ctime_ns)
    margin = COARSE_TICK_NS if older % 1_000_000_000 == 0 else TICK_NS
    return stamp - older > margin


def settle(root: Path) -> None:
    """Make the files FINN wrote last a timestamp tick old, so that publishing can record
    every fingerprint: their mtime is set back a tick (rather than waiting for the tick
    to pass, up to TICK_NS per published entry). Any later write sets mtime to the
    current tick, which then differs from the one recorded. Files already a tick old, and
    files linked from outside the entry (another entry's), are left as they are."""
    now = time.time_ns()
    found: dict[tuple[int, int], tuple[str, os.stat_result, int]] = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                inode = (st.st_dev, st.st_ino)
                seen = found.get(inode)
                found[inode] = (path, st, seen[2] + 1 if seen else 1)
    for path, st, links in found.values():
        older = min(st.st_mtime_ns, st.st_ctime_ns)
        if older % 1_000_000_000 == 0 or now - st.st_mtime_ns > TICK_NS or st.st_nlink > links:
            continue  # whole-second timestamps, settled already, or shared with another entry
        with contextlib.suppress(OSError):
            os.utime(path, ns=(st.st_atime_ns, now - TICK_NS - 1_000_000), follow_symlinks=False)


def digests(root: Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[int]]]:
    """({relative path: {size, sha256} or {link}}, stat fingerprints of the settled ones)
    of every file under ``root``."""
    files: dict[str, dict[str, Any]] = {}
    seen: dict[str, list[int]] = {}
    hashed: dict[tuple[int, int], str] = {}
    stamp = time.time_ns()  # before any stat
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel in BOOKKEEPING or rel.startswith(f"{VERIFIED}."):
                continue
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                files[rel] = {"link": os.readlink(path)}
                continue
            inode = (st.st_dev, st.st_ino)
            if inode not in hashed:
                hashed[inode] = sha256_of(path)
            files[rel] = {"size": st.st_size, "sha256": hashed[inode]}
            if settled(stamp, st):
                seen[rel] = fingerprint(st)
    return dict(sorted(files.items())), seen


def read_memo(file: Path) -> dict[str, Any]:
    try:
        memo = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def write_memo(file: Path, memo: dict[str, list[int]]) -> bool:
    """Best effort (whether it was written): without one, files are read to verify them."""
    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(memo, sort_keys=True))
        os.replace(tmp, file)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False
    return True


def user_memo(entry: Path) -> Path:
    """Where this user keeps the fingerprints of an entry in a cache it cannot write (a
    shared read-only copy), so that it is read once and not on every run."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    name = hashlib.sha256(str(entry.absolute()).encode()).hexdigest()[:32]
    return Path(root) / "pytest-brainsmith" / "verified" / f"{name}.json"
