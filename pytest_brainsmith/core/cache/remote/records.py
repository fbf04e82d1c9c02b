"""Verification records travel with their entries: ``v1/verify/<key>/<hash>.json``, one
per verify settings (core/verify/), each a signed document of its own, so that
a runner that fetches a verified entry reports it verified instead of verifying again.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading
import uuid
from typing import Any

from ..layout import RECORDS, record_path
from ..store import SegmentCache
from .errors import Damaged
from .faults import Faults
from .storage import ObjectStore
from .trust import DocumentCheck

FORMAT = 1


class VerificationRecords:
    """The verification records of one remote tier: fetched into the local cache and
    uploaded from it."""

    def __init__(
        self,
        cache: SegmentCache,
        store: ObjectStore,
        faults: Faults,
        trust: DocumentCheck,
        pool: concurrent.futures.Executor,
    ) -> None:
        self.cache = cache
        self.store = store
        self.faults = faults
        self.trust = trust
        self.stats = trust.stats
        self._pool = pool
        self._lock = threading.Lock()
        self._tried: set[tuple[str, str]] = set()
        self._fetched: set[tuple[str, str]] = set()  # not uploaded back

    def download_listed(self, key: str, listed: Any) -> dict[str, dict[str, Any]]:
        """Pool thread: the verification records an entry's document lists, checked (one
        that fails is reported by the main thread and not used: verified here)."""
        records: dict[str, dict[str, Any]] = {}
        for digest in listed if isinstance(listed, list) else []:
            if not isinstance(digest, str):
                continue
            try:
                record = self.download(key, digest)
            except Damaged as exc:
                self.faults.record_later(key, digest, exc)
                continue
            if record is not None:
                records[digest] = record
        return records

    def download(self, key: str, digest: str) -> dict[str, Any] | None:
        """Pool thread: one verification record, checked; None if there is none."""
        parts = ("verify", key, f"{digest}.json")
        raw = self.store.get(*parts)
        if raw is None:
            return None
        where = self.store.object_url(*parts)
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise Damaged(where, "verification record", f"is unreadable ({exc})") from None
        record = doc.get("record") if isinstance(doc, dict) else None
        self.trust.signature(doc, where, "verification record")
        for found, what in (
            (doc.get("key") if isinstance(doc, dict) else None, "names key"),
            (record.get("key") if isinstance(record, dict) else None, "holds the record of key"),
        ):
            if found != key:
                raise Damaged(where, "verification record", f"{what} {found!r}, not {key}")
        assert isinstance(doc, dict) and isinstance(record, dict)
        if doc.get("hash") != digest or record.get("hash") != digest:
            why = f"is for settings {record.get('hash')!r}, not {digest}"
            raise Damaged(where, "verification record", why)
        return record

    def fetch(self, key: str, digest: str) -> bool:
        """A verification record of ``key``'s entry for the settings ``digest`` that the
        local cache lacks, fetched into it (once per run and record); whether it is there
        now."""
        if (key, digest) in self._tried:
            return False
        self._tried.add((key, digest))
        try:
            record = self.faults.answer(self._pool.submit(self.download, key, digest), None)
        except Damaged as exc:
            self.faults.reject_record(key, digest, exc)
            return False
        self.faults.warn_off()
        if record is None:
            return False
        return bool(self.store_locally(key, {digest: record}))

    def store_locally(self, key: str, records: dict[str, dict[str, Any]]) -> int:
        """Write fetched verification records where the local cache keeps them (a record
        already there is this cache's own: kept); how many were written."""
        written = 0
        for digest, record in records.items():
            path = record_path(self.cache.base / RECORDS, key, digest)
            if path.exists():
                continue
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
                tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
                os.replace(tmp, path)
            except OSError:
                continue  # verified here instead
            with self._lock:
                self._fetched.add((key, digest))
            written += 1
        self.stats.add(records_fetched=written)
        return written

    def upload(self, key: str) -> list[str]:
        """Pool thread: upload the entry's verification records made here (each a signed
        document of its own, written whole); the hashes uploaded."""
        if self.faults.off is not None:
            return []
        uploaded: list[str] = []
        folder = self.cache.base / RECORDS / key
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            digest = path.stem
            if not isinstance(record, dict) or record.get("hash") != digest:
                continue
            if record.get("key") != key or (key, digest) in self._fetched:
                continue
            doc = self.trust.sign({"format": FORMAT, "key": key, "hash": digest, "record": record})
            data = json.dumps(doc, sort_keys=True, default=str).encode()
            self.store.put(data, "verify", key, f"{digest}.json")
            uploaded.append(digest)
        self.stats.add(records_uploaded=len(uploaded))
        return uploaded
