"""The remote tier's storage through fsspec: ``s3://BUCKET/PREFIX`` with s3fs (the
standard AWS configuration), any other fsspec backend by its URL (``gs://``,
``az://``, ``file:///shared/dir``...). Every call is bounded by the timeout and any
error but "not found" is a Fault; objects are written whole (a PUT, or a rename).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import Fault, RemoteCacheError, describe

LAYOUT = "v1"
#: Downloads and uploads at once (network-bound: threads, not processes).
THREADS = 8


def check_backend(url: str) -> None:
    """Raise RemoteCacheError unless ``url``'s storage can be used here (fsspec knows its
    protocol and the package implementing it is installed), naming what to install. The
    package is imported later, by ``ObjectStore.open``."""
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


class ObjectStore:
    """The objects under one remote cache URL (``v1/`` below it)."""

    def __init__(
        self, url: str, timeout: float, options: dict[str, Any], *, reads: bool, writes: bool
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.reads = reads
        self.writes = writes
        self._options = options
        self.read_only: str | None = None  # why this runner cannot write to it
        self.connection: concurrent.futures.Future[tuple[Any, str]] | None = None

    def open(self, pool: concurrent.futures.Executor) -> None:
        """Import the backend here, then make its client on ``pool`` while collection goes
        on. Not the import on the pool: importing botocore enters ``warnings.catch_warnings``,
        whose state is the process's (Python < 3.14), and leaving it on another thread
        undoes pytest's capture of the main thread's warnings, which then go to stderr
        or nowhere instead of the summary."""
        import fsspec  # an optional dependency (check_backend said so at start)

        protocol = fsspec.core.split_protocol(self.url)[0] or "file"
        fsspec.get_filesystem_class(protocol)
        self.connection = pool.submit(self._connect, protocol)

    def _connect(self, protocol: str) -> tuple[Any, str]:
        import fsspec

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
        self._check(fs, base, bucket=root.split("/")[0] if protocol != "file" else None)
        return fs, base

    def _check(self, fs: Any, base: str, bucket: str | None) -> None:
        """At start (pool thread): the bucket exists (an object store creates none on
        read, and some on write: uploads would go to a bucket nobody reads), this runner
        may read it and, in the write modes, write to it. Fault if the tier cannot be
        used; a ``readwrite`` runner that cannot write goes on reading only."""
        try:
            if bucket is not None:
                try:
                    fs.info(bucket)
                except FileNotFoundError:
                    raise Fault(f"bucket {bucket!r} does not exist") from None
                except PermissionError:
                    pass  # a key for a prefix only may not see the bucket: the reads tell
            if self.reads:
                with contextlib.suppress(FileNotFoundError):
                    fs.cat_file(f"{base}/entries/probe.json")
        except Fault:
            raise
        except Exception as exc:
            raise Fault(describe(exc, self.timeout)) from exc
        if not self.writes:
            return
        probe = f"{base}/probes/{uuid.uuid4().hex}"
        try:
            if is_local(fs):
                Path(probe).parent.mkdir(parents=True, exist_ok=True)
                Path(probe).write_bytes(b"")
            else:
                fs.pipe_file(probe, b"")
            with contextlib.suppress(Exception):
                fs.rm_file(probe)
        except Exception as exc:
            why = f"cannot be written ({describe(exc, self.timeout)})"
            if not self.reads:
                raise Fault(why) from exc
            self.read_only = why

    def fs(self) -> tuple[Any, str]:
        assert self.connection is not None, "ObjectStore.open first"
        try:
            return self.connection.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            raise Fault(f"no connection within {self.timeout:g} s") from None
        except Exception as exc:
            raise Fault(describe(exc, self.timeout)) from exc

    def path(self, *parts: str) -> str:
        return "/".join([self.fs()[1], *parts])

    def object_url(self, *parts: str) -> str:
        """An object's URL as the user wrote the remote's, for messages."""
        return "/".join([self.url, LAYOUT, *parts])

    @staticmethod
    def blob(sha256: str) -> tuple[str, str]:
        return ("blobs", f"{sha256[:2]}/{sha256}")

    def get(self, *parts: str) -> bytes | None:
        """An object's bytes; None if there is none (any other error is a Fault)."""
        fs, _ = self.fs()
        try:
            return fs.cat_file(self.path(*parts))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise Fault(describe(exc, self.timeout)) from exc

    def get_file(self, dest: Path, *parts: str) -> bool:
        """Download an object to ``dest``; False if there is none."""
        fs, _ = self.fs()
        try:
            fs.get_file(self.path(*parts), str(dest))
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise Fault(describe(exc, self.timeout)) from exc
        return True

    def size(self, *parts: str) -> int | None:
        fs, _ = self.fs()
        try:
            return int(fs.info(self.path(*parts))["size"])
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise Fault(describe(exc, self.timeout)) from exc

    def put(self, data: bytes, *parts: str) -> None:
        """Write an object whole: readers see the old one or the new one, never a part
        (object stores put atomically; a directory through a rename)."""
        self._write(parts, lambda dst: dst.write(data), lambda fs, path: fs.pipe_file(path, data))

    def put_file(self, local: Path, *parts: str) -> None:
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
        fs, _ = self.fs()
        path = self.path(*parts)
        try:
            if is_local(fs):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                tmp = f"{path}.{uuid.uuid4().hex}.tmp"
                with open(tmp, "wb") as dst:
                    fill(dst)
                os.replace(tmp, path)
            else:
                upload(fs, path)
        except Exception as exc:
            raise Fault(describe(exc, self.timeout)) from exc

    def remove(self, *parts: str) -> None:
        """Best effort: remove an object (a failure record replaced by an entry)."""
        with contextlib.suppress(Exception):
            fs, _ = self.fs()
            fs.rm_file(self.path(*parts))


def is_local(fs: Any) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
