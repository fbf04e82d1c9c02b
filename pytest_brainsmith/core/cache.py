"""Content-addressed segment cache on disk, safe across processes.

Layout under the cache root (``v1/`` is the layout version)::

    entries/<k[:2]>/<key>/      a built segment: manifest.json, output.onnx,
                                build/ (FINN's output dir), COMPLETE (written last)
    failures/<key>/             a failed segment: failure.json and its build log
    locks/<key>.lock            one filelock per key: whoever holds it builds
    tmp/<key>.<random>/         builds in progress, published by os.rename
    work/<key>/                 FINN_BUILD_DIR of the segment (generated code that
                                checkpoints refer to by absolute path)

An entry only counts once its COMPLETE marker exists, and it is moved into place
whole by one rename on the same filesystem, so a crash or a full disk never
leaves a half-written entry that looks complete. Cached files are read-only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

LAYOUT = "v1"
MARKER = "COMPLETE"
MANIFEST = "manifest.json"
FAILURE = "failure.json"


class CacheError(Exception):
    """The cache itself failed (disk full, permissions): not the design's fault."""


@dataclass(frozen=True)
class Entry:
    """A complete, published entry."""

    key: str
    path: Path

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())

    @property
    def output_model(self) -> Path:
        return self.path / "output.onnx"

    @property
    def build_dir(self) -> Path:
        return self.path / "build"


@dataclass(frozen=True)
class Failure:
    """A recorded build failure: reused instead of building again."""

    key: str
    path: Path

    @property
    def record(self) -> dict[str, Any]:
        return json.loads((self.path / FAILURE).read_text())


class SegmentCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.base = self.root / LAYOUT
        for sub in ("entries", "failures", "locks", "tmp", "work"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)

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

    def lock(self, key: str) -> FileLock:
        return FileLock(str(self.base / "locks" / f"{key}.lock"))

    # -- reading ----------------------------------------------------------------
    def lookup(self, key: str) -> Entry | None:
        path = self.entry_path(key)
        return Entry(key, path) if (path / MARKER).is_file() else None

    def failure(self, key: str) -> Failure | None:
        path = self.failure_path(key)
        return Failure(key, path) if (path / MARKER).is_file() else None

    def entries(self) -> Iterator[Entry]:
        for shard in sorted((self.base / "entries").iterdir()):
            for path in sorted(shard.iterdir()):
                if (path / MARKER).is_file():
                    yield Entry(path.name, path)

    def failures(self) -> Iterator[Failure]:
        for path in sorted((self.base / "failures").iterdir()):
            if (path / MARKER).is_file():
                yield Failure(path.name, path)

    # -- writing ----------------------------------------------------------------
    def new_staging(self, key: str) -> Path:
        """A fresh temporary directory for building ``key`` (call with its lock held)."""
        for stale in (self.base / "tmp").glob(f"{key}.*"):
            # a build of this key that died (we hold the key's lock, so it is not running)
            _remove_tree(stale)
        try:
            (self.base / "tmp").mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.base / "tmp"))
        except OSError as exc:
            raise CacheError(
                f"cannot create a build directory in {self.base / 'tmp'}: {exc}"
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

    def publish(self, key: str, staged: Path, manifest: dict[str, Any]) -> Entry:
        """Write the manifest and marker into ``staged`` and move it into place."""
        target = self.entry_path(key)
        try:
            _write_json(staged / MANIFEST, manifest)
            _make_read_only(staged)
            _write_marker(staged)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():  # a forced rebuild replaces the old entry
                _remove_tree(target)
            os.rename(staged, target)
        except OSError as exc:
            raise CacheError(
                _describe_os_error(exc, f"publishing segment {key} in {self.base}")
            ) from exc
        with contextlib.suppress(FileNotFoundError):
            _remove_tree(self.failure_path(key))
        return Entry(key, target)

    def record_failure(self, key: str, staged: Path, record: dict[str, Any]) -> Failure:
        target = self.failure_path(key)
        try:
            _write_json(staged / FAILURE, record)
            _write_marker(staged)
            if target.exists():
                _remove_tree(target)
            os.rename(staged, target)
        except OSError as exc:
            raise CacheError(
                _describe_os_error(exc, f"recording the failure of segment {key}")
            ) from exc
        return Failure(key, target)

    def forget_failure(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            _remove_tree(self.failure_path(key))

    def remove(self, key: str) -> None:
        for path in (self.entry_path(key), self.failure_path(key), self.work_dir(key)):
            with contextlib.suppress(FileNotFoundError):
                _remove_tree(path)

    # -- size -------------------------------------------------------------------------
    def size_bytes(self, key: str | None = None) -> int:
        roots = [self.base] if key is None else [self.entry_path(key), self.work_dir(key)]
        total = 0
        for root in roots:
            for dirpath, _, files in os.walk(root):
                for name in files:
                    with contextlib.suppress(OSError):
                        total += os.lstat(os.path.join(dirpath, name)).st_size
        return total


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


def _write_marker(directory: Path) -> None:
    marker = directory / MARKER
    with open(marker, "w") as handle:
        handle.write(f"{time.time()}\n")
        handle.flush()
        os.fsync(handle.fileno())


def _make_read_only(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


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
