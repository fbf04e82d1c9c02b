"""Status files of builds in progress, the builder's side of the live status.

Whoever builds a segment (a worker process of this session, an xdist worker,
another session, another host on the shared cache) keeps a small JSON file in
``<cache>/v1/running/`` up to date: which segment, which step, since when. A
second terminal can watch it (``watch cat build/brainsmith/cache/v1/running/*.json``)
and the pytest process at the terminal shows it on its status line.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class StatusFile:
    """The running/<key>.json file of one segment build."""

    def __init__(self, running_dir: Path, key: str, segment: str, steps: list[str]) -> None:
        self.path = running_dir / f"{key}.json"
        self.data: dict[str, Any] = {
            "segment": segment,
            "key": key,
            "steps": steps,
            "step": None,
            "step_index": 0,
            "started": time.time(),
            "step_started": time.time(),
            "pid": os.getpid(),
            "host": os.uname().nodename,
        }

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)  # readers never see half a file

    def step(self, name: str) -> None:
        self.data.update(
            step=name, step_index=self.data["step_index"] + 1, step_started=time.time()
        )
        with contextlib.suppress(OSError):  # status must never fail a build
            self.write()


@contextlib.contextmanager
def building(running_dir: Path, key: str, segment: str, steps: list[str]) -> Iterator[StatusFile]:
    status = StatusFile(running_dir, key, segment, steps)
    with contextlib.suppress(OSError):
        status.write()
    try:
        yield status
    finally:
        with contextlib.suppress(OSError):
            status.path.unlink()


def _alive(entry: dict[str, Any]) -> bool:
    if entry.get("host") != os.uname().nodename:
        return True  # another host: trust the file
    try:
        os.kill(int(entry["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return False
    return True


def running(running_dir: Path) -> list[dict[str, Any]]:
    """The builds in progress, oldest first (files of dead local processes skipped)."""
    found = []
    for path in running_dir.glob("*.json"):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if _alive(entry):
            found.append(entry)
    return sorted(found, key=lambda e: e.get("started", 0))
