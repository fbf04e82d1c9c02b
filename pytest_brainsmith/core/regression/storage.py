"""Where a baseline lives: a file beside its blueprint or in a folder, or an fsspec URL.

A baseline is read and written whole (a reader sees the old one or the new one) in a
local folder or on object storage, reached as the remote cache reaches it (the same
backends, with bounded calls on S3). Every failure is a BaselineError naming the
location.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..cache.remote.errors import RemoteCacheError
from ..cache.remote.storage import check_backend
from .baseline import BaselineError


def stem(blueprint: Path) -> str:
    """``tfc_sweep.blueprint.yaml`` -> ``tfc_sweep``"""
    name = blueprint.name
    for suffix in (".blueprint.yaml", ".blueprint.yml", ".yaml", ".yml"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_url(location: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location) is not None


def read_text(location: str, timeout: float = 60.0) -> str | None:
    """A baseline's text from a file or an fsspec URL; None if there is none there.
    BaselineError for anything else (unreadable, denied, no answer)."""
    if not is_url(location):
        path = Path(location)
        try:
            return path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError:
            raise BaselineError(f"{location}: not a baseline: the file is not UTF-8 text") from None
        except OSError as exc:
            raise BaselineError(
                f"{location}: cannot read the baseline: {exc.strerror or exc}"
            ) from None
    fs, path = _fs(location, timeout)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None
    except Exception as exc:
        raise BaselineError(f"{location}: cannot read the baseline: {_describe(exc)}") from None
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise BaselineError(f"{location}: not a baseline: the object is not UTF-8 text") from None


def write_text(location: str, text: str, timeout: float = 60.0) -> None:
    """Write a baseline whole: a reader sees the old one or the new one (a file is
    renamed into place; an object store's PUT is atomic)."""
    if not is_url(location):
        path = Path(location)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.partial")
            partial.write_text(text)
            partial.replace(path)
        except OSError as exc:
            raise BaselineError(
                f"{location}: cannot write the baseline: {exc.strerror or exc}"
            ) from None
        return
    fs, path = _fs(location, timeout)
    try:
        fs.pipe_file(path, text.encode())
    except Exception as exc:
        raise BaselineError(f"{location}: cannot write the baseline: {_describe(exc)}") from None


def _fs(location: str, timeout: float) -> tuple[Any, str]:
    try:
        check_backend(location)
    except RemoteCacheError as exc:
        raise BaselineError(str(exc).replace("remote cache", "baseline", 1)) from None
    import fsspec

    protocol = fsspec.core.split_protocol(location)[0]
    options: dict[str, Any] = {}
    if protocol in ("s3", "s3a"):  # bounded calls, as the remote cache makes them
        options["config_kwargs"] = {
            "connect_timeout": timeout,
            "read_timeout": timeout,
            "retries": {"max_attempts": 2},
        }
        options["skip_instance_cache"] = True
    try:
        return fsspec.core.url_to_fs(location, **options)
    except Exception as exc:
        raise BaselineError(f"{location}: cannot reach the baseline: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return f"access denied ({exc})"
    return f"{type(exc).__name__}: {exc}"
