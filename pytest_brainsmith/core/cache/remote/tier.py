"""The remote tier of one local cache for one run: ``RemoteCache``, which owns the
storage, the reads, the writes and the faults (see the package's docstring)."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

from ..failures import Failure
from ..store import Entry, SegmentCache
from .downloads import Download, Downloads
from .errors import Fault, RemoteCacheError
from .faults import Faults
from .records import VerificationRecords
from .stats import RemoteStats
from .storage import THREADS, ObjectStore, check_backend
from .trust import DocumentCheck, Signer, signer_from_env
from .uploads import Uploads

MODES = ("read", "write", "readwrite")
DEFAULT_TIMEOUT = 60.0


class RemoteCache:
    """The remote tier of one ``SegmentCache`` for one run."""

    def __init__(
        self,
        url: str,
        cache: SegmentCache,
        *,
        mode: str = "readwrite",
        share_failures: bool = False,
        timeout: float | None = None,
        run_id: str = "",
        storage_options: dict[str, Any] | None = None,
        signing_key: str | None = None,
    ) -> None:
        """``signing_key``: the key that signs uploads and that fetched documents must be
        signed with (``trust.py``); None reads BRAINSMITH_REMOTE_CACHE_KEY, "" means none."""
        if mode not in MODES:
            raise RemoteCacheError(
                f"remote cache mode: expected one of {', '.join(MODES)}, got {mode!r}"
            )
        check_backend(url)
        self.url = url.rstrip("/")
        self.cache = cache
        self.mode = mode
        self.reads = mode in ("read", "readwrite")
        self.writes = mode in ("write", "readwrite")
        self.share_failures = share_failures
        self.timeout = float(timeout or DEFAULT_TIMEOUT)
        self.run_id = run_id
        self.stats = RemoteStats()
        self.signer = (
            signer_from_env()
            if signing_key is None
            else Signer(signing_key)
            if signing_key
            else None
        )
        self._started = False  # the start's checks reported
        self._pool = concurrent.futures.ThreadPoolExecutor(
            THREADS, thread_name_prefix="brainsmith-remote"
        )
        self.store = ObjectStore(
            self.url, self.timeout, storage_options or {}, reads=self.reads, writes=self.writes
        )
        self.store.open(self._pool)  # the backend's client, while collection goes on
        self.faults = Faults(self.url, self.timeout, self.stats)
        trust = DocumentCheck(self.signer, self.stats)
        self.records = VerificationRecords(cache, self.store, self.faults, trust, self._pool)
        parts = (cache, self.store, self.faults, self.records, self._pool)
        self.downloads = Downloads(*parts, share_failures=share_failures, run_id=run_id)
        self.uploads = Uploads(*parts, share_failures=share_failures, run_id=run_id)
        if self.reads:
            cache.deferred.source = self.downloads.fetch_deferred

    @property
    def off(self) -> str | None:
        """Why the tier is off for this run (None while it works)."""
        return self.faults.off

    def start(self) -> None:
        """The main thread, when the run's first designs are submitted: wait for the
        start's checks (bounded by the timeout) and report a bucket that does not exist,
        or cannot be used or written, once."""
        if self._started:
            return
        self._started = True
        assert self.store.connection is not None
        self.faults.answer(self.store.connection, None)
        self.faults.warn_off()
        if self.faults.off is None and self.store.read_only is not None:
            self.faults.warn_read_only(self.store.read_only)

    # -- read-through ------------------------------------------------------------------
    def prefetch(self, keys: list[str]) -> None:
        """Start downloading what these keys' entries need, unless the local cache has
        them. The first call also reports what the start's checks found (``start``)."""
        if self.reads and self.faults.off is None:
            self.downloads.prefetch(keys)
        self.start()

    def fetch(self, key: str) -> Entry | Failure | None:
        """``key``'s entry from the remote, checked and published in the local cache (or,
        when failures are shared, its failure record); None when the remote has none, or
        what it has fails a check (reported), or the remote cannot be used. Called with
        the key's lock held."""
        self.faults.warn_off()
        if not self.reads or self.faults.off is not None or key in self.faults.refused:
            return None
        return self.downloads.fetch(key)

    def fetch_record(self, key: str, digest: str) -> bool:
        """A verification record of ``key``'s entry for the settings ``digest`` that the
        local cache lacks, fetched into it (once per run and record); whether it is there
        now."""
        self.faults.warn_off()
        if not self.reads or self.faults.off is not None:
            return False
        return self.records.fetch(key, digest)

    def fetch_deferred(self, key: str, name: str, record: dict[str, Any], dest: Path) -> str | None:
        """The local cache's ``deferred.source`` (``Downloads.fetch_deferred``)."""
        return self.downloads.fetch_deferred(key, name, record, dest)

    # -- write-through -----------------------------------------------------------------
    def built(self, key: str, status: str) -> None:
        """The engine built ``key`` (published, or recorded as failed) or verified its
        entry (``verified``: a record made here): upload it while the run goes on."""
        self.faults.warn_off()
        if not self.writes or self.faults.off is not None or self.store.read_only is not None:
            return
        self.uploads.built(key, status)

    # -- the end -----------------------------------------------------------------------
    def close(self) -> None:
        """Wait for the uploads still pending (giving up when none finishes within the
        timeout: the remote stopped answering), then stop the pool."""
        self.start()  # a run that submitted nothing still hears what the start found
        try:
            self.uploads.wait(self.timeout)
        finally:
            # what still runs ends within the timeout (every call is bounded by it), so
            # that a fault it meets is reported below, not after the run
            self._pool.shutdown(wait=True, cancel_futures=True)
            for future in self.downloads.ahead.values():  # read ahead, never asked for
                if future.cancelled():
                    continue
                exc = future.exception()
                if isinstance(exc, Fault):
                    self.faults.fault(str(exc))
                elif exc is None and isinstance(future.result(), Download):
                    self.cache.discard_staging(future.result().staged)
            self.downloads.ahead.clear()
            self.uploads.pending.clear()
        self.faults.warn_off()
        self.faults.report_later()

    def report(self) -> dict[str, Any]:
        """The counts and why the tier is off, if it is: JSON data (xdist's workers send it)."""
        return {**self.stats.as_dict(), "off": self.faults.off, "read_only": self.store.read_only}
