"""A second cache tier on object storage, shared by CI runners (``--brainsmith-remote-cache``).

Storage goes through fsspec: ``s3://BUCKET/PREFIX`` with s3fs (the standard AWS
configuration: ``AWS_ENDPOINT_URL``, keys, profiles), any other fsspec backend by its
URL (``gs://``, ``az://``, ``file:///shared/dir``...). Layout under the URL::

    v1/blobs/<sha[:2]>/<sha256>   content-addressed files: an entry's bundle (its files
                                  but the checkpoint, in one object) and its checkpoint
    v1/entries/<key>.json         the entry's manifest (the local cache's, with the
                                  bundle's and the checkpoint's digests), written last
    v1/verify/<key>/<hash>.json   the entry's verification records (core/verify/),
                                  one per verify settings: a runner that fetches a
                                  verified entry reports it verified
    v1/failures/<key>.json        a failure record with its bundle (only when shared)
    v1/probes/<id>                written and removed at start: can this runner write?

The tier (``tier.py``) owns its parts: the storage (``storage.py``, through fsspec), the
reads (``downloads.py``), the writes (``uploads.py``), the entries' verification records
(``records.py``), one bundle per entry (``bundle.py``), the faults that turn it off
(``faults.py``) and whom it trusts (``trust.py``: every document is used only for the key
it was asked for; with ``BRAINSMITH_REMOTE_CACHE_KEY`` set, documents are signed on
upload and only those signed with that key are used).
"""

from .errors import RemoteCacheError, RemoteCacheWarning
from .stats import RemoteStats, summary_line
from .storage import check_backend
from .tier import DEFAULT_TIMEOUT, MODES, RemoteCache

__all__ = [
    "DEFAULT_TIMEOUT",
    "MODES",
    "RemoteCache",
    "RemoteCacheError",
    "RemoteCacheWarning",
    "RemoteStats",
    "check_backend",
    "summary_line",
]
