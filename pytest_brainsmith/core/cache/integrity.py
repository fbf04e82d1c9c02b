"""Nothing found on disk is trusted: an entry is used only once its files match the
digests its manifest recorded when it was published.

A file whose stat fingerprint was recorded when it was last found intact is not read
again (``fingerprints.py``); a damaged entry is moved aside into quarantine/ with a note
saying why, reported with a ``CacheIntegrityWarning``, and rebuilt by the caller.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..toolchain import current as toolchain
from . import fingerprints
from .errors import CacheError, CacheIntegrityWarning, why
from .layout import MANIFEST, QUARANTINE_NOTE, VERIFIED, deferred_names, marked_segment, write_json

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Damage:
    """What is wrong with an entry: the file and why."""

    file: str
    why: str
    segment: str | None = None  # from the manifest, when it is readable

    def __str__(self) -> str:
        return f"{self.file}: {self.why}"


class Mismatch(Exception):
    """Files handed to ``publish`` with the digests they must have do not have them
    (an entry fetched from a remote cache): nothing was published."""

    def __init__(self, damage: Damage) -> None:
        super().__init__(str(damage))
        self.damage = damage


def check_manifest(
    key: str, manifest: Any, segment: str | None = None
) -> tuple[Manifest | None, Damage | None]:
    """``manifest`` if it is one of ``key``'s entry (a JSON object naming the key and
    listing file digests), else what is wrong with it."""
    if not isinstance(manifest, dict):
        return None, Damage(MANIFEST, "is not a JSON object", segment)
    segment = manifest.get("segment") or segment
    if manifest.get("key") != key:
        return None, Damage(MANIFEST, f"names key {manifest.get('key')!r}", segment)
    if not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        return None, Damage(MANIFEST, "lists no file digests", segment)
    return manifest, None


def read_manifest(key: str, path: Path) -> tuple[Manifest | None, Damage | None]:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        return None, Damage(MANIFEST, "is missing", marked_segment(path))
    except (OSError, ValueError) as exc:
        return None, Damage(
            MANIFEST, f"is unreadable ({why(exc, path / MANIFEST)})", marked_segment(path)
        )
    checked, damage = check_manifest(key, manifest)
    if damage is not None and damage.segment is None:  # COMPLETE names it (read only now)
        damage = Damage(damage.file, damage.why, marked_segment(path))
    return checked, damage


def verify(key: str, path: Path) -> tuple[Manifest | None, Damage | None]:
    """``key``'s entry at ``path``: its manifest, and what is wrong with it (None: intact)."""
    manifest, damage = read_manifest(key, path)
    if damage is None:
        assert manifest is not None
        damage = verify_files(path, manifest)
    return manifest, damage


def verify_files(path: Path, manifest: Manifest, only: str | None = None) -> Damage | None:
    """Check the manifest's files (or just ``only``): a stat fingerprint recorded in
    VERIFIED (or, for a read-only cache, in the user's cache directory) when the file
    was last found intact spares reading it again."""
    files: dict[str, dict[str, Any]] = manifest["files"]
    segment = manifest.get("segment")
    # the checkpoint first: the name to report of its hard-linked twin
    checkpoint = toolchain().output_model
    names = [only] if only is not None else sorted(files, key=lambda n: (n != checkpoint, n))
    memo = fingerprints.read_memo(path / VERIFIED)
    user_memo: dict[str, Any] | None = None  # read when the entry's own is not enough
    stamp = time.time_ns()  # before any stat: a file changed after it has a later ctime
    seen: dict[str, list[int]] = {}
    hashed: dict[tuple[int, int], str] = {}  # hard links (output.onnx) are read once
    for name in names:
        expected = files.get(name)
        if expected is None:
            return Damage(name, "is not listed in the manifest", segment)
        file = path / name
        try:
            st = os.lstat(file)
        except FileNotFoundError:
            if only is None and name in deferred_names(path):
                continue  # left on a remote cache: checked when fetched (verify_file)
            return Damage(name, "is missing", segment)
        except OSError as exc:
            return Damage(name, f"cannot be read ({why(exc, file)})", segment)
        if "link" in expected:
            if not stat.S_ISLNK(st.st_mode) or os.readlink(file) != expected["link"]:
                return Damage(name, "is not the symlink the manifest records", segment)
            continue
        if not stat.S_ISREG(st.st_mode):
            return Damage(name, "is not a regular file", segment)
        if st.st_size != expected.get("size"):
            return Damage(
                name, fingerprints.size_mismatch(st.st_size, expected.get("size")), segment
            )
        fingerprint = fingerprints.fingerprint(st)
        if memo.get(name) == fingerprint:
            continue  # unchanged since it was last found intact
        if user_memo is None:
            user_memo = fingerprints.read_memo(fingerprints.user_memo(path))
        if user_memo.get(name) == fingerprint:
            continue
        inode = (st.st_dev, st.st_ino)
        try:
            digest = hashed.get(inode) or fingerprints.sha256_of(file)
        except OSError as exc:
            return Damage(name, f"cannot be read ({why(exc, file)})", segment)
        hashed[inode] = digest
        if digest != expected.get("sha256"):
            return Damage(name, "does not match its sha256 in the manifest (rewritten)", segment)
        if fingerprints.settled(stamp, st):  # vouch for it by stat from now on
            seen[name] = fingerprint
    if seen:
        kept = {name: value for name, value in memo.items() if name in files}
        if not fingerprints.write_memo(path / VERIFIED, {**kept, **seen}):
            # a read-only cache: remember them for this user instead
            kept = {name: value for name, value in (user_memo or {}).items() if name in files}
            fingerprints.write_memo(fingerprints.user_memo(path), {**kept, **seen})
    return None


def difference(
    files: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]], segment: str | None
) -> Damage | None:
    """The first file of ``files`` (as ``fingerprints.digests`` found them) that
    ``expected`` does not describe, or that it describes and is missing."""
    for name in sorted(set(files) | set(expected)):
        got, want = files.get(name), expected.get(name)
        if want is None:
            return Damage(name, "is not listed in the manifest", segment)
        if got is None:
            return Damage(name, "is missing", segment)
        if got.get("size") != want.get("size"):
            return Damage(
                name, fingerprints.size_mismatch(got.get("size"), want.get("size")), segment
            )
        if got != want:
            return Damage(name, "does not match its sha256 in the manifest (rewritten)", segment)
    return None


def quarantine(base: Path, key: str, path: Path, damage: Damage) -> Path:
    """Move a damaged entry or failure record (its key's lock held) aside into
    quarantine/, with a note saying why, and warn about it."""
    kind = "failure record" if path.parent.name == "failures" else "cache entry"
    when = time.strftime("%Y%m%dT%H%M%S")
    suffix = ".failure" if kind == "failure record" else ""
    target = base / "quarantine" / f"{key}{suffix}.{when}.{time.time_ns() % 10**9}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, target)
    except OSError as exc:
        raise CacheError(why(exc, path)) from exc
    note = {
        "key": key,
        "segment": damage.segment,
        "file": damage.file,
        "why": damage.why,
        "from": str(path),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": os.uname().nodename,
        "pid": os.getpid(),
    }
    with contextlib.suppress(OSError):
        write_json(target / QUARANTINE_NOTE, note)
    warnings.warn(
        f"brainsmith: {kind} {key[:12]}{of_segment(damage)} is damaged: {damage}; "
        f"moved aside to {target} and rebuilt",
        CacheIntegrityWarning,
        stacklevel=caller_level(),
    )
    return target


def of_segment(damage: Damage) -> str:
    return f" (segment {damage.segment})" if damage.segment else ""


def caller_level(package: str = os.path.dirname(__file__)) -> int:
    """warnings.warn's stacklevel that points at the first caller outside ``package``
    (a folder; by default this one). Call it from the function that warns: a wrapper
    around it would be counted as a level."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == package:
        frame, level = frame.f_back, level + 1
    return level
