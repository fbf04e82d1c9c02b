"""The live status line: builds in progress and the engine's pool, on one line.

The pytest process at a terminal shows the oldest build in progress (from the status
files of ``core.progress``, whoever builds it) and its own pool (done / running /
queued, time left), refreshed every second and cleared before pytest prints anything.
Nothing is shown when output is not a terminal, so CI logs stay clean.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import pytest

from ..core.progress import running


def describe_pool(progress: dict[str, Any]) -> str:
    """``5/55 segments done, 2 running, 48 queued, ~40 s left``, or "" when idle."""
    running, queued = len(progress.get("running", [])), progress.get("queued", 0)
    if not running and not queued:
        return ""
    done = progress.get("done", 0)
    left = progress.get("seconds_left", 0.0)
    phase = f" ({progress['phase']})" if progress.get("phase") else ""
    if progress.get("cluster"):  # on Dask, "running" is what the cluster was given
        return (
            f"{done}/{done + running + queued} segments done, {running} on the cluster, "
            f"{queued} waiting for a parent, ~{left:.0f} s left{phase} | {progress['cluster']}"
        )
    return (
        f"{done}/{done + running + queued} segments done, {running} running, {queued} queued, "
        f"~{left:.0f} s left{phase}"
    )


def describe(
    entries: list[dict[str, Any]], now: float | None = None, pool: dict[str, Any] | None = None
) -> str:
    """One line: the pool's progress, the oldest build in progress and how many more."""
    head = describe_pool(pool) if pool else ""
    if not entries:
        return f"brainsmith: {head}" if head else ""
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
    return line.replace("brainsmith: ", f"brainsmith: {head} | ", 1) if head else line


class StatusLine:
    """A one-line live display on the terminal while segments build."""

    def __init__(
        self,
        running_dir: Path,
        tty: TextIO,
        reporter: Any,
        interval: float = 1.0,
        progress: Callable[[], dict[str, Any]] | None = None,
    ):
        self.running_dir = running_dir
        self.progress = progress
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
            try:
                pool = self.progress() if self.progress is not None else None
            except Exception:  # the engine changed under us: show the next tick
                pool = None
            line = describe(running(self.running_dir), pool=pool)
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
