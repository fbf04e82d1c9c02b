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


def process_alive(pid: Any) -> bool:
    """Whether a local process still runs. One that exited but was not reaped yet (a
    crashed xdist worker, until execnet waits for it) answers kill(pid, 0): a zombie
    counts as dead."""
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    try:
        with open(f"/proc/{int(pid)}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def status_files(running_dir: Path) -> list[dict[str, Any]]:
    """Every readable status file, oldest build first (alive or not)."""
    found = []
    for path in running_dir.glob("*.json"):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict):
            found.append(entry)
    return sorted(found, key=lambda e: e.get("started", 0))


def running(running_dir: Path) -> list[dict[str, Any]]:
    """The builds in progress, oldest first (files of dead local processes skipped; a
    build on another host is trusted)."""
    here = os.uname().nodename
    return [
        e for e in status_files(running_dir) if e.get("host") != here or process_alive(e.get("pid"))
    ]
