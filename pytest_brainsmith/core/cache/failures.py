"""Recorded build failures: a segment that failed is not built again with the same key.

failures/<key>/ holds failure.json and the build's log, published like an entry (staged,
marked COMPLETE, moved into place by one rename). A record that cannot be read proves
nothing: it is moved aside and the segment is built again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import Timeout

from .errors import CacheError, describe_os_error, why
from .integrity import Damage, quarantine
from .layout import FAILURE, MARKER, listdir, make_read_only, write_json, write_marker
from .locks import KeyLocks
from .staging import set_aside


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


class FailureRecords:
    """The failure records of one cache (``SegmentCache.failures``)."""

    def __init__(self, base: Path, umask: int, locks: KeyLocks) -> None:
        self.base = base
        self.umask = umask
        self.locks = locks

    def path(self, key: str) -> Path:
        return self.base / "failures" / key

    def get(self, key: str) -> Failure | None:
        """``key``'s recorded failure, if there is one that can be read."""
        path = self.path(key)
        if not (path / MARKER).is_file():
            return None
        try:
            record = read_record(path)
        except (OSError, ValueError) as exc:
            # an unreadable failure record proves nothing: move it aside, build again;
            # unless it was only being replaced (checked again under the lock)
            damage = Damage(FAILURE, f"is unreadable ({why(exc, path / FAILURE)})")
            if not (path / MARKER).is_file():
                return None  # it was being removed, not damaged
            lock = self.locks.own(key)
            try:
                lock.acquire(timeout=0)
            except Timeout:  # its builder replaces it: no failure to go by meanwhile
                return None
            try:
                return Failure(key, path, read_record(path))
            except (OSError, ValueError):
                if (path / MARKER).is_file():
                    quarantine(self.base, key, path, damage)
            finally:
                lock.release()
            return None
        return Failure(key, path, record)

    def record(self, key: str, staged: Path, record: dict[str, Any]) -> Failure:
        """Publish ``staged`` (the build's log) with ``record`` as ``key``'s failure."""
        target = self.path(key)
        try:
            make_read_only(staged, self.umask)
            write_json(staged / FAILURE, record)
            write_marker(staged, record.get("segment"))
            for name in (FAILURE, MARKER):
                os.chmod(staged / name, 0o444 & ~self.umask)
            target.parent.mkdir(parents=True, exist_ok=True)
            set_aside(self.base, key, target)
            os.rename(staged, target)
        except OSError as exc:
            raise CacheError(
                describe_os_error(exc, f"recording the failure of segment {key}")
            ) from exc
        return Failure(key, target, record)

    def forget(self, key: str) -> None:
        set_aside(self.base, key, self.path(key))

    def __iter__(self) -> Iterator[Failure]:
        for path in listdir(self.base / "failures"):
            if (path / MARKER).is_file():
                yield Failure(path.name, path)


def read_record(path: Path) -> dict[str, Any]:
    """A failure record's JSON object (OSError or ValueError if it cannot be read)."""
    record = json.loads((path / FAILURE).read_text())
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    return record
