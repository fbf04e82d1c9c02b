"""The segment cache: the local cache on disk (``store.py`` and its parts), the remote
tier behind it (``remote/``) and the kept executions of models (``execution_memo.py``).

The names other modules import are re-exported here; ``remote/`` is imported on its own
(it needs fsspec, and the engine's verification records).
"""

from .deferred import DeferredSource
from .errors import CacheError, CacheIntegrityWarning, CacheLockError, EntryInUse
from .failures import Failure
from .fingerprints import sha256_of, size_mismatch
from .integrity import Damage, Mismatch, check_manifest
from .layout import DEFERRED, FAILURE, LAYOUT, MANIFEST, MARKER, QUARANTINE_NOTE, VERIFIED
from .locks import KeyLock
from .store import Entry, SegmentCache

__all__ = [
    "DEFERRED",
    "FAILURE",
    "LAYOUT",
    "MANIFEST",
    "MARKER",
    "QUARANTINE_NOTE",
    "VERIFIED",
    "CacheError",
    "CacheIntegrityWarning",
    "CacheLockError",
    "Damage",
    "DeferredSource",
    "Entry",
    "EntryInUse",
    "Failure",
    "KeyLock",
    "Mismatch",
    "SegmentCache",
    "check_manifest",
    "sha256_of",
    "size_mismatch",
]
