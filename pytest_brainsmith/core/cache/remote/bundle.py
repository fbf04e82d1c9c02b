"""An entry's files as one object (a bundle), so that fetching an entry is one GET.

A bundle: a magic line, the header's length (8 bytes, big-endian), the header (JSON:
each file's name, size and mtime in ns, or a symlink's target), then the files' bytes.
Unpacking writes nothing outside the folder it is given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import Damaged

BUNDLE_MAGIC = b"brainsmith-bundle-1\n"


def pack(root: Path, names: list[str], files: dict[str, dict[str, Any]] | None) -> bytes:
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


def unpack(data: bytes, into: Path, where: str) -> None:
    """Write a bundle's files under ``into`` (nothing outside it: no absolute name, no
    ``..``, no symlink leading out); Damaged if it cannot be read."""
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
        raise Damaged(where, "bundle", f"cannot be unpacked ({exc})") from None
