"""Content-addressed segment cache on disk, safe across processes: ``SegmentCache``.

An entry only counts once its COMPLETE marker exists, and it is moved into place whole
by one rename on the same filesystem, so a crash or a full disk never leaves a
half-written entry that looks complete. Cached files are read-only, and nothing found on
disk is trusted: ``lookup`` returns an entry only after checking the digests its
manifest records (``integrity.py``). Directories are created only when something is
written, so collecting, or reusing a complete read-only cache, writes nothing. The
cache's parts (locks, failure records, deferred files, pruning) are objects it owns.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..toolchain import current as toolchain
from . import fingerprints, integrity, layout, staging
from .deferred import DeferredFiles
from .errors import CacheError, describe_os_error
from .failures import Failure, FailureRecords
from .integrity import Damage, Mismatch
from .layout import DEFERRED, LAYOUT, MANIFEST, MARKER, VERIFIED
from .locks import KeyLock, KeyLocks
from .pruning import Pruning


@dataclass(frozen=True)
class Entry:
    """A complete, published entry (as returned by ``lookup``: verified)."""

    key: str
    path: Path
    data: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def manifest(self) -> dict[str, Any]:
        if self.data is not None:
            return self.data
        return json.loads((self.path / MANIFEST).read_text())

    @property
    def output_model(self) -> Path:
        return self.path / toolchain().output_model

    @property
    def build_dir(self) -> Path:
        return self.path / "build"


class SegmentCache:
    """The local cache under ``root``: entries, and the parts that keep them."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.base = self.root / LAYOUT
        #: the umask of the process that made the cache (the run's), which every entry's
        #: modes follow whatever umask a build's steps set in their own process
        self.umask = layout.current_umask()
        self.locks = KeyLocks(self.root, self.base)
        self.failures = FailureRecords(self.base, self.umask, self.locks)
        #: files entries left on a remote cache (``deferred.source``: the remote tier's)
        self.deferred = DeferredFiles(self.base, self.locks)
        self.pruning = Pruning(self.base, self.locks, self.failures)

    # -- paths ------------------------------------------------------------------
    def entry_path(self, key: str) -> Path:
        return layout.entry_path(self.base, key)

    def work_dir(self, key: str) -> Path:
        return layout.work_dir(self.base, key)

    def fresh_work_dir(self, key: str) -> Path:
        """An empty FINN_BUILD_DIR for building ``key`` (call with the key's lock held)."""
        path = self.work_dir(key)
        if path.exists():
            layout.remove_tree(path)
        return path

    def lock(self, key: str) -> KeyLock:
        """``key``'s file lock: whoever holds it builds the key or moves it aside. Only
        building and repairing lock: reusing a verified entry writes nothing, so a
        read-only cache works. Exclusive between the tasks of one process too."""
        return self.locks.lock(key)

    # -- the disk ---------------------------------------------------------------
    def nearly_full(self, text: str = "") -> bool:
        """Whether a build that failed (``text``: what it said) may have failed of a full
        disk or quota: then it is the machine's fault and never recorded as the design's."""
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return True
        try:
            disk = os.statvfs(self.base)
        except OSError:
            return False
        return disk.f_bavail * disk.f_frsize < 1 << 20  # under 1 MiB left

    def check_writable(self) -> None:
        """Raise CacheError unless this cache can be used: a cache that holds entries may
        be read-only (reusing them writes nothing; a build it cannot do fails that design
        with a clear message), but a new or empty one is only useful if it can be created
        and written. Creates nothing."""
        if self._has_entries():
            return
        probe = self.root
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            raise CacheError(
                f"brainsmith cache {self.root} cannot be created: {probe} is not a directory; "
                "choose another cache with --brainsmith-cache DIR (or BRAINSMITH_CACHE)"
            )
        if not os.access(probe, os.W_OK | os.X_OK):
            readonly = layout.read_only_fs(probe)
            why = "is on a read-only file system" if readonly else "is not writable by this user"
            raise CacheError(
                f"brainsmith cache {self.root} is not writable: {probe} {why}. An empty cache "
                "must be writable to build segments into (it is only read once it holds every "
                "needed entry): make it writable or choose another cache with "
                "--brainsmith-cache DIR (or BRAINSMITH_CACHE)"
            )

    def _has_entries(self) -> bool:
        with contextlib.suppress(OSError):
            for shard in (self.base / "entries").iterdir():
                if any(shard.iterdir()):
                    return True
        return False

    # -- reading ----------------------------------------------------------------
    def lookup(self, key: str) -> Entry | None:
        """The entry of ``key`` if it is published and intact. A damaged one is moved
        aside (under the key's lock, after checking again), reported with a
        CacheIntegrityWarning, and None is returned so that the caller rebuilds it."""
        path = self.entry_path(key)
        if not (path / MARKER).is_file():
            return None
        manifest, damage = integrity.verify(key, path)
        if damage is None:
            return Entry(key, path, manifest)
        return self._repair(key, damage)

    def verify_file(self, key: str, name: str) -> str | None:
        """Check one file of ``key``'s entry again right before it is used (the checkpoint
        a child build resumes from): None if intact; else what is wrong, after the entry was
        moved aside and reported (rebuild it, then use it)."""
        path = self.entry_path(key)
        if not (path / MARKER).is_file():
            return f"entry {key} is gone"
        manifest, damage = integrity.read_manifest(key, path)
        if damage is None:
            assert manifest is not None
            left = self.deferred.fetch(key, path, manifest, name)
            if left is not None:  # not the entry's damage: it is dropped and built here
                self.deferred.drop(key, path)
                return left
            damage = integrity.verify_files(path, manifest, only=name)
        if damage is None:
            return None
        self._repair(key, damage)
        return str(damage)

    def _repair(self, key: str, damage: Damage) -> Entry | None:
        """Move a damaged entry aside under its lock, unless another process rebuilt it
        meanwhile (checked again while holding the lock): that entry is returned."""
        path = self.entry_path(key)
        try:
            with self.locks.own(key):
                if not (path / MARKER).is_file():
                    return None
                manifest, again = integrity.verify(key, path)
                if again is None:
                    return Entry(key, path, manifest)  # rebuilt by another process meanwhile
                integrity.quarantine(self.base, key, path, again)
        except CacheError as exc:
            raise CacheError(
                f"cache entry {key[:12]}{integrity.of_segment(damage)} is damaged: {damage}; "
                f"it cannot be moved aside and rebuilt: {exc}"
            ) from exc
        return None

    def failure(self, key: str) -> Failure | None:
        """``key``'s recorded failure (``failures.get``)."""
        return self.failures.get(key)

    def forget_failure(self, key: str) -> None:
        self.failures.forget(key)

    def entries(self) -> Iterator[Entry]:
        for shard in layout.listdir(self.base / "entries"):
            for path in layout.listdir(shard):
                if (path / MARKER).is_file():
                    yield Entry(path.name, path)

    # -- writing ----------------------------------------------------------------
    def new_staging(self, key: str) -> Path:
        """A fresh temporary directory for building ``key`` (call with its lock held)."""
        return staging.new_staging(self.base, key)

    def discard_staging(self, staged: Path) -> None:
        """Remove a staging directory that was not published (nothing if it was)."""
        staging.discard(staged)

    @contextlib.contextmanager
    def staging(self, key: str) -> Iterator[Path]:
        """A fresh temporary directory for building ``key``; removed unless published."""
        tmp = self.new_staging(key)
        try:
            yield tmp
        finally:
            self.discard_staging(tmp)

    def publish(
        self,
        key: str,
        staged: Path,
        manifest: dict[str, Any],
        *,
        expected: dict[str, dict[str, Any]] | None = None,
        deferred: Collection[str] = (),
    ) -> Entry:
        """Record every file's digest in the manifest, write it and the marker into
        ``staged`` and move it into place. Files fetched from a remote cache come with
        the digests they must have (``expected``, their manifest's): a file that differs,
        is missing or is not listed raises Mismatch and nothing is published; the
        ``deferred`` files were left behind (fetched when first used, ``verify_file``)."""
        target = self.entry_path(key)
        try:
            layout.make_read_only(staged, self.umask)
            fingerprints.settle(staged)
            files, seen = fingerprints.digests(staged)
            if expected is not None:
                wanted = {n: r for n, r in expected.items() if n not in deferred}
                damage = integrity.difference(files, wanted, manifest.get("segment"))
                if damage is not None:
                    raise Mismatch(damage)
                files = dict(sorted(expected.items()))
                if deferred:
                    layout.write_json(staged / DEFERRED, sorted(deferred))
                    os.chmod(staged / DEFERRED, 0o444 & ~self.umask)
            manifest = {**manifest, "files": files}
            layout.write_json(staged / MANIFEST, manifest)
            os.chmod(staged / MANIFEST, 0o444 & ~self.umask)
            if seen and fingerprints.write_memo(staged / VERIFIED, seen):  # first reuse reads none
                os.chmod(staged / VERIFIED, 0o444 & ~self.umask)
            layout.write_marker(staged, manifest.get("segment"))
            os.chmod(staged / MARKER, 0o444 & ~self.umask)
            target.parent.mkdir(parents=True, exist_ok=True)
            staging.set_aside(self.base, key, target)  # a forced rebuild replaces the old entry
            os.rename(staged, target)
        except OSError as exc:
            raise CacheError(
                describe_os_error(exc, f"publishing segment {key} in {self.base}")
            ) from exc
        self.forget_failure(key)
        return Entry(key, target, manifest)
