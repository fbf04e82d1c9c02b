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

Read-through: a key the local cache misses is looked up here (downloads run ahead on a
thread pool for every segment the submitted designs need), its bundle is unpacked into
a staging directory of the local cache and published there like a build, checked
against the manifest's digests by ``SegmentCache.publish(expected=...)``. The checkpoint
stays behind (``deferred``) until a child build or a check needs it: the local cache
then fetches it through ``fetch_deferred``. Nothing that fails a check is used: it is
reported once (the object's URL and the file) and built here.

Write-through: an entry this run built is uploaded on the pool while the run goes on,
blobs first and its manifest last (one PUT), so a reader never sees a torn entry; two
runners uploading one key write the same blobs by content and each a whole manifest.

Trust (``remote_trust.py``): every document is used only for the key it was asked for
(its components hash to it); with ``BRAINSMITH_REMOTE_CACHE_KEY`` set, documents are
signed on upload and only those signed with that key are used.

Faults: the first error that is not "not found" (down, denied, slower than the timeout,
a bucket that does not exist) is one ``RemoteCacheWarning`` and turns the tier off for
the rest of the run, which goes on with the local cache; no call waits longer than the
timeout. The bucket is checked when the run starts, and in the write modes whether
this runner can write to it (``readwrite`` then goes on reading only).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from . import remote_trust
from .cache import (
    FAILURE,
    MANIFEST,
    MARKER,
    Entry,
    Failure,
    Mismatch,
    SegmentCache,
    sha256_of,
    size_mismatch,
)
from .toolchain import current as toolchain
from .verify.records import RECORDS, record_path

LAYOUT = "v1"
MODES = ("read", "write", "readwrite")
DEFAULT_TIMEOUT = 60.0
#: Downloads and uploads at once (network-bound: threads, not processes).
THREADS = 8
FORMAT = 1


class RemoteCacheWarning(UserWarning):
    """The remote cache could not be used (down, denied, too slow) or held a damaged entry."""


class RemoteCacheError(ValueError):
    """The remote cache cannot be set up as asked (a bad URL or mode, a missing package)."""


@dataclass
class RemoteStats:
    """What the remote tier moved in this run (seconds: summed over transfers)."""

    fetched: int = 0
    fetched_bytes: int = 0
    fetch_seconds: float = 0.0
    checkpoints: int = 0  # deferred checkpoints fetched when a child needed them
    checkpoint_bytes: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    upload_seconds: float = 0.0
    already_there: int = 0  # built here, but another runner had uploaded it
    failures_fetched: int = 0
    failures_uploaded: int = 0
    rejected: int = 0  # remote entries that failed their check
    untrusted: int = 0  # documents not signed with this runner's key: ignored
    records_fetched: int = 0  # verification records fetched with their entries
    records_uploaded: int = 0
    signatures: int = 0  # documents signed or checked (with a signing key)
    signature_seconds: float = 0.0  # spent signing and checking them
    pending: int = 0  # uploads abandoned at the end (the remote stopped answering)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Download:
    """A remote entry (or failure record) read ahead, not yet checked or published."""

    kind: str  # "entry" | "failure"
    doc: dict[str, Any]
    size: int  # the bundle's bytes
    staged: Path  # where the pool's thread unpacked it (private to this process)
    seconds: float
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # verification, by hash


@dataclass
class _Rejected:
    """A download that failed its check on the pool: reported by the main thread."""

    damage: _Damaged
    segment: str | None


class _Fault(Exception):
    """The remote cannot be used (not a miss, not a damaged entry)."""


class _Damaged(Exception):
    """A remote object failed its check: (object URL, file, why)."""

    def __init__(self, url: str, file: str, why: str) -> None:
        super().__init__(f"{file} {why}")
        self.url, self.file, self.why = url, file, why


class _Untrusted(_Damaged):
    """A remote document not signed with this runner's key (``remote_trust.py``)."""


def check_backend(url: str) -> None:
    """Raise RemoteCacheError unless ``url``'s storage can be used here (fsspec knows its
    protocol and the package implementing it is installed), naming what to install. The
    package is imported later, on the pool, while collection goes on."""
    try:
        import fsspec
        from fsspec.registry import known_implementations, registry
    except ImportError:
        raise RemoteCacheError(
            f"remote cache {url}: needs the package fsspec (and s3fs for s3://): "
            "pip install 'pytest-brainsmith[remote]'"
        ) from None
    protocol = fsspec.core.split_protocol(url)[0] or "file"
    if protocol in registry:
        return
    known = known_implementations.get(protocol)
    if known is None:
        raise RemoteCacheError(f"remote cache {url}: unknown storage protocol {protocol!r}")
    module = str(known["class"]).split(".")[0]
    if importlib.util.find_spec(module) is None:
        extra = " ('pytest-brainsmith[remote]')" if protocol in ("s3", "s3a") else ""
        raise RemoteCacheError(
            f"remote cache {url}: {protocol}:// needs the package {module}: pip install "
            f"{module}{extra} ({known.get('err') or 'not installed'})"
        )


class RemoteCache:
    """The remote tier of one ``SegmentCache`` for one run (see the module's docstring)."""

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
        signed with (``remote_trust.py``); None reads BRAINSMITH_REMOTE_CACHE_KEY, ""
        means none."""
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
            remote_trust.signer_from_env()
            if signing_key is None
            else remote_trust.Signer(signing_key)
            if signing_key
            else None
        )
        self._options = storage_options or {}
        self._lock = threading.Lock()
        self._off: str | None = None  # why the tier is off for this run
        self._warned_off = False
        self._read_only: str | None = None  # why this runner cannot write to it
        self._warned_read_only = False
        self._started = False  # the start's checks reported
        self._warned_untrusted = False
        self._records_tried: set[tuple[str, str]] = set()
        self._records_fetched: set[tuple[str, str]] = set()  # not uploaded back
        self._warned_records: set[tuple[str, str]] = set()
        #: (key, record hash, damage) found on the pool, reported by the main thread
        self._later: list[tuple[str, str, _Damaged]] = []
        self._warned: set[str] = set()  # damaged keys already reported
        self._refused: set[str] = set()  # keys whose remote entry failed a check
        #: downloads read ahead; each ends as None (nothing there), an Entry or Failure
        #: (published ahead), a _Rejected or a _Download (for ``fetch`` to publish)
        self._reads: dict[str, concurrent.futures.Future[Any]] = {}
        self._uploads: list[concurrent.futures.Future[None]] = []
        self._pool = concurrent.futures.ThreadPoolExecutor(
            THREADS, thread_name_prefix="brainsmith-remote"
        )
        # import the backend and make its client while collection goes on
        self._connection = self._pool.submit(self._connect)
        if self.reads:
            cache.deferred_source = self.fetch_deferred

    # -- the storage -------------------------------------------------------------------
    def _connect(self) -> tuple[Any, str]:
        import fsspec

        protocol = fsspec.core.split_protocol(self.url)[0] or "file"
        options = dict(self._options)
        if protocol in ("s3", "s3a"):
            # bounded calls, one attempt: a remote that does not answer is given up on
            options.setdefault(
                "config_kwargs",
                {
                    "connect_timeout": self.timeout,
                    "read_timeout": self.timeout,
                    "retries": {"max_attempts": 2},
                    "max_pool_connections": 2 * THREADS,
                },
            )
            options.setdefault("skip_instance_cache", True)
        fs, root = fsspec.core.url_to_fs(self.url, **options)
        if protocol in ("s3", "s3a"):
            fs.retries = 1  # s3fs's own retry loop, on top of botocore's
        base = f"{root.rstrip('/')}/{LAYOUT}"
        self._check_storage(fs, base, bucket=root.split("/")[0] if protocol != "file" else None)
        return fs, base

    def _check_storage(self, fs: Any, base: str, bucket: str | None) -> None:
        """At start (pool thread): the bucket exists (an object store creates none on
        read, and some on write: uploads would go to a bucket nobody reads), this runner
        may read it and, in the write modes, write to it. _Fault if the tier cannot be
        used; a ``readwrite`` runner that cannot write goes on reading only."""
        try:
            if bucket is not None:
                try:
                    fs.info(bucket)
                except FileNotFoundError:
                    raise _Fault(f"bucket {bucket!r} does not exist") from None
                except PermissionError:
                    pass  # a key for a prefix only may not see the bucket: the reads tell
            if self.reads:
                with contextlib.suppress(FileNotFoundError):
                    fs.cat_file(f"{base}/entries/probe.json")
        except _Fault:
            raise
        except Exception as exc:
            raise _Fault(_describe(exc, self.timeout)) from exc
        if not self.writes:
            return
        probe = f"{base}/probes/{uuid.uuid4().hex}"
        try:
            if _is_local(fs):
                Path(probe).parent.mkdir(parents=True, exist_ok=True)
                Path(probe).write_bytes(b"")
            else:
                fs.pipe_file(probe, b"")
            with contextlib.suppress(Exception):
                fs.rm_file(probe)
        except Exception as exc:
            why = f"cannot be written ({_describe(exc, self.timeout)})"
            if not self.reads:
                raise _Fault(why) from exc
            self._read_only = why

    def _fs(self) -> tuple[Any, str]:
        try:
            return self._connection.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            raise _Fault(f"no connection within {self.timeout:g} s") from None
        except Exception as exc:
            raise _Fault(_describe(exc, self.timeout)) from exc

    def _path(self, *parts: str) -> str:
        return "/".join([self._fs()[1], *parts])

    def object_url(self, *parts: str) -> str:
        """An object's URL as the user wrote the remote's, for messages."""
        return "/".join([self.url, LAYOUT, *parts])

    @staticmethod
    def _blob(sha256: str) -> tuple[str, str]:
        return ("blobs", f"{sha256[:2]}/{sha256}")

    def _get(self, *parts: str) -> bytes | None:
        """An object's bytes; None if there is none (any other error is a _Fault)."""
        fs, _ = self._fs()
        try:
            return fs.cat_file(self._path(*parts))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise _Fault(_describe(exc, self.timeout)) from exc

    def _put(self, data: bytes, *parts: str) -> None:
        """Write an object whole: readers see the old one or the new one, never a part
        (object stores put atomically; a directory through a rename)."""
        self._write(parts, lambda dst: dst.write(data), lambda fs, path: fs.pipe_file(path, data))

    def _put_file(self, local: Path, *parts: str) -> None:
        def copy(dst: Any) -> None:
            with open(local, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)

        self._write(parts, copy, lambda fs, path: fs.put_file(str(local), path))

    def _write(
        self,
        parts: tuple[str, ...],
        fill: Callable[[Any], Any],
        upload: Callable[[Any, str], Any],
    ) -> None:
        """One object written whole: in a directory, ``fill`` a temporary file that is
        then renamed over it; on object storage, ``upload`` (a PUT is atomic)."""
        fs, _ = self._fs()
        path = self._path(*parts)
        try:
            if _is_local(fs):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                tmp = f"{path}.{uuid.uuid4().hex}.tmp"
                with open(tmp, "wb") as dst:
                    fill(dst)
                os.replace(tmp, path)
            else:
                upload(fs, path)
        except Exception as exc:
            raise _Fault(_describe(exc, self.timeout)) from exc

    def _size(self, *parts: str) -> int | None:
        fs, _ = self._fs()
        try:
            return int(fs.info(self._path(*parts))["size"])
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise _Fault(_describe(exc, self.timeout)) from exc

    # -- faults ------------------------------------------------------------------------
    @property
    def off(self) -> str | None:
        """Why the tier is off for this run (None while it works)."""
        return self._off

    def _answer(self, future: concurrent.futures.Future[Any], default: Any) -> Any:
        """A remote call's result, or ``default`` once the remote is given up (no answer
        within the timeout, or a fault); a damaged object's error is the caller's."""
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            self._fault(f"no answer within {self.timeout:g} s")
        except _Fault as exc:
            self._fault(str(exc))
        return default

    def _fault(self, why: str) -> None:
        """Any thread: the remote cannot be used; the run goes on with the local cache."""
        with self._lock:
            if self._off is None:
                self._off = why

    def start(self) -> None:
        """The main thread, when the run's first designs are submitted: wait for the
        start's checks (``_check_storage``, bounded by the timeout) and report a bucket
        that does not exist, or cannot be used or written, once."""
        if self._started:
            return
        self._started = True
        self._answer(self._connection, None)
        self._warn_off()
        if self._off is None and self._read_only is not None and not self._warned_read_only:
            self._warned_read_only = True
            warnings.warn(
                f"brainsmith: remote cache {self.url} {self._read_only}; this run only reads "
                "from it (nothing is uploaded)",
                RemoteCacheWarning,
                stacklevel=2,
            )

    def _warn_off(self) -> None:
        """The main thread reports the fault once (warnings raised by the pool's threads
        would land in whatever test runs)."""
        if self._off is not None and not self._warned_off:
            self._warned_off = True
            warnings.warn(
                f"brainsmith: remote cache {self.url} cannot be used ({self._off}); this run "
                "goes on with the local cache only (nothing more is fetched or uploaded)",
                RemoteCacheWarning,
                stacklevel=2,
            )

    def _reject(self, key: str, damage: _Damaged, segment: str | None) -> None:
        """A remote entry failed its check: never used, reported once, built here (and
        uploaded again over it)."""
        self._refused.add(key)
        if isinstance(damage, _Untrusted):
            self._distrust(damage)
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
            stacklevel=3,
        )

    def _distrust(self, damage: _Damaged) -> None:
        """A document not signed with this runner's key: ignored; one warning for all."""
        self.stats.untrusted += 1
        if self._warned_untrusted:
            return
        self._warned_untrusted = True
        warnings.warn(
            f"brainsmith: remote cache {self.url} holds documents not signed with this "
            f"runner's key ({remote_trust.ENV}), e.g. {damage.url}: {damage.file} {damage.why}; "
            "they are not used (what they describe is built or verified here); the summary "
            "counts them",
            RemoteCacheWarning,
            stacklevel=4,
        )

    def _reject_record(self, key: str, digest: str, damage: _Damaged) -> None:
        """A verification record that failed its check: not used, the entry is verified
        here (the entry itself stands on its own checks)."""
        if isinstance(damage, _Untrusted):
            self._distrust(damage)
            return
        self.stats.rejected += 1
        if (key, digest) in self._warned_records:
            return
        self._warned_records.add((key, digest))
        warnings.warn(
            f"brainsmith: remote cache verification record {digest} of entry {key[:12]} is "
            f"damaged: {damage.url}: {damage.why}; not used, verified here",
            RemoteCacheWarning,
            stacklevel=4,
        )

    def _report_later(self) -> None:
        """Main thread: what the pool's downloads found wrong with verification records."""
        with self._lock:
            later, self._later = self._later, []
        for key, digest, damage in later:
            self._reject_record(key, digest, damage)

    def _check_doc(self, key: str, doc: Any, body: Any, where: str, file: str) -> None:
        """A document is used only for its key, and with a signing key only if signed
        with it: _Damaged or _Untrusted if not."""
        if self.signer is not None:
            started = time.perf_counter()
            why = self.signer.check(doc) if isinstance(doc, dict) else "is not a JSON object"
            self._count(signatures=1, signature_seconds=time.perf_counter() - started)
            if why is not None:
                raise _Untrusted(where, file, why)
        why = remote_trust.mismatch(key, doc, body)
        if why is not None:
            raise _Damaged(where, file, why)

    def _sign(self, doc: dict[str, Any]) -> dict[str, Any]:
        if self.signer is None:
            return doc
        started = time.perf_counter()
        signed = self.signer.sign(doc)
        self._count(signatures=1, signature_seconds=time.perf_counter() - started)
        return signed

    # -- read-through ------------------------------------------------------------------
    def prefetch(self, keys: list[str]) -> None:
        """Start downloading what these keys' entries need, unless the local cache has
        them: ``fetch`` then finds them read (the checkpoints stay behind). The first
        call also reports what the start's checks found (``start``)."""
        if self.reads and self._off is None:
            for key in keys:
                if key in self._reads or key in self._refused:
                    continue
                if (self.cache.entry_path(key) / MARKER).is_file():
                    continue
                self._reads[key] = self._pool.submit(self._download, key, True)
        self.start()

    def fetch(self, key: str) -> Entry | Failure | None:
        """``key``'s entry from the remote, checked and published in the local cache (or,
        when failures are shared, its failure record); None when the remote has none, or
        what it has fails a check (reported), or the remote cannot be used. Called with
        the key's lock held."""
        self._warn_off()
        if not self.reads or self._off is not None or key in self._refused:
            return None
        future = self._reads.pop(key, None) or self._pool.submit(self._download, key, False)
        try:
            got = self._answer(future, None)
        except _Damaged as exc:
            self._reject(key, exc, None)
            return None
        self._warn_off()
        self._report_later()
        if got is None or isinstance(got, Entry | Failure):
            return got  # nothing there, or published ahead (before this lock was taken)
        if isinstance(got, _Rejected):
            self._reject(key, got.damage, got.segment)
            return None
        try:
            found = self._publish(key, got)
        except _Damaged as exc:
            self._reject(key, exc, got.doc.get("manifest", {}).get("segment"))
            return None
        self._report_later()
        return found

    def _download(self, key: str, ahead: bool) -> Any:
        """Pool thread: the entry's manifest and bundle (or a failure's), unpacked; read
        ``ahead`` of the engine, also published (``_publish_ahead``)."""
        if self._off is not None:
            return None
        started = time.perf_counter()
        kind, parts = "entry", ("entries", f"{key}.json")
        raw = self._get(*parts)
        if raw is None and self.share_failures:
            kind, parts = "failure", ("failures", f"{key}.json")
            raw = self._get(*parts)
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            bundle = doc["bundle"]
            sha, size = str(bundle["sha256"]), int(bundle["size"])
        except (ValueError, KeyError, TypeError) as exc:
            raise _Damaged(self.object_url(*parts), MANIFEST, f"is unreadable ({exc})") from None
        body = doc.get("manifest") if kind == "entry" else doc.get("record")
        self._check_doc(
            key, doc, body, self.object_url(*parts), MANIFEST if kind == "entry" else FAILURE
        )
        data = self._get(*self._blob(sha))
        if data is None:
            raise _Damaged(self.object_url(*self._blob(sha)), "bundle", "is missing")
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            why = (
                size_mismatch(len(data), size)
                if len(data) != size
                else "does not match its sha256 (rewritten)"
            )
            raise _Damaged(self.object_url(*self._blob(sha)), "bundle", why)
        # unpacked here, beside the builds' staging directories (same filesystem: published
        # by a rename), under a name no build's clean-up takes for its own
        tmp_root = self.cache.base / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f"fetch.{key}.", dir=tmp_root))
        try:
            _unpack(data, staged, self.object_url(*self._blob(sha)))
        except BaseException:
            self.cache.discard_staging(staged)
            raise
        got = _Download(kind, doc, len(data), staged, time.perf_counter() - started)
        if kind == "entry":
            got.records = self._download_records(key, doc.get("verification"))
        return self._publish_ahead(key, got) if ahead else got

    def _download_records(self, key: str, listed: Any) -> dict[str, dict[str, Any]]:
        """Pool thread: the verification records an entry's document lists, checked (one
        that fails is reported by the main thread and not used: verified here)."""
        records: dict[str, dict[str, Any]] = {}
        for digest in listed if isinstance(listed, list) else []:
            if not isinstance(digest, str):
                continue
            try:
                record = self._download_record(key, digest)
            except _Damaged as exc:
                with self._lock:
                    self._later.append((key, digest, exc))
                continue
            if record is not None:
                records[digest] = record
        return records

    def _download_record(self, key: str, digest: str) -> dict[str, Any] | None:
        """Pool thread: one verification record, checked; None if there is none."""
        parts = ("verify", key, f"{digest}.json")
        raw = self._get(*parts)
        if raw is None:
            return None
        where = self.object_url(*parts)
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise _Damaged(where, "verification record", f"is unreadable ({exc})") from None
        record = doc.get("record") if isinstance(doc, dict) else None
        if self.signer is not None:
            started = time.perf_counter()
            why = self.signer.check(doc) if isinstance(doc, dict) else "is not a JSON object"
            self._count(signatures=1, signature_seconds=time.perf_counter() - started)
            if why is not None:
                raise _Untrusted(where, "verification record", why)
        for found, what in (
            (doc.get("key") if isinstance(doc, dict) else None, "names key"),
            (record.get("key") if isinstance(record, dict) else None, "holds the record of key"),
        ):
            if found != key:
                raise _Damaged(where, "verification record", f"{what} {found!r}, not {key}")
        assert isinstance(doc, dict) and isinstance(record, dict)
        if doc.get("hash") != digest or record.get("hash") != digest:
            why = f"is for settings {record.get('hash')!r}, not {digest}"
            raise _Damaged(where, "verification record", why)
        return record

    def fetch_record(self, key: str, digest: str) -> bool:
        """A verification record of ``key``'s entry for the settings ``digest`` that the
        local cache lacks, fetched into it (once per run and record); whether it is there
        now."""
        self._warn_off()
        if not self.reads or self._off is not None or (key, digest) in self._records_tried:
            return False
        self._records_tried.add((key, digest))
        try:
            record = self._answer(self._pool.submit(self._download_record, key, digest), None)
        except _Damaged as exc:
            self._reject_record(key, digest, exc)
            return False
        self._warn_off()
        if record is None:
            return False
        return bool(self._store_records(key, {digest: record}))

    def _store_records(self, key: str, records: dict[str, dict[str, Any]]) -> int:
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
                self._records_fetched.add((key, digest))
            written += 1
        self._count(records_fetched=written)
        return written

    def _publish_ahead(self, key: str, got: _Download) -> Any:
        """Pool thread: publish a download now if the key's lock is free (the engine then
        finds the entry in the local cache, ``fetched`` in this run); else the lock's
        holder (the engine, waiting in ``fetch``, or another process) decides."""
        from filelock import FileLock, Timeout

        # a lock object of its own: the cache's are reentrant for the engine's thread
        lock = FileLock(str(self.cache.base / "locks" / f"{key}.lock"))
        try:
            lock.acquire(timeout=0)
        except (Timeout, OSError):
            return got
        try:
            if (self.cache.entry_path(key) / MARKER).is_file():  # built or fetched meanwhile
                self.cache.discard_staging(got.staged)
                return Entry(key, self.cache.entry_path(key))
            try:
                return self._publish(key, got)
            except _Damaged as exc:
                return _Rejected(exc, got.doc.get("manifest", {}).get("segment"))
        finally:
            lock.release()

    def _publish(self, key: str, got: _Download) -> Entry | Failure:
        """Unpack a download into staging and publish it like a build; _Damaged if any
        file is not what the manifest says."""
        staged = got.staged
        where = self.object_url(*self._blob(got.doc["bundle"]["sha256"]))
        try:
            if got.kind == "failure":
                record = got.doc.get("record")
                if not isinstance(record, dict):
                    raise _Damaged(
                        self.object_url("failures", f"{key}.json"), FAILURE, "is unreadable"
                    )
                failure = self.cache.record_failure(key, staged, record)
                self._count(failures_fetched=1, fetched_bytes=got.size)
                return failure
            manifest, damage = SegmentCache.check_manifest(key, got.doc.get("manifest"))
            if damage is not None:
                raise _Damaged(self.object_url("entries", f"{key}.json"), damage.file, damage.why)
            assert manifest is not None
            deferred = [n for n in got.doc.get("deferred") or [] if isinstance(n, str)]
            fetched = {"from": self.url, "run_id": self.run_id, "built_by": manifest.get("run_id")}
            try:
                entry = self.cache.publish(
                    key,
                    staged,
                    {**manifest, "fetched": fetched},
                    expected=manifest["files"],
                    deferred=deferred,
                )
            except Mismatch as exc:
                raise _Damaged(where, exc.damage.file, exc.damage.why) from None
            self._store_records(key, got.records)
            self._count(fetched=1, fetched_bytes=got.size, fetch_seconds=got.seconds)
            return entry
        finally:
            self.cache.discard_staging(staged)

    def fetch_deferred(self, key: str, name: str, record: dict[str, Any], dest: Path) -> str | None:
        """The local cache's ``deferred_source``: download a file an entry left here (its
        checkpoint) to ``dest`` and check it; None when done, else why not."""
        self._warn_off()
        if self._off is not None:
            return f"{name} of entry {key[:12]} was left on the remote cache, which is off"
        sha, size = str(record.get("sha256")), record.get("size")
        parts = self._blob(sha)
        started = time.perf_counter()
        future = self._pool.submit(self._get_file, dest, *parts)
        found = self._answer(future, False)
        self._warn_off()
        if self._off is not None:
            return f"{name} of entry {key[:12]} was left on the remote cache, which is off"
        if not found:
            damage = _Damaged(self.object_url(*parts), name, "is missing")
        else:
            got = dest.stat().st_size
            if got != size:
                damage = _Damaged(self.object_url(*parts), name, size_mismatch(got, size))
            elif sha256_of(dest) != sha:
                why = "does not match its sha256 in the manifest (rewritten)"
                damage = _Damaged(self.object_url(*parts), name, why)
            else:
                self._count(
                    checkpoints=1,
                    checkpoint_bytes=got,
                    fetch_seconds=time.perf_counter() - started,
                )
                return None
        self._reject(key, damage, None)
        return f"{name} of entry {key[:12]} on the remote cache {damage.why}"

    def _get_file(self, dest: Path, *parts: str) -> bool:
        fs, _ = self._fs()
        try:
            fs.get_file(self._path(*parts), str(dest))
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise _Fault(_describe(exc, self.timeout)) from exc
        return True

    # -- write-through -----------------------------------------------------------------
    def built(self, key: str, status: str) -> None:
        """The engine built ``key`` (published, or recorded as failed) or verified its
        entry (``verified``: a record made here): upload it while the run goes on."""
        self._warn_off()
        if not self.writes or self._off is not None or self._read_only is not None:
            return
        if status == "built":
            self._uploads.append(self._pool.submit(self._upload, key))
        elif status == "verified":
            self._uploads.append(self._pool.submit(self._upload_records, key))
        elif status == "failed" and self.share_failures:
            self._uploads.append(self._pool.submit(self._upload_failure, key))

    def _upload_records(self, key: str) -> list[str]:
        """Pool thread: upload the entry's verification records made here (each a signed
        document of its own, written whole); the hashes uploaded."""
        if self._off is not None:
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
            if record.get("key") != key or (key, digest) in self._records_fetched:
                continue
            doc = self._sign({"format": FORMAT, "key": key, "hash": digest, "record": record})
            data = json.dumps(doc, sort_keys=True, default=str).encode()
            self._put(data, "verify", key, f"{digest}.json")
            uploaded.append(digest)
        self._count(records_uploaded=len(uploaded))
        return uploaded

    def _upload(self, key: str) -> None:
        if self._off is not None:
            return
        started = time.perf_counter()
        path = self.cache.entry_path(key)
        manifest = json.loads((path / MANIFEST).read_text())
        force = key in self._refused  # what is there failed a check: replace it
        if not force and self._size("entries", f"{key}.json") is not None:
            self._count(already_there=1)
            return
        files: dict[str, dict[str, Any]] = manifest["files"]
        checkpoint = files.get(toolchain().output_model)
        deferred: list[str] = []
        moved = 0
        if (
            checkpoint is not None
            and "sha256" in checkpoint
            and (path / toolchain().output_model).is_file()
        ):
            deferred = sorted(
                n for n, r in files.items() if r.get("sha256") == checkpoint["sha256"]
            )
            blob = self._blob(checkpoint["sha256"])
            if force or self._size(*blob) != checkpoint["size"]:
                self._put_file(path / toolchain().output_model, *blob)
                moved += checkpoint["size"]
        bundle = _pack(path, [n for n in files if n not in deferred], files)
        sha = hashlib.sha256(bundle).hexdigest()
        self._put(bundle, *self._blob(sha))
        doc = {
            "format": FORMAT,
            "key": key,
            "manifest": manifest,
            "bundle": {"sha256": sha, "size": len(bundle)},
            "deferred": deferred,
            "verification": self._upload_records(key),
            "uploaded": {"run_id": self.run_id, "host": os.uname().nodename, "when": time.time()},
        }
        doc = self._sign(doc)
        self._put(json.dumps(doc, sort_keys=True).encode(), "entries", f"{key}.json")  # last
        if self.share_failures:
            with contextlib.suppress(Exception):
                fs, _ = self._fs()
                fs.rm_file(self._path("failures", f"{key}.json"))
        self._count(
            uploaded=1,
            uploaded_bytes=moved + len(bundle),
            upload_seconds=time.perf_counter() - started,
        )

    def _upload_failure(self, key: str) -> None:
        if self._off is not None:
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
        bundle = _pack(failure.path, names, None)
        sha = hashlib.sha256(bundle).hexdigest()
        self._put(bundle, *self._blob(sha))
        doc = {
            "format": FORMAT,
            "key": key,
            "record": failure.record,
            "bundle": {"sha256": sha, "size": len(bundle)},
        }
        doc = self._sign(json.loads(json.dumps(doc, default=str)))  # signed as read back
        self._put(json.dumps(doc, sort_keys=True, default=str).encode(), "failures", f"{key}.json")
        self._count(
            failures_uploaded=1,
            uploaded_bytes=len(bundle),
            upload_seconds=time.perf_counter() - started,
        )

    def _count(self, **amounts: float) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self.stats, name, getattr(self.stats, name) + amount)

    # -- the end -----------------------------------------------------------------------
    def close(self) -> None:
        """Wait for the uploads still pending (giving up when none finishes within the
        timeout: the remote stopped answering), then stop the pool."""
        self.start()  # a run that submitted nothing still hears what the start found
        try:
            pending = set(self._uploads)
            while pending:
                done, pending = concurrent.futures.wait(
                    pending, timeout=self.timeout, return_when=concurrent.futures.FIRST_COMPLETED
                )
                if not done:
                    self._fault(f"uploads made no progress for {self.timeout:g} s")
                    self.stats.pending = len(pending)
                    break
                for future in done:
                    exc = future.exception()
                    if isinstance(exc, _Fault):
                        self._fault(str(exc))
                    # else a local entry gone meanwhile (pruned, moved aside): not uploaded
        finally:
            # what still runs ends within the timeout (every call is bounded by it), so
            # that a fault it meets is reported below, not after the run
            self._pool.shutdown(wait=True, cancel_futures=True)
            for future in self._reads.values():  # read ahead, never asked for
                if future.cancelled():
                    continue
                exc = future.exception()
                if isinstance(exc, _Fault):
                    self._fault(str(exc))
                elif exc is None and isinstance(future.result(), _Download):
                    self.cache.discard_staging(future.result().staged)
            self._reads.clear()
            self._uploads.clear()
        self._warn_off()
        self._report_later()

    def report(self) -> dict[str, Any]:
        """The counts and why the tier is off, if it is: JSON data (xdist's workers send it)."""
        return {**self.stats.as_dict(), "off": self._off, "read_only": self._read_only}


def summary_line(url: str, mode: str, stats: dict[str, Any], off: str | None = None) -> str:
    """``remote cache URL (mode): fetched N entries (X MB, Y s), ...`` for the terminal."""
    mb = 1e6
    parts = [
        f"fetched {int(stats.get('fetched', 0))} entries "
        f"({stats.get('fetched_bytes', 0) / mb:.1f} MB) and "
        f"{int(stats.get('checkpoints', 0))} checkpoints "
        f"({stats.get('checkpoint_bytes', 0) / mb:.1f} MB) "
        f"in {stats.get('fetch_seconds', 0.0):.1f} s of transfers",
        f"uploaded {int(stats.get('uploaded', 0))} "
        f"({stats.get('uploaded_bytes', 0) / mb:.1f} MB in "
        f"{stats.get('upload_seconds', 0.0):.1f} s of transfers)",
    ]
    if stats.get("already_there"):
        parts.append(f"{int(stats['already_there'])} already there")
    if stats.get("failures_fetched") or stats.get("failures_uploaded"):
        parts.append(
            f"failure records: {int(stats.get('failures_fetched', 0))} fetched, "
            f"{int(stats.get('failures_uploaded', 0))} uploaded"
        )
    if stats.get("records_fetched") or stats.get("records_uploaded"):
        parts.append(
            f"verification records: {int(stats.get('records_fetched', 0))} fetched, "
            f"{int(stats.get('records_uploaded', 0))} uploaded"
        )
    if stats.get("rejected"):
        parts.append(f"{int(stats['rejected'])} damaged entries not used")
    if stats.get("signatures"):
        parts.append(
            f"{int(stats['signatures'])} signatures made or checked "
            f"({1000 * stats.get('signature_seconds', 0.0):.0f} ms)"
        )
    if stats.get("untrusted"):
        parts.append(
            f"{int(stats['untrusted'])} documents not signed with this runner's key ignored"
        )
    if stats.get("pending"):
        parts.append(f"{int(stats['pending'])} uploads abandoned")
    line = f"remote cache {url} ({mode}): " + ", ".join(parts)
    return line + (f"; OFF: {off}" if off else "")


def _is_local(fs: Any) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _describe(exc: BaseException, timeout: float) -> str:
    """Why the remote cannot be used, in a few words."""
    if isinstance(exc, PermissionError):
        return f"access denied: {exc}"
    name = type(exc).__name__
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return f"no answer within {timeout:g} s ({name})"
    if "Connect" in name or isinstance(exc, ConnectionError):
        return f"cannot connect: {exc}"
    return f"{name}: {exc}"


#: A bundle: this magic, the header's length (8 bytes, big-endian), the header (JSON: each
#: file's name, size and mtime in ns, or a symlink's target), then the files' bytes.
BUNDLE_MAGIC = b"brainsmith-bundle-1\n"


def _pack(root: Path, names: list[str], files: dict[str, dict[str, Any]] | None) -> bytes:
    """``root``'s files ``names`` as one bundle (symlinks as the manifest records them),
    with their modification times, so that files unpacked elsewhere are settled at once
    (the local cache records their fingerprints when it publishes them)."""
    header: list[list[Any]] = []
    payload: list[bytes] = []
    for name in sorted(names):
        path = root / name
        record = (files or {}).get(name, {})
        if "link" in record:
            header.append([name, "link", record["link"]])
            continue
        data = path.read_bytes()
        header.append([name, len(data), os.lstat(path).st_mtime_ns])
        payload.append(data)
    head = json.dumps(header).encode()
    return b"".join([BUNDLE_MAGIC, len(head).to_bytes(8, "big"), head, *payload])


def _unpack(data: bytes, into: Path, where: str) -> None:
    """Write a bundle's files under ``into`` (nothing outside it: no absolute name, no
    ``..``, no symlink leading out); _Damaged if it cannot be read."""
    try:
        if not data.startswith(BUNDLE_MAGIC):
            raise ValueError("not a bundle")
        at = len(BUNDLE_MAGIC)
        length = int.from_bytes(data[at : at + 8], "big")
        header = json.loads(data[at + 8 : at + 8 + length])
        at += 8 + length
        made: set[Path] = set()
        for name, size, extra in header:
            rel = PurePosixPath(name)
            if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                raise ValueError(f"{name!r} would be written outside the entry")
            target = into.joinpath(*rel.parts)
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            if size == "link":
                link = PurePosixPath(extra)
                if link.is_absolute() or ".." in (rel.parent / link).parts:
                    raise ValueError(f"symlink {name!r} leads outside the entry")
                os.symlink(extra, target)
                continue
            chunk = data[at : at + size]
            if len(chunk) != size:
                raise ValueError(f"{name} is cut short")
            at += size
            with open(target, "wb") as handle:
                handle.write(chunk)
            os.utime(target, ns=(extra, extra))
        if at != len(data):
            raise ValueError("bytes after the last file")
    except (ValueError, TypeError, OSError) as exc:
        raise _Damaged(where, "bundle", f"cannot be unpacked ({exc})") from None
