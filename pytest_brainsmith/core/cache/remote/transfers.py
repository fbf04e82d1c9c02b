"""What one remote tier's reads (``downloads.py``) and writes (``uploads.py``) share:
the local cache, the object store, the tier's faults, its verification records (with
their trust and counters), the thread pool and the run's sharing settings."""

from __future__ import annotations

import concurrent.futures

from ..store import SegmentCache
from .faults import Faults
from .records import VerificationRecords
from .storage import ObjectStore
from .trust import DocumentCheck


class Transfers:
    """The parts one direction of a remote tier works with."""

    def __init__(
        self,
        cache: SegmentCache,
        store: ObjectStore,
        faults: Faults,
        records: VerificationRecords,
        pool: concurrent.futures.Executor,
        *,
        share_failures: bool,
        run_id: str,
    ) -> None:
        self.cache = cache
        self.store = store
        self.faults = faults
        self.records = records
        self.trust: DocumentCheck = records.trust
        self.stats = records.stats
        self._pool = pool
        self.share_failures = share_failures
        self.run_id = run_id
