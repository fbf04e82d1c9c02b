"""Content-addressed segment cache on disk, safe across processes.

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

An entry fetched from a remote cache (``remote_cache.py``) may leave its checkpoint
behind: its manifest records it, DEFERRED names it, and ``verify_file`` fetches it
through ``deferred_source`` when it is first needed (a child build resumes from it).

An entry only counts once its COMPLETE marker exists, and it is moved into place
whole by one rename on the same filesystem, so a crash or a full disk never
leaves a half-written entry that looks complete. Cached files are read-only.

Nothing found on disk is trusted: the manifest records every file's size and
sha256 when the entry is published, and ``lookup`` returns an entry only after
checking them. Like git's index, a file whose stat fingerprint (size, mtime,
ctime, inode, device) matches the one recorded when it was last found intact is
not read again. A write sets mtime and ctime to the current timestamp tick, so a
fingerprint is only recorded once the older of the two lies a tick before the
stat (else a write in that same tick would not show): a truncated or rewritten
file, even with its mtime set back, is always read and caught. Publishing sets the
mtime of the files FINN wrote last a tick back (a later write sets another) and
records every fingerprint, so the first reuse reads nothing; a cache copied to another
filesystem (new inodes, same content) is read once and then trusted. A damaged
entry is moved aside under its key's lock, reported with a
``CacheIntegrityWarning`` and rebuilt by the caller.

Directories are created only when something is written, so collecting, or
reusing a complete read-only cache, writes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .toolchain import current as toolchain

LAYOUT = "v1"
MARKER = "COMPLETE"
MANIFEST = "manifest.json"
FAILURE = "failure.json"
VERIFIED = "VERIFIED"
#: An entry's files left on a remote cache, fetched when first used (a JSON list).
DEFERRED = "DEFERRED"
QUARANTINE_NOTE = "QUARANTINE.json"
#: Files of an entry that are not its content (written around the content).
_BOOKKEEPING = {MANIFEST, MARKER, VERIFIED, DEFERRED}
#: A stat fingerprint is recorded only for a file whose mtime (or ctime, the older) lies
#: this far before the stat: a later write then sets a different one. Kernel timestamps
#: follow a clock that advances in ticks of 1-10 ms; files with whole-second timestamps
#: live on a filesystem that keeps only seconds (git's "racily clean" entries).
TICK_NS = 20_000_000
COARSE_TICK_NS = 2_100_000_000


class CacheError(Exception):
    """The cache itself failed (disk full, permissions): not the design's fault."""


class CacheIntegrityWarning(UserWarning):
    """A cache entry was damaged (a file truncated, rewritten or missing) and moved aside."""


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


@dataclass(frozen=True)
class Failure:
    """A recorded build failure: reused instead of building again."""

    key: str
    path: Path
    data: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def record(self) -> dict[str, Any]:
        if self.data is not None:
            return self.data
        return json.loads((self.path / FAILURE).read_text())


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


#: ``deferred_source(key, name, record, dest)``: download the file ``record`` (its size
#: and sha256) describes to ``dest``, checked; None when done, else why it cannot.
DeferredSource = Callable[[str, str, dict[str, Any], Path], "str | None"]


class EntryInUse(CacheError):
    """Another process holds the key's lock (it builds or repairs it): left alone."""


class CacheLockError(CacheError, OSError):
    """A key's lock cannot be taken (read-only cache, a directory in its place); an
    OSError too, for callers that treat lock failures as such."""


class KeyLock:
    """The file lock of one key, used like filelock's (``with``, ``acquire``, ``release``).
    A builder's lock (``SegmentCache.lock``) is exclusive, within this process too: a
    second task asking for a key another task of the same engine builds waits like one in
    another process (one build per key). The cache's own uses while its caller may hold
    the key (``lookup`` moving a damaged entry aside) nest in whatever lock of this cache
    holds it. A failure to take it is a CacheLockError that says what is needed."""

    def __init__(self, cache: SegmentCache, key: str, *, nests: bool = False) -> None:
        self.cache = cache
        self.key = key
        self.path = cache.base / "locks" / f"{key}.lock"
        self._lock = FileLock(str(self.path))
        self._nests = nests
        self._nested = 0  # acquired while another lock of this cache held the key

    @property
    def is_locked(self) -> bool:
        return self._lock.is_locked or self._nested > 0

    def acquire(self, timeout: float = -1) -> KeyLock:
        if self._nests and self.key in self.cache._held and not self._lock.is_locked:
            self._nested += 1
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire(timeout=timeout)
        except Timeout:
            raise
        except OSError as exc:
            raise CacheLockError(self.cache._lock_error(self.path, self.key, exc)) from exc
        self.cache._held.add(self.key)
        return self

    def release(self) -> None:
        if self._nested:
            self._nested -= 1
            return
        self._lock.release()
        if not self._lock.is_locked:
            self.cache._held.discard(self.key)

    def __enter__(self) -> KeyLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class SegmentCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.base = self.root / LAYOUT
        self._held: set[str] = set()  # keys whose lock this object holds
        #: where files an entry left on a remote cache come from (remote_cache.py)
        self.deferred_source: DeferredSource | None = None
        #: the umask of the process that made the cache (the run's), which every entry's
        #: modes follow whatever umask a build's steps set in their own process
        self.umask = _current_umask()

    # -- paths ------------------------------------------------------------------
    def entry_path(self, key: str) -> Path:
        return self.base / "entries" / key[:2] / key

    def failure_path(self, key: str) -> Path:
        return self.base / "failures" / key

    def work_dir(self, key: str) -> Path:
        return self.base / "work" / key

    def fresh_work_dir(self, key: str) -> Path:
        """An empty FINN_BUILD_DIR for building ``key`` (call with the key's lock held)."""
        path = self.work_dir(key)
        if path.exists():
            _remove_tree(path)
        return path

    def lock(self, key: str) -> KeyLock:
        """``key``'s file lock: whoever holds it builds the key or moves it aside. Only
        building and repairing lock: reusing a verified entry writes nothing, so a
        read-only cache works. Exclusive between the tasks of one process too."""
        return KeyLock(self, key)

    def _own_lock(self, key: str) -> KeyLock:
        """``key``'s lock for the cache's own repairs, which nest in the caller's."""
        return KeyLock(self, key, nests=True)

    def _lock_error(self, path: Path, key: str, exc: OSError) -> str:
        if path.is_dir():
            return (
                f"the lock file {path} is a directory; it must be a file that pytest-brainsmith "
                f"creates: remove the directory (nothing else uses it) to build entry {key}"
            )
        return (
            f"cannot lock {path} to build cache entry {key}: {_why(exc, path)}. Building a "
            f"segment that is not in the cache needs write access to {self.root}; make it "
            "writable or choose another cache with --brainsmith-cache DIR (or BRAINSMITH_CACHE)"
        )

    @contextlib.contextmanager
    def held_by_caller(self, key: str) -> Iterator[None]:
        """In a worker building ``key``: the engine that started the build holds its lock,
        so this object's own uses of the lock (moving a damaged entry aside) nest in it
        rather than wait for it (a worker forked before the lock was taken, which a
        pooled one is, would otherwise wait forever)."""
        if key in self._held:
            yield
            return
        self._held.add(key)
        try:
            yield
        finally:
            self._held.discard(key)

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
            readonly = _read_only_fs(probe)
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
        manifest, damage = self._verify(key, path)
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
        manifest, damage = self._read_manifest(key, path)
        if damage is None:
            assert manifest is not None
            left = self._fetch_deferred(key, path, manifest, name)
            if left is not None:  # not the entry's damage: it is dropped and built here
                self._drop(key, path)
                return left
            damage = self._verify_files(path, manifest, only=name)
        if damage is None:
            return None
        self._repair(key, damage)
        return str(damage)

    def _fetch_deferred(
        self, key: str, path: Path, manifest: dict[str, Any], name: str
    ) -> str | None:
        """Fetch ``name`` (and the files with its content) if the entry left it on a
        remote cache; None when it is here now (or never was deferred), else why not."""
        deferred = _deferred(path)
        if name not in deferred or os.path.lexists(path / name):
            return None
        files: dict[str, dict[str, Any]] = manifest["files"]
        record = files.get(name) or {}
        if self.deferred_source is None:
            return (
                f"{name} of entry {key[:12]} was left on a remote cache and no remote cache "
                "is configured"
            )
        tmp = self.base / "tmp" / f"{key}.{_owner('deferred')}.{time.time_ns()}"
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            why = self.deferred_source(key, name, record, tmp)
            if why is not None:
                return why
            os.chmod(tmp, 0o444)
            twins = [n for n in deferred if files.get(n, {}).get("sha256") == record.get("sha256")]
            for twin in sorted(set(twins) | {name}):
                (path / twin).parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileExistsError):  # another process was first
                    os.link(tmp, path / twin)
        except OSError as exc:
            return f"{name} of entry {key[:12]} cannot be fetched into {path}: {_why(exc, path)}"
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return None

    def _drop(self, key: str, path: Path) -> None:
        """Remove an entry whose deferred file cannot be had (no damage of its own: no
        quarantine, no warning; the remote cache said why), so that it is built here."""
        with contextlib.suppress(CacheError, OSError), self._own_lock(key):
            if (path / MARKER).is_file():
                self._set_aside(key, path)

    def failure(self, key: str) -> Failure | None:
        path = self.failure_path(key)
        if not (path / MARKER).is_file():
            return None
        try:
            record = _read_record(path)
        except (OSError, ValueError) as exc:
            # an unreadable failure record proves nothing: move it aside, build again;
            # unless it was only being replaced (checked again under the lock)
            damage = Damage(FAILURE, f"is unreadable ({_why(exc, path / FAILURE)})")
            if not (path / MARKER).is_file():
                return None  # it was being removed, not damaged
            lock = self._own_lock(key)
            try:
                lock.acquire(timeout=0)
            except Timeout:  # its builder replaces it: no failure to go by meanwhile
                return None
            try:
                return Failure(key, path, _read_record(path))
            except (OSError, ValueError):
                if (path / MARKER).is_file():
                    self._quarantine(key, path, damage)
            finally:
                lock.release()
            return None
        return Failure(key, path, record)

    def entries(self) -> Iterator[Entry]:
        for shard in _listdir(self.base / "entries"):
            for path in _listdir(shard):
                if (path / MARKER).is_file():
                    yield Entry(path.name, path)

    def failures(self) -> Iterator[Failure]:
        for path in _listdir(self.base / "failures"):
            if (path / MARKER).is_file():
                yield Failure(path.name, path)

    def quarantined(self) -> list[Path]:
        return _listdir(self.base / "quarantine")

    def descendants(self, roots: set[str]) -> set[str]:
        """Keys of the entries built (directly or not) on the output of ``roots``, by
        their manifests' input (the content digest of the model they read): what a
        folding search's trials below them built."""
        children: dict[str, list[str]] = {}  # output digest -> entries that read it
        outputs: dict[str, str] = {}  # key -> its output's digest
        for shard in _listdir(self.base / "entries"):
            for path in _listdir(shard):
                try:
                    manifest = json.loads((path / "manifest.json").read_text())
                    source = manifest["components"]["input"].get("parent_output")
                    output = manifest["files"].get("output.onnx", {}).get("sha256")
                except (OSError, ValueError, KeyError, TypeError, AttributeError):
                    continue
                if isinstance(output, str):
                    outputs[path.name] = output
                if isinstance(source, str):
                    children.setdefault(source, []).append(path.name)
        found: set[str] = set()
        stack = list(roots)
        while stack:
            for child in children.get(outputs.get(stack.pop(), ""), []):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        return found

    def prunable(self, keep: set[str]) -> list[str]:
        """What ``--brainsmith-prune`` removes: entries and failures whose key is not in
        ``keep``, damaged entries (also in use: they would be rebuilt anyway, as
        ``damaged/<key>``) and everything quarantined (``quarantine/<name>``). Every id is
        accepted by ``remove`` and ``size_bytes``."""
        ids: list[str] = []
        for shard in _listdir(self.base / "entries"):
            for path in _listdir(shard):
                damaged = not (path / MARKER).is_file() or self._verify(path.name, path)[1]
                if path.name not in keep:
                    ids.append(path.name)
                elif damaged:
                    ids.append(f"damaged/{path.name}")
        ids += [f.key for f in self.failures() if f.key not in keep and f.key not in ids]
        ids += [f"quarantine/{p.name}" for p in self.quarantined()]
        return ids

    # -- verification -------------------------------------------------------------
    def _verify(self, key: str, path: Path) -> tuple[dict[str, Any] | None, Damage | None]:
        manifest, damage = self._read_manifest(key, path)
        if damage is None:
            assert manifest is not None
            damage = self._verify_files(path, manifest)
        return manifest, damage

    @staticmethod
    def _read_manifest(key: str, path: Path) -> tuple[dict[str, Any] | None, Damage | None]:
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            return None, Damage(MANIFEST, "is missing", _marked_segment(path))
        except (OSError, ValueError) as exc:
            why = f"is unreadable ({_why(exc, path / MANIFEST)})"
            return None, Damage(MANIFEST, why, _marked_segment(path))
        checked, damage = SegmentCache.check_manifest(key, manifest)
        if damage is not None and damage.segment is None:  # COMPLETE names it (read only now)
            damage = Damage(damage.file, damage.why, _marked_segment(path))
        return checked, damage

    @staticmethod
    def check_manifest(
        key: str, manifest: Any, segment: str | None = None
    ) -> tuple[dict[str, Any] | None, Damage | None]:
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

    def _verify_files(
        self, path: Path, manifest: dict[str, Any], only: str | None = None
    ) -> Damage | None:
        """Check the manifest's files (or just ``only``): a stat fingerprint recorded in
        VERIFIED (or, for a read-only cache, in the user's cache directory) when the file
        was last found intact spares reading it again."""
        files: dict[str, dict[str, Any]] = manifest["files"]
        segment = manifest.get("segment")
        # the checkpoint first: the name to report of its hard-linked twin
        checkpoint = toolchain().output_model
        names = [only] if only is not None else sorted(files, key=lambda n: (n != checkpoint, n))
        memo = _read_memo(path / VERIFIED)
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
                if only is None and name in _deferred(path):
                    continue  # left on a remote cache: checked when fetched (verify_file)
                return Damage(name, "is missing", segment)
            except OSError as exc:
                return Damage(name, f"cannot be read ({_why(exc, file)})", segment)
            if "link" in expected:
                if not stat.S_ISLNK(st.st_mode) or os.readlink(file) != expected["link"]:
                    return Damage(name, "is not the symlink the manifest records", segment)
                continue
            if not stat.S_ISREG(st.st_mode):
                return Damage(name, "is not a regular file", segment)
            if st.st_size != expected.get("size"):
                return Damage(name, size_mismatch(st.st_size, expected.get("size")), segment)
            fingerprint = _fingerprint(st)
            if memo.get(name) == fingerprint:
                continue  # unchanged since it was last found intact
            if user_memo is None:
                user_memo = _read_memo(_user_memo(path))
            if user_memo.get(name) == fingerprint:
                continue
            inode = (st.st_dev, st.st_ino)
            try:
                digest = hashed.get(inode) or sha256_of(file)
            except OSError as exc:
                return Damage(name, f"cannot be read ({_why(exc, file)})", segment)
            hashed[inode] = digest
            if digest != expected.get("sha256"):
                return Damage(
                    name, "does not match its sha256 in the manifest (rewritten)", segment
                )
            if _settled(stamp, st):  # vouch for it by stat from now on
                seen[name] = fingerprint
        if seen:
            kept = {name: value for name, value in memo.items() if name in files}
            if not _write_memo(path / VERIFIED, {**kept, **seen}):
                # a read-only cache: remember them for this user instead
                kept = {name: value for name, value in (user_memo or {}).items() if name in files}
                _write_memo(_user_memo(path), {**kept, **seen})
        return None

    def _repair(self, key: str, damage: Damage) -> Entry | None:
        """Move a damaged entry aside under its lock, unless another process rebuilt it
        meanwhile (checked again while holding the lock): that entry is returned."""
        path = self.entry_path(key)
        try:
            with self._own_lock(key):
                if not (path / MARKER).is_file():
                    return None
                manifest, again = self._verify(key, path)
                if again is None:
                    return Entry(key, path, manifest)  # rebuilt by another process meanwhile
                self._quarantine(key, path, again)
        except CacheError as exc:
            raise CacheError(
                f"cache entry {key[:12]}{_of(damage)} is damaged: {damage}; it cannot be moved aside "
                f"and rebuilt: {exc}"
            ) from exc
        return None

    def _quarantine(self, key: str, path: Path, damage: Damage) -> Path:
        kind = "failure record" if path.parent.name == "failures" else "cache entry"
        when = time.strftime("%Y%m%dT%H%M%S")
        suffix = ".failure" if kind == "failure record" else ""
        target = self.base / "quarantine" / f"{key}{suffix}.{when}.{time.time_ns() % 10**9}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, target)
        except OSError as exc:
            raise CacheError(_why(exc, path)) from exc
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
            _write_json(target / QUARANTINE_NOTE, note)
        warnings.warn(
            f"brainsmith: {kind} {key[:12]}{_of(damage)} is damaged: {damage}; "
            f"moved aside to {target} and rebuilt",
            CacheIntegrityWarning,
            stacklevel=_caller_level(),
        )
        return target

    # -- writing ----------------------------------------------------------------
    def new_staging(self, key: str) -> Path:
        """A fresh temporary directory for building ``key`` (call with its lock held),
        named after its owner (this host and process): what an earlier build of the key
        left behind is removed only once its owner is gone, never another live build's."""
        tmp_root = self.base / "tmp"
        for stale in tmp_root.glob(f"{key}.*"):
            if _abandoned(stale):
                with contextlib.suppress(FileNotFoundError):
                    _remove_tree(stale)
        try:
            tmp_root.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=f"{key}.{_owner('build')}.", dir=tmp_root))
        except OSError as exc:
            raise CacheError(
                f"cannot create a build directory in {tmp_root}: {_why(exc, tmp_root)}"
            ) from exc

    def discard_staging(self, staged: Path) -> None:
        """Remove a staging directory that was not published (nothing if it was)."""
        if staged.exists():
            with contextlib.suppress(OSError):
                _remove_tree(staged)

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
            _make_read_only(staged, self.umask)
            _settle(staged)
            files, seen = _digests(staged)
            if expected is not None:
                wanted = {n: r for n, r in expected.items() if n not in deferred}
                damage = _difference(files, wanted, manifest.get("segment"))
                if damage is not None:
                    raise Mismatch(damage)
                files = dict(sorted(expected.items()))
                if deferred:
                    _write_json(staged / DEFERRED, sorted(deferred))
                    os.chmod(staged / DEFERRED, 0o444 & ~self.umask)
            manifest = {**manifest, "files": files}
            _write_json(staged / MANIFEST, manifest)
            os.chmod(staged / MANIFEST, 0o444 & ~self.umask)
            if seen and _write_memo(staged / VERIFIED, seen):  # the first reuse reads none
                os.chmod(staged / VERIFIED, 0o444 & ~self.umask)
            _write_marker(staged, manifest.get("segment"))
            os.chmod(staged / MARKER, 0o444 & ~self.umask)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._set_aside(key, target)  # a forced rebuild replaces the old entry
            os.rename(staged, target)
        except OSError as exc:
            raise CacheError(
                _describe_os_error(exc, f"publishing segment {key} in {self.base}")
            ) from exc
        self.forget_failure(key)
        return Entry(key, target, manifest)

    def record_failure(self, key: str, staged: Path, record: dict[str, Any]) -> Failure:
        target = self.failure_path(key)
        try:
            _make_read_only(staged, self.umask)
            _write_json(staged / FAILURE, record)
            _write_marker(staged, record.get("segment"))
            for name in (FAILURE, MARKER):
                os.chmod(staged / name, 0o444 & ~self.umask)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._set_aside(key, target)
            os.rename(staged, target)
        except OSError as exc:
            raise CacheError(
                _describe_os_error(exc, f"recording the failure of segment {key}")
            ) from exc
        return Failure(key, target, record)

    def forget_failure(self, key: str) -> None:
        self._set_aside(key, self.failure_path(key))

    def _set_aside(self, key: str, path: Path) -> None:
        """Remove ``key``'s entry or failure record (its lock held) in one rename, so that
        a reader without the lock never finds it half deleted and takes it for damage."""
        aside = self.base / "tmp" / f"{key}.forgotten.{time.time_ns()}"
        try:
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, aside)
        except FileNotFoundError:
            return
        _remove_tree(aside)  # left behind if interrupted: new_staging(key) removes it

    def remove(self, key: str) -> None:
        """Remove a key's entry, failure and work dir, or one id of ``prunable``, under
        the key's lock: a key another process is building or repairing is left alone.
        What cannot be removed (that, a read-only cache) is a CacheError saying why."""
        kind, _, name = key.rpartition("/")
        lock = None if kind == "quarantine" else self.lock(name)
        if lock is not None:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                raise EntryInUse(f"{key} is in use (another process builds it)") from None
            except CacheLockError as exc:
                cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
                raise CacheError(f"cannot remove {key}: {_why(cause, lock.path)}") from exc
        try:
            for path in self._paths(key):
                try:
                    _remove_tree(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise CacheError(f"cannot remove {key}: {_why(exc, path)}") from exc
        finally:
            if lock is not None:
                lock.release()

    def _paths(self, ident: str) -> list[Path]:
        kind, _, name = ident.rpartition("/")
        if kind == "quarantine":
            return [self.base / "quarantine" / name]
        if kind == "damaged":
            return [self.entry_path(name)]
        # verify/<key>: the segment's verification records (core/verify/)
        paths = [self.entry_path(ident), self.failure_path(ident), self.work_dir(ident)]
        return [*paths, self.base / "verify" / ident]

    # -- size -------------------------------------------------------------------------
    def size_bytes(self, key: str | None = None) -> int:
        roots = [self.base] if key is None else self._paths(key)
        total = 0
        for root in roots:
            for dirpath, _, files in os.walk(root):
                for name in files:
                    with contextlib.suppress(OSError):
                        total += os.lstat(os.path.join(dirpath, name)).st_size
        return total


#: Left-over temporary files of another host are removed after this long (its process
#: cannot be asked whether it lives).
FOREIGN_TMP_SECONDS = 24 * 3600


def _host_tag() -> str:
    return hashlib.sha256(os.uname().nodename.encode()).hexdigest()[:8]


def _owner(kind: str) -> str:
    """``kind-host-pid``: who made a temporary name under tmp/ (``_abandoned`` reads it)."""
    return f"{kind}-{_host_tag()}-{os.getpid()}"


def _abandoned(path: Path) -> bool:
    """Whether a temporary name under tmp/ may be removed by a new build of its key: its
    owner (``_owner``) is a process of this host that is gone, or it names none (a set
    aside entry interrupted while it was removed), or another host's made it long ago.
    A live owner's is its own: it removes it (a build of this process, another session
    whose worker died, a checkpoint being downloaded)."""
    parts = path.name.split(".")
    fields = parts[1].split("-") if len(parts) > 2 else []
    if len(fields) != 3 or not fields[2].isdigit():
        return True
    _, host, pid = fields
    if host != _host_tag():
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


def _caller_level() -> int:
    """warnings.warn's stacklevel that points at the first caller outside this module."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    return level


def _of(damage: Damage) -> str:
    return f" (segment {damage.segment})" if damage.segment else ""


def _fingerprint(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def size_mismatch(got: Any, recorded: Any) -> str:
    """Why a file of ``got`` bytes is not the one of ``recorded`` bytes, in words that
    say which way it differs (a longer file was appended to, not truncated)."""
    how = "truncated or rewritten"
    if isinstance(got, int) and isinstance(recorded, int) and got > recorded:
        how = "longer: appended to or rewritten"
    return f"has {got} bytes where the manifest records {recorded} ({how})"


def sha256_of(path: Path) -> str:
    """A file's sha256, read in blocks (what manifests record)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digests(root: Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[int]]]:
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
            if rel in _BOOKKEEPING or rel.startswith(f"{VERIFIED}."):
                continue
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                files[rel] = {"link": os.readlink(path)}
                continue
            inode = (st.st_dev, st.st_ino)
            if inode not in hashed:
                hashed[inode] = sha256_of(path)
            files[rel] = {"size": st.st_size, "sha256": hashed[inode]}
            if _settled(stamp, st):
                seen[rel] = _fingerprint(st)
    return dict(sorted(files.items())), seen


def _difference(
    files: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]], segment: str | None
) -> Damage | None:
    """The first file of ``files`` (as ``_digests`` found them) that ``expected`` does not
    describe, or that it describes and is missing."""
    for name in sorted(set(files) | set(expected)):
        got, want = files.get(name), expected.get(name)
        if want is None:
            return Damage(name, "is not listed in the manifest", segment)
        if got is None:
            return Damage(name, "is missing", segment)
        if got.get("size") != want.get("size"):
            return Damage(name, size_mismatch(got.get("size"), want.get("size")), segment)
        if got != want:
            return Damage(name, "does not match its sha256 in the manifest (rewritten)", segment)
    return None


def _deferred(entry: Path) -> list[str]:
    """The files ``entry`` left on a remote cache (its DEFERRED list; none without one)."""
    try:
        names = json.loads((entry / DEFERRED).read_text())
    except (OSError, ValueError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _settle(root: Path) -> None:
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


def _settled(stamp: int, st: os.stat_result) -> bool:
    """Whether any write after a stat taken at ``stamp`` changes the file's fingerprint:
    a write sets mtime and ctime to the current tick, so the older of the two must lie a
    tick before the stat (else a write in that same tick would leave both as they are)."""
    older = min(st.st_mtime_ns, st.st_ctime_ns)
    margin = COARSE_TICK_NS if older % 1_000_000_000 == 0 else TICK_NS
    return stamp - older > margin


def _marked_segment(path: Path) -> str | None:
    """The segment COMPLETE names: what names an entry whose manifest is lost."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        lines = (path / MARKER).read_text().splitlines()
        if len(lines) > 1 and lines[1]:
            return lines[1][:1000]
    return None


def _read_memo(file: Path) -> dict[str, Any]:
    try:
        memo = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _write_memo(file: Path, memo: dict[str, list[int]]) -> bool:
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


def _user_memo(entry: Path) -> Path:
    """Where this user keeps the fingerprints of an entry in a cache it cannot write (a
    shared read-only copy), so that it is read once and not on every run."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    name = hashlib.sha256(str(entry.absolute()).encode()).hexdigest()[:32]
    return Path(root) / "pytest-brainsmith" / "verified" / f"{name}.json"


def _listdir(path: Path) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _why(exc: BaseException, path: Path) -> str:
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


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


def _write_marker(directory: Path, segment: Any = None) -> None:
    """COMPLETE: when, and the segment (which names the entry if its manifest is lost)."""
    marker = directory / MARKER
    with open(marker, "w") as handle:
        handle.write(f"{time.time()}\n{segment or ''}\n")
        handle.flush()
        os.fsync(handle.fileno())


def _make_read_only(root: Path, umask: int) -> None:
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


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _read_record(path: Path) -> dict[str, Any]:
    """A failure record's JSON object (OSError or ValueError if it cannot be read)."""
    record = json.loads((path / FAILURE).read_text())
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    return record


def _remove_tree(path: Path) -> None:
    def make_writable(func: Callable[..., Any], target: str, _: Any) -> None:
        os.chmod(os.path.dirname(target), 0o755)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(target, 0o644)
        func(target)

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=make_writable)  # onexc is 3.12+
    else:
        path.unlink()


def _describe_os_error(exc: OSError, doing: str) -> str:
    if exc.errno == errno.ENOSPC:
        return f"no space left on device while {doing}; earlier entries are intact"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"no permission while {doing}: {exc}"
    return f"{exc.strerror or exc} while {doing}"
