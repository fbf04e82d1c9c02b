"""Write-through: an entry this run built is uploaded on the pool while the run goes on,
blobs first and its manifest last (one PUT), so a reader never sees a torn entry; two
runners uploading one key write the same blobs by content and each a whole manifest.
The checkpoint is a blob of its own, left behind by readers until a child needs it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import time
from typing import Any

from ...toolchain import current as toolchain
from ..layout import FAILURE, MANIFEST, MARKER
from .bundle import pack
from .errors import Fault
from .records import FORMAT
from .transfers import Transfers


class Uploads(Transfers):
    """The writes of one remote tier, and waiting for them at the end."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: list[concurrent.futures.Future[Any]] = []

    def built(self, key: str, status: str) -> None:
        """Upload what the engine made of ``key``: its entry (``built``), its failure
        record (``failed``, when failures are shared) or its verification records."""
        if status == "built":
            self.pending.append(self._pool.submit(self.upload, key))
        elif status == "verified":
            self.pending.append(self._pool.submit(self.records.upload, key))
        elif status == "failed" and self.share_failures:
            self.pending.append(self._pool.submit(self.upload_failure, key))

    def upload(self, key: str) -> None:
        """Pool thread: the entry's checkpoint blob, its bundle, then its document."""
        if self.faults.off is not None:
            return
        started = time.perf_counter()
        path = self.cache.entry_path(key)
        manifest = json.loads((path / MANIFEST).read_text())
        force = key in self.faults.refused  # what is there failed a check: replace it
        if not force and self.store.size("entries", f"{key}.json") is not None:
            self.stats.add(already_there=1)
            return
        files: dict[str, dict[str, Any]] = manifest["files"]
        output_model = toolchain().output_model
        checkpoint = files.get(output_model)
        deferred: list[str] = []
        moved = 0
        if checkpoint is not None and "sha256" in checkpoint and (path / output_model).is_file():
            deferred = sorted(
                n for n, r in files.items() if r.get("sha256") == checkpoint["sha256"]
            )
            blob = self.store.blob(checkpoint["sha256"])
            if force or self.store.size(*blob) != checkpoint["size"]:
                self.store.put_file(path / output_model, *blob)
                moved += checkpoint["size"]
        bundle = pack(path, [n for n in files if n not in deferred], files)
        sha = hashlib.sha256(bundle).hexdigest()
        self.store.put(bundle, *self.store.blob(sha))
        doc = {
            "format": FORMAT,
            "key": key,
            "manifest": manifest,
            "bundle": {"sha256": sha, "size": len(bundle)},
            "deferred": deferred,
            "verification": self.records.upload(key),
            "uploaded": {"run_id": self.run_id, "host": os.uname().nodename, "when": time.time()},
        }
        doc = self.trust.sign(doc)
        self.store.put(json.dumps(doc, sort_keys=True).encode(), "entries", f"{key}.json")  # last
        if self.share_failures:
            self.store.remove("failures", f"{key}.json")
        self.stats.add(
            uploaded=1,
            uploaded_bytes=moved + len(bundle),
            upload_seconds=time.perf_counter() - started,
        )

    def upload_failure(self, key: str) -> None:
        """Pool thread: a failure record with its build log (failures shared)."""
        if self.faults.off is not None:
            return
        started = time.perf_counter()
        failure = self.cache.failure(key)
        if failure is None:
            return
        names = sorted(
            p.relative_to(failure.path).as_posix()
            for p in failure.path.rglob("*")
            if p.is_file() and p.name not in (FAILURE, MARKER)
        )
        bundle = pack(failure.path, names, None)
        sha = hashlib.sha256(bundle).hexdigest()
        self.store.put(bundle, *self.store.blob(sha))
        doc = {
            "format": FORMAT,
            "key": key,
            "record": failure.record,
            "bundle": {"sha256": sha, "size": len(bundle)},
        }
        doc = self.trust.sign(json.loads(json.dumps(doc, default=str)))  # signed as read back
        data = json.dumps(doc, sort_keys=True, default=str).encode()
        self.store.put(data, "failures", f"{key}.json")
        self.stats.add(
            failures_uploaded=1,
            uploaded_bytes=len(bundle),
            upload_seconds=time.perf_counter() - started,
        )

    def wait(self, timeout: float) -> None:
        """Wait for the uploads still pending, giving up when none finishes within the
        timeout (the remote stopped answering: counted as abandoned)."""
        pending = set(self.pending)
        while pending:
            done, pending = concurrent.futures.wait(
                pending, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED
            )
            if not done:
                self.faults.fault(f"uploads made no progress for {timeout:g} s")
                self.stats.pending = len(pending)
                break
            for future in done:
                exc = future.exception()
                if isinstance(exc, Fault):
                    self.faults.fault(str(exc))
                # else a local entry gone meanwhile (pruned, moved aside): not uploaded
