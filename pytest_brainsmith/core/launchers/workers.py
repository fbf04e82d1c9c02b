"""Worker processes: a segment is built in a process forked from this one.

The process is forked from a process that has FINN imported (the caller, or the worker
pool's fork server, itself a fork of the caller: ``fork_server.py``): a fork costs
milliseconds, FINN's import seconds, and user steps registered from a ``conftest.py``
are simply there. A process of
its own per build is what isolation needs: a crash, a hang or a memory blow-up ends that
process only, and the parent sees its exit or kills it at its deadline.
(``concurrent.futures.ProcessPoolExecutor`` breaks on the first crash, with every
pending future, and has no per-task timeout.) ``Worker`` is one build in a fresh fork;
``worker_pool.WorkerPool`` hands a forked process one build after another.

Each worker runs in a process group of its own, so a Ctrl-C at the terminal reaches
only the parent, which decides; killing the group also ends what the build started
(e.g. Vivado). The kernel kills a worker whose parent dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import gc
import multiprocessing
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .. import interrupts, memory_budget

_FORK = multiprocessing.get_context("fork")
_PR_SET_PDEATHSIG = 1

#: Signals that say the process itself crashed (its code's fault, so it is recorded).
CRASH_SIGNALS = {
    signal.SIGSEGV,
    signal.SIGBUS,
    signal.SIGABRT,
    signal.SIGFPE,
    signal.SIGILL,
    signal.SIGSYS,
    signal.SIGTRAP,
}


def available_cores() -> int:
    """The cores this process may use (its CPU affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class Worker:
    """One segment build running in a forked process."""

    def __init__(
        self,
        job: Callable[[], dict[str, Any]],
        *,
        output: Path,
        max_memory: int | None = None,
        close_fds: tuple[int, ...] = (),
    ) -> None:
        receive, send = _FORK.Pipe(duplex=False)
        self.output = output
        self.process = fork(_worker_main, (job, send, output, max_memory, close_fds, os.getpid()))
        send.close()
        self.conn: Connection = receive
        self.started = time.monotonic()
        self.result: dict[str, Any] | None = None
        self._eof = False
        self.killed_by_us: str | None = None  # why we killed it ("timeout", "cancel")

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def waitables(self) -> list[Any]:
        """What to wait on: the pipe until it has said its piece, and the process."""
        if self.result is None and not self._eof:
            return [self.conn, self.process.sentinel]
        return [self.process.sentinel]

    def poll(self) -> bool:
        """Read a result if one arrived; True once there is a result (the process is
        then on its way out: ``reap`` collects it) or the process has ended."""
        if self.result is None and not self._eof:
            try:
                while self.conn.poll():
                    self.result = self.conn.recv()
            except (EOFError, OSError):
                self._eof = True  # it ended (or is ending) without a word
        if self.result is not None:
            return True
        if self.process.is_alive():
            return False
        self.process.join()
        if self.result is None:  # sent just before it ended
            with contextlib.suppress(EOFError, OSError):
                if self.conn.poll():
                    self.result = self.conn.recv()
        self.conn.close()
        return True

    def reap(self, timeout: float = 0.0) -> bool:
        """Collect the process once it has exited (True), killing it after ``timeout``
        if given and it lingers; a worker that has answered owes nothing more."""
        self.process.join(timeout=timeout)
        if self.process.is_alive():
            if not timeout:
                return False
            self.kill(self.killed_by_us or "lingered")
        with contextlib.suppress(OSError):
            self.conn.close()
        return True

    def kill(self, why: str) -> None:
        """End the worker and everything it started, now."""
        self.killed_by_us = why
        kill_group(self.pid)
        self.process.join(timeout=10)
        with contextlib.suppress(OSError):
            self.conn.close()

    def exit_cause(self) -> tuple[str, str]:
        """(kind, message) for a worker that ended without a result."""
        return exit_cause(self.process.exitcode)

    def output_tail(self, lines: int = 30) -> str:
        return output_tail(self.output, lines)


def exit_cause(code: int | None) -> tuple[str, str]:
    """(kind, message) for a worker process that ended with ``code`` and no result."""
    if code is None:
        return "crash", "the worker did not end"
    if code > 0:
        return "crash", f"the worker process exited with code {code}"
    if code == 0:
        return "environment", "the worker process ended without a result"
    sig = signal.Signals(-code)
    if sig in CRASH_SIGNALS:
        return "crash", f"the worker process crashed ({sig.name})"
    if sig == signal.SIGKILL:
        return (
            "killed",
            "the worker process was killed (SIGKILL) from outside; the kernel's "
            "out-of-memory killer sends it when the machine runs out of memory",
        )
    return "killed", f"the worker process was ended by {sig.name}"


def fork(target: Callable[..., None], args: tuple[Any, ...]) -> multiprocessing.Process:
    """Start ``target(*args)`` in a process forked from this one.

    The child's garbage collections must not write to the objects it shares with this
    process (FINN's and torch's: ~0.5 GB): each write copies a page. Frozen, they are
    outside every generation of the child; a full collection there then costs about 0
    instead of 260 ms and 110 MB of copied pages (measured). This process unfreezes at
    once, so its own garbage is still collected."""
    process = _FORK.Process(target=target, args=args, name="brainsmith-worker")
    gc.freeze()
    try:
        process.start()
    finally:
        gc.unfreeze()
    return process


def output_tail(output: Path, lines: int = 30) -> str:
    """What a worker printed last (its stdout and stderr); for a fatal error the
    start of faulthandler's report, which names the frame that crashed."""
    try:
        text = output.read_text(errors="replace")
    except OSError:
        return ""
    found = [
        line for line in text.strip().splitlines() if not line.startswith("Extension modules:")
    ]
    fatal = next((i for i, line in enumerate(found) if line.startswith("Fatal Python error")), None)
    if fatal is not None:
        return "\n".join(found[fatal : fatal + lines])
    return "\n".join(found[-lines:])


def _worker_main(
    job: Callable[[], dict[str, Any]],
    conn: Connection,
    output: Path,
    max_memory: int | None,
    close_fds: tuple[int, ...],
    parent: int,
) -> None:
    start_rss = memory_budget.extra_peak().get("VmRSS")  # what the fork shares
    become_worker(parent, close_fds)
    conn.send(run_job(job, output, max_memory, start_rss))
    conn.close()


def run_job(
    job: Callable[[], Any], output: Path, max_memory: int | None, start_rss: int | None
) -> Any:
    """Run one build in this worker: its output to ``output``, at most ``max_memory``
    allocated beyond what the process holds; its answer, with its peak memory."""
    redirect_output(output)
    if max_memory:
        limit_memory(max_memory)
    try:
        result = job()
    except BaseException:  # a bug of ours, not the design's: say so, never hang
        result = {"status": "error", "kind": "environment", "error": traceback.format_exc()}
    if isinstance(result, dict):  # the build's peak memory, for the engine's budget
        result["memory"] = {**memory_budget.extra_peak(), "start_rss": start_rss}
    return result


def kill_group(pid: int) -> None:
    """SIGKILL a worker and everything it started (its process group)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # not yet in its own group


def become_worker(parent: int, close_fds: tuple[int, ...]) -> None:
    """What a freshly forked worker does first: a process group of its own (killing it
    ends what the build started), death with its parent, Ctrl-C left to the parent."""
    os.setpgid(0, 0)
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    interrupts.unblock()  # forked while the parent deferred them
    for fd in close_fds:  # other builds' lock files: closing never releases them
        with contextlib.suppress(OSError):
            os.close(fd)


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def redirect_output(output: Path) -> None:
    """Everything the build prints (and a fatal error's traceback) goes to a file in its
    staging directory, never into the parent's terminal or pytest's capture."""
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    faulthandler.enable(file=sys.stderr)


def limit_memory(max_memory: int) -> None:
    """Let the build allocate ``max_memory`` bytes beyond what the fork inherited:
    past it an allocation fails with MemoryError inside the step."""
    inherited = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                inherited = int(line.split()[1]) * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = inherited + max_memory
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
