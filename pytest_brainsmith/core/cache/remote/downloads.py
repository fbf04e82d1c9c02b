"""Read-through: a key the local cache misses is looked up on the remote.

Downloads run ahead on the pool for every segment the submitted designs need; a bundle
is unpacked into a staging directory of the local cache and published there like a
build, checked against the manifest's digests by ``SegmentCache.publish(expected=...)``.
The checkpoint stays behind (``deferred``) until a child build or a check needs it: the
local cache then fetches it through ``fetch_deferred``. Nothing that fails a check is
used: it is reported once (the object's URL and the file) and built here.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..failures import Failure
from ..fingerprints import sha256_of, size_mismatch
from ..integrity import Mismatch, check_manifest
from ..layout import FAILURE, MANIFEST, MARKER
from ..store import Entry
from .bundle import unpack
from .errors import Damaged
from .transfers import Transfers


@dataclass
class Download:
    """A remote entry (or failure record) read ahead, not yet checked or published."""

    kind: str  # "entry" | "failure"
    doc: dict[str, Any]
    size: int  # the bundle's bytes
    staged: Path  # where the pool's thread unpacked it (private to this process)
    seconds: float
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # verification, by hash


@dataclass
class Rejected:
    """A download that failed its check on the pool: reported by the main thread."""

    damage: Damaged
    segment: str | None


class Downloads(Transfers):
    """The reads of one remote tier, ahead of the engine and when it asks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: downloads read ahead; each ends as None (nothing there), an Entry or Failure
        #: (published ahead), a Rejected or a Download (for ``fetch`` to publish)
        self.ahead: dict[str, concurrent.futures.Future[Any]] = {}

    def prefetch(self, keys: list[str]) -> None:
        """Start downloading what these keys' entries need, unless the local cache has
        them: ``fetch`` then finds them read (the checkpoints stay behind)."""
        for key in keys:
            if key in self.ahead or key in self.faults.refused:
                continue
            if (self.cache.entry_path(key) / MARKER).is_file():
                continue
            self.ahead[key] = self._pool.submit(self.download, key, True)

    def fetch(self, key: str) -> Entry | Failure | None:
        """``key``'s entry, checked and published in the local cache (or its failure
        record); None when the remote has none or what it has fails a check (reported).
        Called with the key's lock held."""
        future = self.ahead.pop(key, None) or self._pool.submit(self.download, key, False)
        try:
            got = self.faults.answer(future, None)
        except Damaged as exc:
            self.faults.reject(key, exc, None)
            return None
        self.faults.warn_off()
        self.faults.report_later()
        if got is None or isinstance(got, Entry | Failure):
            return got  # nothing there, or published ahead (before this lock was taken)
        if isinstance(got, Rejected):
            self.faults.reject(key, got.damage, got.segment)
            return None
        try:
            found = self.publish(key, got)
        except Damaged as exc:
            self.faults.reject(key, exc, got.doc.get("manifest", {}).get("segment"))
            return None
        self.faults.report_later()
        return found

    def download(self, key: str, ahead: bool) -> Any:
        """Pool thread: the entry's manifest and bundle (or a failure's), unpacked; read
        ``ahead`` of the engine, also published (``publish_ahead``)."""
        if self.faults.off is not None:
            return None
        started = time.perf_counter()
        kind, parts = "entry", ("entries", f"{key}.json")
        raw = self.store.get(*parts)
        if raw is None and self.share_failures:
            kind, parts = "failure", ("failures", f"{key}.json")
            raw = self.store.get(*parts)
        if raw is None:
            return None
        where = self.store.object_url(*parts)
        try:
            doc = json.loads(raw)
            bundle = doc["bundle"]
            sha, size = str(bundle["sha256"]), int(bundle["size"])
        except (ValueError, KeyError, TypeError) as exc:
            raise Damaged(where, MANIFEST, f"is unreadable ({exc})") from None
        body = doc.get("manifest") if kind == "entry" else doc.get("record")
        self.trust.document(key, doc, body, where, MANIFEST if kind == "entry" else FAILURE)
        blob = self.store.object_url(*self.store.blob(sha))
        data = self.store.get(*self.store.blob(sha))
        if data is None:
            raise Damaged(blob, "bundle", "is missing")
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            why = (
                size_mismatch(len(data), size)
                if len(data) != size
                else "does not match its sha256 (rewritten)"
            )
            raise Damaged(blob, "bundle", why)
        # unpacked here, beside the builds' staging directories (same filesystem: published
        # by a rename), under a name no build's clean-up takes for its own
        tmp_root = self.cache.base / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f"fetch.{key}.", dir=tmp_root))
        try:
            unpack(data, staged, blob)
        except BaseException:
            self.cache.discard_staging(staged)
            raise
        got = Download(kind, doc, len(data), staged, time.perf_counter() - started)
        if kind == "entry":
            got.records = self.records.download_listed(key, doc.get("verification"))
        return self.publish_ahead(key, got) if ahead else got

    def publish_ahead(self, key: str, got: Download) -> Any:
        """Pool thread: publish a download now if the key's lock is free (the engine then
        finds the entry in the local cache, ``fetched`` in this run); else the lock's
        holder (the engine, waiting in ``fetch``, or another process) decides."""
        # a lock object of its own: the cache's are reentrant for the engine's thread
        lock = FileLock(str(self.cache.locks.path(key)))
        try:
            lock.acquire(timeout=0)
        except (Timeout, OSError):
            return got
        try:
            if (self.cache.entry_path(key) / MARKER).is_file():  # built or fetched meanwhile
                self.cache.discard_staging(got.staged)
                return Entry(key, self.cache.entry_path(key))
            try:
                return self.publish(key, got)
            except Damaged as exc:
                return Rejected(exc, got.doc.get("manifest", {}).get("segment"))
        finally:
            lock.release()

    def publish(self, key: str, got: Download) -> Entry | Failure:
        """Publish a download in the local cache like a build; Damaged if any file is
        not what the manifest says."""
        staged = got.staged
        where = self.store.object_url(*self.store.blob(got.doc["bundle"]["sha256"]))
        try:
            if got.kind == "failure":
                record = got.doc.get("record")
                if not isinstance(record, dict):
                    raise Damaged(
                        self.store.object_url("failures", f"{key}.json"), FAILURE, "is unreadable"
                    )
                failure = self.cache.failures.record(key, staged, record)
                self.stats.add(failures_fetched=1, fetched_bytes=got.size)
                return failure
            manifest, damage = check_manifest(key, got.doc.get("manifest"))
            if damage is not None:
                where_doc = self.store.object_url("entries", f"{key}.json")
                raise Damaged(where_doc, damage.file, damage.why)
            assert manifest is not None
            deferred = [n for n in got.doc.get("deferred") or [] if isinstance(n, str)]
            fetched = {
                "from": self.store.url,
                "run_id": self.run_id,
                "built_by": manifest.get("run_id"),
            }
            try:
                entry = self.cache.publish(
                    key,
                    staged,
                    {**manifest, "fetched": fetched},
                    expected=manifest["files"],
                    deferred=deferred,
                )
            except Mismatch as exc:
                raise Damaged(where, exc.damage.file, exc.damage.why) from None
            self.records.store_locally(key, got.records)
            self.stats.add(fetched=1, fetched_bytes=got.size, fetch_seconds=got.seconds)
            return entry
        finally:
            self.cache.discard_staging(staged)

    def fetch_deferred(self, key: str, name: str, record: dict[str, Any], dest: Path) -> str | None:
        """The local cache's ``deferred.source``: download a file an entry left here (its
        checkpoint) to ``dest`` and check it; None when done, else why not."""
        self.faults.warn_off()
        gone = f"{name} of entry {key[:12]} was left on the remote cache, which is off"
        if self.faults.off is not None:
            return gone
        sha, size = str(record.get("sha256")), record.get("size")
        parts = self.store.blob(sha)
        started = time.perf_counter()
        found = self.faults.answer(self._pool.submit(self.store.get_file, dest, *parts), False)
        self.faults.warn_off()
        if self.faults.off is not None:
            return gone
        where = self.store.object_url(*parts)
        if not found:
            damage = Damaged(where, name, "is missing")
        else:
            got = dest.stat().st_size
            if got != size:
                damage = Damaged(where, name, size_mismatch(got, size))
            elif sha256_of(dest) != sha:
                damage = Damaged(
                    where, name, "does not match its sha256 in the manifest (rewritten)"
                )
            else:
                self.stats.add(
                    checkpoints=1,
                    checkpoint_bytes=got,
                    fetch_seconds=time.perf_counter() - started,
                )
                return None
        self.faults.reject(key, damage, None)
        return f"{name} of entry {key[:12]} on the remote cache {damage.why}"
