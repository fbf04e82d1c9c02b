"""Reused worker processes: one forked process builds segment after segment.

A process per segment (``workers.Worker``) costs about 60 ms of kernel time per build on
a FINN-sized process (copying its page tables, faulting in the pages it writes,
tearing it down), which is most of a small segment's overhead. The pool keeps each
forked process and hands it the next segment, one at a time, through a pipe.

Isolation stays per segment where it matters: a crash, a timeout, a Ctrl-C or a
memory blow-up ends that process only (the parent kills its process group, as for a
fresh worker), and a process is retired (never given another segment) after any
build that did not succeed or that left it holding much more memory than it started
with. Each build starts with the parent's environment and working directory as they
are then (as a fresh fork would), writes its own log (detached when it ends), is limited
to ``max_memory`` beyond what the process holds when it starts, and measures its own
peak (``VmHWM`` is reset); the memory limit is lifted after it.
``--brainsmith-fresh-workers`` keeps the strictest isolation: a process per segment.

A segment's build is sent pickled, but what the process already has is sent by
identity: every function (a user's step, even a lambda from a ``conftest.py``) and the
objects the pool was told to share (the cache) are numbered in a table the process
inherited when it was forked, so nothing has to be importable by name. A build that
names something newer than the process is given a newly forked one; a build that cannot
be pickled at all runs in a fresh worker of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import pickle
import resource
import sys
import time
import types
from collections.abc import Callable, Iterable
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from . import interrupts, memory_budget, toolchain
from .fork_server import ForkServer, ForkServerError
from .workers import (
    _FORK,
    Worker,
    become_worker,
    exit_cause,
    fork,
    kill_group,
    output_tail,
    run_job,
)

#: A process holding this much more resident memory after a build than when it was
#: forked is retired: the next build gets a fresh fork, not a bloated process.
RETIRE_GROWTH = 512 * 1024 * 1024
#: Answers after which a process builds again; after any other (a failure, an error of
#: ours) it is retired, so no state a failed build left behind reaches the next one.
REUSABLE = ("built", "verified")


class _Pickler(pickle.Pickler):
    """Pickles functions and shared objects as their number in the pool's table."""

    def __init__(self, file: io.BytesIO, pool: WorkerPool) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.pool = pool
        self.newest = -1  # the highest table number this payload uses

    def persistent_id(self, obj: Any) -> int | None:
        number = self.pool._number(obj)
        if number is not None:
            self.newest = max(self.newest, number)
        return number


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, table: list[Any]) -> None:
        super().__init__(file)
        self.table = table

    def persistent_load(self, pid: Any) -> Any:
        return self.table[pid]


class _Process:
    """One pooled process, as the parent sees it: forked by the pool's fork server if it
    has one (``fork_server.py``), else from this process."""

    def __init__(self, pool: WorkerPool, newest: int, close_fds: tuple[int, ...]) -> None:
        mine, theirs = _FORK.Pipe(duplex=True)
        self.process: Any = None
        server = pool.server
        if server is not None and server.imported and server.known > newest:
            try:  # the server holds none of this process's files: nothing to close there
                self.process = server.fork(theirs, ())
                self.known = server.known
            except ForkServerError:
                pool.drop_server()
        if self.process is None:
            pool.compiler_here()
            # the process also closes the parent's ends of its siblings' pipes
            self.known = len(pool.table)  # table entries the process inherits
            close_fds += pool.pipe_ends()
            self.process = fork(_pool_main, (theirs, close_fds, os.getpid(), pool.table))
        theirs.close()
        self.conn: Connection = mine
        self.rss: int | None = None  # resident memory before its first build

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return int(self.process.pid)

    def end(self) -> None:
        """Kill it and its process group (it holds nothing: idle or retired)."""
        if self.process.exitcode is None:  # once collected, its pid may be reused
            kill_group(self.pid)
            self.process.join(timeout=10)
        with contextlib.suppress(OSError):
            self.conn.close()


class PooledWorker:
    """One segment build on a pooled process: ``Worker``'s interface for the scheduler."""

    def __init__(self, pool: WorkerPool, process: _Process, output: Path) -> None:
        self.pool = pool
        self.slot = process
        self.process = process.process
        self.conn = process.conn
        self.output = output
        self.started = time.monotonic()
        self.result: dict[str, Any] | None = None
        self.killed_by_us: str | None = None
        self._eof = False
        self._returned = False

    @property
    def pid(self) -> int:
        return self.slot.pid

    def waitables(self) -> list[Any]:
        """Its pipe (which ends when the process does), and its sentinel if it has one."""
        found = [self.conn] if self.result is None and not self._eof else []
        if self.process.sentinel is not None:
            found.append(self.process.sentinel)
        return found

    def poll(self) -> bool:
        """True once the build answered or the process ended without an answer."""
        if self.result is None and not self._eof:
            try:
                if self.conn.poll():
                    self.result = self.conn.recv()
            except (EOFError, OSError):
                self._eof = True
        if self.result is not None:
            return True
        if not self._eof and self.process.is_alive():
            return False
        self.process.join()
        if self.result is None:  # sent just before it ended
            with contextlib.suppress(EOFError, OSError):
                if self.conn.poll():
                    self.result = self.conn.recv()
                    return True
        self._give_back()
        return True

    def reap(self, timeout: float = 0.0) -> bool:
        """The build is over: the process goes back to the pool (or is retired)."""
        self._give_back()
        return True

    def kill(self, why: str) -> None:
        self.killed_by_us = why
        self.slot.end()
        self._give_back()

    def exit_cause(self) -> tuple[str, str]:
        return exit_cause(self.process.exitcode)

    def output_tail(self, lines: int = 30) -> str:
        return output_tail(self.output, lines)

    def _give_back(self) -> None:
        if not self._returned:
            self._returned = True
            self.pool._returned(self.slot, self.result)


class WorkerPool:
    """The local launcher that reuses its processes (see the module's docstring).

    ``share``: objects sent to the processes by identity (the engine's cache: its
    state at fork time is what a fresh worker would see too)."""

    remote = False

    def __init__(self, share: Iterable[Any] = (), *, fork_server: bool | None = None) -> None:
        self.table: list[Any] = []  # append-only: a process knows a prefix of it
        self._numbers: dict[int, int] = {}  # id(object) -> its number in the table
        self.processes: list[_Process] = []  # alive: idle or building
        self._idle: list[_Process] = []
        self.started = 0  # processes forked (pooled and fresh)
        self.reused = 0  # builds given to a process that had built before
        self.fresh = 0  # builds that could not be pickled: a fresh worker each
        #: fork the processes from a server that imports the compiler (None: unless the
        #: compiler is imported here already)
        self.fork_server = fork_server
        self.server: ForkServer | None = None
        self.server_used = False
        self.imports = 0  # compiler imports in the pool's servers
        self.share(share)

    def prepare(self, close_fds: tuple[int, ...] = ()) -> str | None:
        """Get the compiler ready for the processes: a fork server importing it, or an
        import here. Why it cannot be, if so."""
        compiler = toolchain.current()
        wanted = self.fork_server
        if wanted is None:
            wanted = not getattr(compiler, "prepared", lambda: False)()
        if self.server is None and wanted and not self.server_used:
            with interrupts.deferred():  # a server started is one ``close`` ends
                self.server = ForkServer(self.table, close_fds + self.pipe_ends(), _pool_main)
                self.server_used = True
        if self.server is not None:
            error = self.server.ready()
            if error is None:
                self.imports = 1
            return error
        try:
            compiler.prepare()
        except toolchain.ToolchainUnavailable as exc:
            return str(exc)
        return None

    def compiler_here(self) -> None:
        """Import the compiler in this process before forking from it, if the pool's
        processes came from a server (which had it) until now."""
        if self.server_used:
            toolchain.current().prepare()

    def pipe_ends(self) -> tuple[int, ...]:
        """This process's ends of its processes' pipes (a fork of it must close them)."""
        return tuple(p.conn.fileno() for p in self.processes if not p.conn.closed)

    def drop_server(self) -> None:
        """The server died: later processes are forked from here."""
        if self.server is not None:
            self.server.close()
            self.server = None

    def share(self, objects: Iterable[Any]) -> None:
        """Send these objects by identity from now on (the engine shares its cache and
        every step function it knows before the first fork, so later builds find them
        all in the processes' table)."""
        for obj in objects:
            if obj is not None and id(obj) not in self._numbers:
                self._add(obj)

    def __call__(
        self,
        job: Callable[[], dict[str, Any]],
        *,
        output: Path,
        max_memory: int | None = None,
        close_fds: tuple[int, ...] = (),
    ) -> PooledWorker | Worker:
        try:
            payload, newest = self._dumps(job)
        except (pickle.PicklingError, TypeError, AttributeError):
            self.compiler_here()  # a fresh worker is forked from here
            self.fresh += 1
            self.started += 1
            return Worker(job, output=output, max_memory=max_memory, close_fds=close_fds)
        message = (str(output), max_memory, payload, dict(os.environ), os.getcwd())
        process = self._take(newest, close_fds)
        try:
            process.conn.send(message)
        except OSError:  # it died while idle: a new one
            self._retire(process)
            process = self._take(newest, close_fds)
            process.conn.send(message)
        return PooledWorker(self, process, output)

    def close(self) -> None:
        """End every process of the pool (builds still running are the scheduler's to
        kill first)."""
        for process in list(self.processes):
            self._retire(process)
        if self.server is not None:
            self.server.close()
            self.server = None

    # -- the table ---------------------------------------------------------------------
    def _add(self, obj: Any) -> int:
        number = len(self.table)
        self.table.append(obj)
        self._numbers[id(obj)] = number
        return number

    def _number(self, obj: Any) -> int | None:
        number = self._numbers.get(id(obj))
        if number is not None:
            return number
        if isinstance(obj, types.FunctionType):
            return self._add(obj)
        return None

    def _dumps(self, job: Callable[[], dict[str, Any]]) -> tuple[bytes, int]:
        buffer = io.BytesIO()
        pickler = _Pickler(buffer, self)
        pickler.dump(job)
        return buffer.getvalue(), pickler.newest

    # -- processes ---------------------------------------------------------------------
    def _take(self, newest: int, close_fds: tuple[int, ...]) -> _Process:
        """An idle process that knows table entry ``newest``, else a new one."""
        while self._idle:
            process = self._idle.pop()
            if process.known > newest and process.process.is_alive():
                self.reused += 1
                return process
            self._retire(process)  # forked before what this build needs
        process = _Process(self, newest, close_fds)
        self.processes.append(process)
        self.started += 1
        return process

    def _returned(self, process: _Process, result: dict[str, Any] | None) -> None:
        if process not in self.processes:
            return
        if (
            result is None
            or result.get("status") not in REUSABLE
            or result.get("retire")
            or not process.process.is_alive()
        ):
            self._retire(process)
            return
        memory = result.get("memory") or {}
        rss, start = memory.get("VmRSS"), memory.get("start_rss")
        if process.rss is None and isinstance(start, int):
            process.rss = start  # what it held before its first build
        if isinstance(rss, int) and process.rss is not None:
            if rss - process.rss > RETIRE_GROWTH:
                self._retire(process)
                return
        self._idle.append(process)

    def _retire(self, process: _Process) -> None:
        with contextlib.suppress(ValueError):
            self.processes.remove(process)
        with contextlib.suppress(ValueError):
            self._idle.remove(process)
        process.end()


# -- in the pooled process -------------------------------------------------------------
def _pool_main(conn: Connection, close_fds: tuple[int, ...], parent: int, table: list[Any]) -> None:
    become_worker(parent, close_fds)
    limits = resource.getrlimit(resource.RLIMIT_AS)
    while True:
        try:
            output, max_memory, payload, environment, cwd = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the parent is gone: nothing to tidy (torch's exit is slow)
        # the parent's environment and directory as they are now, as a fresh fork has them
        if os.environ != environment:
            os.environ.clear()
            os.environ.update(environment)
        with contextlib.suppress(OSError):
            os.chdir(cwd)
        _reset_peak()
        start_rss = memory_budget.extra_peak().get("VmRSS")
        result = run_job(
            partial(_load_and_run, payload, table), Path(output), max_memory, start_rss
        )
        if isinstance(result, dict):
            try:
                resource.setrlimit(resource.RLIMIT_AS, limits)
            except (OSError, ValueError):
                result["retire"] = True  # still limited: never build again
        _detach_output()
        _trim()
        try:
            conn.send(result)
        except (OSError, ValueError):
            os._exit(1)


def _load_and_run(payload: bytes, table: list[Any]) -> Any:
    return _Unpickler(io.BytesIO(payload), table).load()()


def _detach_output() -> None:
    """Stop writing to the build's log (it is published with the entry): whatever the
    idle process prints goes nowhere."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


def _reset_peak() -> None:
    """Start this build's peak resident set (``VmHWM``) from what the process holds now."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _trim() -> None:
    """Give the build's freed heap back to the system (glibc keeps it otherwise)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
