"""Live status of long builds.

Whoever builds a segment (this process, an xdist worker, another session, another
host on the shared cache) keeps a small JSON file in ``<cache>/v1/running/`` up
to date: which segment, which step, since when. A second terminal can watch it
(``watch cat build/brainsmith/cache/v1/running/*.json``), and the pytest process
at the terminal shows it as one status line, refreshed every second, that it
clears before pytest prints anything. Nothing is shown when output is not a
terminal, so CI logs stay clean.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest


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


def describe(entries: list[dict[str, Any]], now: float | None = None) -> str:
    """One line: the oldest build in progress, and how many more."""
    if not entries:
        return ""
    now = time.time() if now is None else now
    first = entries[0]
    segment = first["segment"].split("::", 1)[-1]
    step = first.get("step") or "starting"
    line = (
        f"brainsmith: building {segment}: step {first['step_index']}/{len(first['steps'])} "
        f"{step} ({now - first['step_started']:.0f} s; segment {now - first['started']:.0f} s)"
    )
    if len(entries) > 1:
        line += f" +{len(entries) - 1} more"
    return line


class StatusLine:
    """A one-line live display on the terminal while segments build."""

    def __init__(self, running_dir: Path, tty: TextIO, reporter: Any, interval: float = 1.0):
        self.running_dir = running_dir
        self.tty = tty
        self.reporter = reporter
        self.interval = interval
        self._lock = threading.Lock()
        self._shown = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="brainsmith-status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            line = describe(running(self.running_dir))
            with self._lock:
                if line:
                    self._show(line)
                elif self._shown:
                    self._clear()

    def _show(self, line: str) -> None:
        width = max(20, self.reporter._tw.fullwidth - 1)
        if not self._shown:
            self.tty.write("\n")  # below pytest's current line, which stays intact
            self._column = self.reporter._tw.width_of_current_line
        self.tty.write("\r" + line[:width] + "\x1b[K")
        self.tty.flush()
        self._shown = True

    def _clear(self) -> None:
        # erase the status line and put the cursor back where pytest left it
        self.tty.write(f"\r\x1b[K\x1b[1A\x1b[{self._column + 1}G")
        self.tty.flush()
        self._shown = False

    def clear(self) -> None:
        with self._lock:
            if self._shown:
                self._clear()

    # pytest hooks: get out of the way before pytest writes
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: Any) -> None:
        self.clear()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.clear()
        self.tty.close()
