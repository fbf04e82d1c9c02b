"""One file lock per cache key: whoever holds it builds the key or moves it aside.

Only building and repairing lock: reusing a verified entry writes nothing, so a
read-only cache works. The cache's own repairs nest in a lock its caller already holds
(in this process, or in the engine that started a worker's build).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import CacheLockError, why


class KeyLocks:
    """The locks of one cache, and the keys this process holds them for."""

    def __init__(self, root: Path, base: Path) -> None:
        self.root = root
        self.folder = base / "locks"
        self.held: set[str] = set()  # keys whose lock this process holds

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.lock"

    def lock(self, key: str) -> KeyLock:
        """``key``'s lock for a builder: exclusive, between the tasks of one process too."""
        return KeyLock(self, key)

    def own(self, key: str) -> KeyLock:
        """``key``'s lock for the cache's own repairs, which nest in the caller's."""
        return KeyLock(self, key, nests=True)

    @contextlib.contextmanager
    def held_by_caller(self, key: str) -> Iterator[None]:
        """In a worker building ``key``: the engine that started the build holds its lock,
        so this cache's own uses of the lock (moving a damaged entry aside) nest in it
        rather than wait for it (a worker forked before the lock was taken, which a
        pooled one is, would otherwise wait forever)."""
        if key in self.held:
            yield
            return
        self.held.add(key)
        try:
            yield
        finally:
            self.held.discard(key)

    def error(self, path: Path, key: str, exc: OSError) -> str:
        if path.is_dir():
            return (
                f"the lock file {path} is a directory; it must be a file that pytest-brainsmith "
                f"creates: remove the directory (nothing else uses it) to build entry {key}"
            )
        return (
            f"cannot lock {path} to build cache entry {key}: {why(exc, path)}. Building a "
            f"segment that is not in the cache needs write access to {self.root}; make it "
            "writable or choose another cache with --brainsmith-cache DIR (or BRAINSMITH_CACHE)"
        )


class KeyLock:
    """The file lock of one key, used like filelock's (``with``, ``acquire``, ``release``).
    A builder's lock (``SegmentCache.lock``) is exclusive, within this process too: a
    second task asking for a key another task of the same engine builds waits like one in
    another process (one build per key). The cache's own uses while its caller may hold
    the key (``lookup`` moving a damaged entry aside) nest in whatever lock of this cache
    holds it. A failure to take it is a CacheLockError that says what is needed."""

    def __init__(self, locks: KeyLocks, key: str, *, nests: bool = False) -> None:
        self.locks = locks
        self.key = key
        self.path = locks.path(key)
        self._lock = FileLock(str(self.path))
        self._nests = nests
        self._nested = 0  # acquired while another lock of this cache held the key

    @property
    def is_locked(self) -> bool:
        return self._lock.is_locked or self._nested > 0

    def acquire(self, timeout: float = -1) -> KeyLock:
        if self._nests and self.key in self.locks.held and not self._lock.is_locked:
            self._nested += 1
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire(timeout=timeout)
        except Timeout:
            raise
        except OSError as exc:
            raise CacheLockError(self.locks.error(self.path, self.key, exc)) from exc
        self.locks.held.add(self.key)
        return self

    def release(self) -> None:
        if self._nested:
            self._nested -= 1
            return
        self._lock.release()
        if not self._lock.is_locked:
            self.locks.held.discard(self.key)

    def __enter__(self) -> KeyLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
