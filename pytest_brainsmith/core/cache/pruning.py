"""What ``--brainsmith-prune`` may remove, removing it, and how much room it takes.

Entries and failures whose key no test needs, damaged entries and everything
quarantined; each under its key's lock, so a key another process builds or repairs is
left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from filelock import Timeout

from .errors import CacheError, CacheLockError, EntryInUse, why
from .failures import FailureRecords
from .integrity import verify
from .layout import MARKER, entry_path, listdir, remove_tree, work_dir
from .locks import KeyLocks


class Pruning:
    """Prune candidates, removal and sizes of one cache (``SegmentCache.pruning``)."""

    def __init__(self, base: Path, locks: KeyLocks, failures: FailureRecords) -> None:
        self.base = base
        self.locks = locks
        self.failures = failures

    def quarantined(self) -> list[Path]:
        return listdir(self.base / "quarantine")

    def descendants(self, roots: set[str]) -> set[str]:
        """Keys of the entries built (directly or not) on the output of ``roots``, by
        their manifests' input (the content digest of the model they read): what a
        folding search's trials below them built."""
        children: dict[str, list[str]] = {}  # output digest -> entries that read it
        outputs: dict[str, str] = {}  # key -> its output's digest
        for shard in listdir(self.base / "entries"):
            for path in listdir(shard):
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
        for shard in listdir(self.base / "entries"):
            for path in listdir(shard):
                damaged = not (path / MARKER).is_file() or verify(path.name, path)[1]
                if path.name not in keep:
                    ids.append(path.name)
                elif damaged:
                    ids.append(f"damaged/{path.name}")
        ids += [f.key for f in self.failures if f.key not in keep and f.key not in ids]
        ids += [f"quarantine/{p.name}" for p in self.quarantined()]
        return ids

    def remove(self, key: str) -> None:
        """Remove a key's entry, failure and work dir, or one id of ``prunable``, under
        the key's lock: a key another process is building or repairing is left alone.
        What cannot be removed (that, a read-only cache) is a CacheError saying why."""
        kind, _, name = key.rpartition("/")
        lock = None if kind == "quarantine" else self.locks.lock(name)
        if lock is not None:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                raise EntryInUse(f"{key} is in use (another process builds it)") from None
            except CacheLockError as exc:
                cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
                raise CacheError(f"cannot remove {key}: {why(cause, lock.path)}") from exc
        try:
            for path in self.paths(key):
                try:
                    remove_tree(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise CacheError(f"cannot remove {key}: {why(exc, path)}") from exc
        finally:
            if lock is not None:
                lock.release()

    def paths(self, ident: str) -> list[Path]:
        """The folders of a key, or of one id of ``prunable``."""
        kind, _, name = ident.rpartition("/")
        if kind == "quarantine":
            return [self.base / "quarantine" / name]
        if kind == "damaged":
            return [entry_path(self.base, name)]
        # verify/<key>: the segment's verification records (core/verification.py)
        paths = [
            entry_path(self.base, ident),
            self.failures.path(ident),
            work_dir(self.base, ident),
        ]
        return [*paths, self.base / "verify" / ident]

    def size_bytes(self, key: str | None = None) -> int:
        roots = [self.base] if key is None else self.paths(key)
        total = 0
        for root in roots:
            for dirpath, _, files in os.walk(root):
                for name in files:
                    with contextlib.suppress(OSError):
                        total += os.lstat(os.path.join(dirpath, name)).st_size
        return total
