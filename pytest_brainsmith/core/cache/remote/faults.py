"""How the remote tier fails: the first error that is not "not found" (down, denied,
slower than the timeout, a bucket that does not exist) turns it off for the rest of the
run, which goes on with the local cache; a damaged or unsigned object is never used.
Each is one ``RemoteCacheWarning``, raised by the main thread (warnings from the pool's
threads would land in whatever test runs).
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import warnings
from typing import Any

from ..integrity import caller_level
from .errors import Damaged, Fault, RemoteCacheWarning, Untrusted
from .stats import RemoteStats
from .trust import ENV

#: this package's folder: warnings point at the first caller outside it
HERE = os.path.dirname(__file__)


class Faults:
    """What went wrong with one remote tier, and the warnings that say so once."""

    def __init__(self, url: str, timeout: float, stats: RemoteStats) -> None:
        self.url = url
        self.timeout = timeout
        self.stats = stats
        self._lock = threading.Lock()
        self.off: str | None = None  # why the tier is off for this run
        self._warned_off = False
        self._warned_untrusted = False
        self._warned: set[str] = set()  # damaged keys already reported
        self._warned_records: set[tuple[str, str]] = set()
        self.refused: set[str] = set()  # keys whose remote entry failed a check
        #: (key, record hash, damage) found on the pool, reported by the main thread
        self._later: list[tuple[str, str, Damaged]] = []

    def answer(self, future: concurrent.futures.Future[Any], default: Any) -> Any:
        """A remote call's result, or ``default`` once the remote is given up (no answer
        within the timeout, or a fault); a damaged object's error is the caller's."""
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            self.fault(f"no answer within {self.timeout:g} s")
        except Fault as exc:
            self.fault(str(exc))
        return default

    def fault(self, why: str) -> None:
        """Any thread: the remote cannot be used; the run goes on with the local cache."""
        with self._lock:
            if self.off is None:
                self.off = why

    def warn_off(self) -> None:
        """The main thread reports the fault once."""
        if self.off is not None and not self._warned_off:
            self._warned_off = True
            warnings.warn(
                f"brainsmith: remote cache {self.url} cannot be used ({self.off}); this run "
                "goes on with the local cache only (nothing more is fetched or uploaded)",
                RemoteCacheWarning,
                stacklevel=caller_level(HERE),
            )

    def warn_read_only(self, why: str) -> None:
        warnings.warn(
            f"brainsmith: remote cache {self.url} {why}; this run only reads "
            "from it (nothing is uploaded)",
            RemoteCacheWarning,
            stacklevel=caller_level(HERE),
        )

    def reject(self, key: str, damage: Damaged, segment: str | None) -> None:
        """A remote entry failed its check: never used, reported once, built here (and
        uploaded again over it)."""
        self.refused.add(key)
        if isinstance(damage, Untrusted):
            self.distrust(damage)
            return
        self.stats.rejected += 1
        if key in self._warned:
            return
        self._warned.add(key)
        of = f" (segment {segment})" if segment else ""
        warnings.warn(
            f"brainsmith: remote cache entry {key[:12]}{of} is damaged: {damage.url}: "
            f"{damage.file} {damage.why}; not used, built here",
            RemoteCacheWarning,
            stacklevel=caller_level(HERE),
        )

    def distrust(self, damage: Damaged) -> None:
        """A document not signed with this runner's key: ignored; one warning for all."""
        self.stats.untrusted += 1
        if self._warned_untrusted:
            return
        self._warned_untrusted = True
        warnings.warn(
            f"brainsmith: remote cache {self.url} holds documents not signed with this "
            f"runner's key ({ENV}), e.g. {damage.url}: {damage.file} {damage.why}; "
            "they are not used (what they describe is built or verified here); the summary "
            "counts them",
            RemoteCacheWarning,
            stacklevel=caller_level(HERE),
        )

    def reject_record(self, key: str, digest: str, damage: Damaged) -> None:
        """A verification record that failed its check: not used, the entry is verified
        here (the entry itself stands on its own checks)."""
        if isinstance(damage, Untrusted):
            self.distrust(damage)
            return
        self.stats.rejected += 1
        if (key, digest) in self._warned_records:
            return
        self._warned_records.add((key, digest))
        warnings.warn(
            f"brainsmith: remote cache verification record {digest} of entry {key[:12]} is "
            f"damaged: {damage.url}: {damage.why}; not used, verified here",
            RemoteCacheWarning,
            stacklevel=caller_level(HERE),
        )

    def record_later(self, key: str, digest: str, damage: Damaged) -> None:
        """Pool thread: a verification record that failed, for the main thread to report."""
        with self._lock:
            self._later.append((key, digest, damage))

    def report_later(self) -> None:
        """Main thread: what the pool's downloads found wrong with verification records."""
        with self._lock:
            later, self._later = self._later, []
        for key, digest, damage in later:
            self.reject_record(key, digest, damage)
