"""The session's handle on one segment's Dask task, with ``Worker``'s methods.

The scheduler polls, waits on and kills a Dask task as it would a local process: a
pipe the future's callback writes to wakes it, a cancel mark in the control directory
stops the build where it runs (``dask_worker``), and attempts whose worker died under
them are noted as lost (a batch job ended, a node preempted).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from .dask_worker import CANCEL, STARTED, environment_error
from .workers import output_tail

#: Seconds ``kill`` waits for a started build to stop before it lets go of it.
CANCEL_WAIT_SECONDS = 10.0


class DaskBuild:
    """The session's handle on one segment's Dask task, with ``Worker``'s methods."""

    def __init__(
        self,
        future: Any | None,
        *,
        output: Path,
        control: Path,
        label: str,
        resources: dict[str, float],
        lost: list[str],
        refused: str | None = None,
    ) -> None:
        """``future``: the segment's Dask task (``dask_worker.run_on_worker``), marked
        in ``control``; None when ``refused`` says why it was never submitted. Lost
        attempts are added to ``lost`` (the launcher's)."""
        self.output = output
        self.control = control
        self.result: dict[str, Any] | None = None
        self.killed_by_us: str | None = None
        self.resources = resources
        self.launcher_lost = lost
        self.label = label
        self._cause: tuple[str, str] | None = None
        self._read, self._write = os.pipe()
        self._done = False
        self.future = future
        if refused is not None or future is None:
            self.result = environment_error(refused or "never submitted")["result"]
            self._done = True
            return
        future.add_done_callback(self._wake)

    def _wake(self, _future: Any) -> None:  # Dask's thread: only wake the engine up
        with contextlib.suppress(OSError):
            os.write(self._write, b"!")

    @property
    def started(self) -> bool:
        return (self.control / STARTED).exists()

    def waitables(self) -> list[Any]:
        return [] if self._done else [self._read]

    def poll(self) -> bool:
        if self._done:
            return True
        if self.future is None or not self.future.done():
            return False
        self._done = True
        self._take(self.future)
        self._note_lost()
        self._close()
        return True

    def _note_lost(self) -> None:
        """Attempts of this segment whose worker died under them (a job the batch system
        ended, a node preempted): every attempt but the one that answered."""
        try:
            attempts = (self.control / STARTED).read_text().splitlines()
        except OSError:
            return
        answered = self.result is not None or self.killed_by_us is not None
        lost = attempts[:-1] if answered else attempts
        self.launcher_lost.extend(f"{where} building {self.label}" for where in lost)

    def _take(self, future: Any) -> None:
        if future.status == "cancelled":
            self.killed_by_us = self.killed_by_us or "cancel"
            return
        if future.status == "error":
            self._cause = _task_error(future.exception())
            return
        answer = future.result()
        if "result" in answer:
            self.result = answer["result"]
        elif answer.get("cancelled"):
            self.killed_by_us = "cancel"
        else:
            kind, message = answer["dead"]
            self._cause = (kind, message)
            self.killed_by_us = answer.get("killed_by_us")

    def reap(self, timeout: float = 0.0) -> bool:
        return True  # nothing of ours to collect: the process was the worker's

    def kill(self, why: str) -> None:
        """Stop the build: its task sees the cancel mark within ``WATCH_SECONDS`` and
        kills the build's process; a task not started yet never starts it."""
        self.killed_by_us = why
        ended = True
        if not self._done and self.future is not None:
            with contextlib.suppress(OSError):
                self.control.mkdir(parents=True, exist_ok=True)
                (self.control / CANCEL).touch()
            if self.started:
                with contextlib.suppress(Exception):
                    self.future.result(timeout=CANCEL_WAIT_SECONDS)
            ended = self.future.done()
            self.future.cancel()
            self._done = True
        # a task that may still start keeps its cancel mark (``forget_stale`` removes it)
        self._close(keep_marks=not ended)

    def exit_cause(self) -> tuple[str, str]:
        return self._cause or ("environment", "the segment's Dask task ended without a result")

    def output_tail(self, lines: int = 30) -> str:
        return output_tail(self.output, lines)

    def _close(self, keep_marks: bool = False) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._read = self._write = -1
        if not keep_marks:
            remove_tree(self.control)


def _task_error(exc: BaseException | None) -> tuple[str, str]:
    name = type(exc).__name__
    if name == "KilledWorker":
        return (
            "killed",
            f"every Dask worker that ran this segment died (KilledWorker after Dask's "
            f"allowed failures, distributed.scheduler.allowed-failures): {exc}; a worker's "
            "log says why (often its memory limit or the out-of-memory killer)",
        )
    hint = ""
    if isinstance(exc, ModuleNotFoundError | ImportError | AttributeError):
        hint = (
            "; a Dask worker needs pytest-brainsmith, FINN and the modules your steps import "
            "(steps in conftest.py files are sent by value)"
        )
    return "environment", f"the segment's Dask task failed: {name}: {exc}{hint}"


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
