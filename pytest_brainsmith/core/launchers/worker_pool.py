"""Every build in a process of its own, forked ahead of time from a zygote that never builds.

A build leaves things in its process: module globals, monkeypatches of the compiler's
classes, the environment, the working directory, the umask, rlimits, threads, open
files, numpy's random state. A process reused for the next build would hand all of it
on under a cache key that names none of it, so a result would depend on which build ran
before it. Here no process builds twice: each segment is built in a fresh fork of the
**zygote**, the pool's fork server (``fork_server.py``): a fork of the pytest process
taken once the engine has shared every step function it knows, which imports the
compiler and then does nothing but fork. Every build starts from that same state.

What makes this cheap: a fork of a FINN-sized process (~0.5 GB, torch included: FINN's
custom-op package imports it) takes ~8 ms of page-table copying and its exit as long
again, so neither is left on a build's path. The pool keeps ``spares`` processes forked
ahead (the server forks them while builds run), hands each one build, and a process
that answered exits on its own time (the scheduler reaps it later). The zygote's objects
are frozen across the fork (``gc.freeze``), so a collection in a build copies none of
its pages.

A segment's build is sent pickled, but what the zygote already has is sent by identity:
every function (a user's step, even a lambda from a ``conftest.py``) and the objects the
pool was told to share (the cache) are numbered in a table the zygote inherited, so
nothing has to be importable by name. A build that names something newer than the
zygote is given a process forked from here; a build that cannot be pickled at all runs in
a fresh worker of its own (``workers.Worker``). Each build also gets the parent's
environment and working directory as they are when it starts, as a fork taken then would.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import sys
import time
import types
from collections.abc import Callable, Iterable
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .. import interrupts, memory_budget, toolchain
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
    """One process forked for one build, as the parent sees it: from the pool's zygote
    if it has one that knows table entry ``newest``, else from this process."""

    def __init__(self, pool: WorkerPool, newest: int, close_fds: tuple[int, ...]) -> None:
        mine, theirs = _FORK.Pipe(duplex=True)
        self.process: Any = None
        pool.drop_dead_server()
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
            self.process = fork(_build_once, (theirs, close_fds, os.getpid(), pool.table))
        theirs.close()
        self.conn: Connection = mine

    @property
    def pid(self) -> int | None:
        """Its pid (None if the zygote never forked it: it died first)."""
        return self.process.pid

    def end(self) -> None:
        """Kill it and its process group, and collect it."""
        pid = self.pid
        if self.process.exitcode is None and pid is not None:  # once collected, its pid
            kill_group(pid)  # may be reused
            self.process.join(timeout=10)
        with contextlib.suppress(OSError):
            self.conn.close()


class ForkedBuild:
    """One segment build in its own forked process: ``Worker``'s interface for the
    scheduler."""

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

    @property
    def pid(self) -> int | None:
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
        self.pool._ended(self.slot)
        return True

    def reap(self, timeout: float = 0.0) -> bool:
        """Collect the process once it has exited (True), killing it after ``timeout`` if
        given and it lingers; one that answered exits on its own, off the build's path."""
        if self.process.exitcode is None and self.process.is_alive():
            if not timeout:
                return False
            deadline = time.monotonic() + timeout
            while self.process.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            if self.process.is_alive():
                self.killed_by_us = self.killed_by_us or "lingered"
        self.pool._ended(self.slot)
        return True

    def kill(self, why: str) -> None:
        self.killed_by_us = why
        self.pool._ended(self.slot)

    def exit_cause(self) -> tuple[str, str]:
        orphaned = getattr(self.process, "orphaned", None)
        if orphaned is not None and self.killed_by_us is None:
            return "killed", orphaned
        return exit_cause(self.process.exitcode)

    def output_tail(self, lines: int = 30) -> str:
        return output_tail(self.output, lines)


class WorkerPool:
    """The local launcher (see the module's docstring): a fresh process per build, forked
    ahead from a zygote.

    ``share``: objects sent to the processes by identity (the engine's cache: its
    state at fork time is what a fresh worker would see too). ``spares``: processes kept
    forked ahead (the scheduler sets it to its number of workers)."""

    remote = False
    local = True  # its builds share this machine's memory
    slots = None  # as many at once as the engine has workers

    def __init__(
        self, share: Iterable[Any] = (), *, fork_server: bool | None = None, spares: int = 1
    ) -> None:
        self.table: list[Any] = []  # append-only: a process knows a prefix of it
        self._numbers: dict[int, int] = {}  # id(object) -> its number in the table
        self.processes: list[_Process] = []  # alive: spare or building
        self._spares: list[_Process] = []
        self.spares = spares
        self._needed = -1  # the newest table entry a build has needed
        self.started = 0  # processes given a build (forked ahead or not)
        self.fresh = 0  # builds that could not be pickled: a fresh worker each
        #: fork the processes from a server that imports the compiler (None: unless the
        #: compiler is imported here already)
        self.fork_server = fork_server
        self.server: ForkServer | None = None
        self.server_used = False
        self.imports = 0  # compiler imports in the pool's servers
        self.lost: list[str] = []  # a local process lost is a crash, never "lost"
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
                self.server = ForkServer(self.table, close_fds + self.pipe_ends(), _build_once)
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

    def drop_dead_server(self) -> None:
        """If the server died, forks come from here from now on (``drop_server``)."""
        if self.server is not None and not self.server.alive():
            self.drop_server()

    def drop_server(self) -> None:
        """The server died: later processes are forked from here, and its spares (killed
        with it, or about to be: the kernel's signal may not have ended them yet) are
        never handed a build."""
        server, self.server = self.server, None
        if server is None:
            return
        for process in list(self._spares):
            if getattr(process.process, "server", None) is server:
                self._end(process)
        server.close()

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
        timeout: float | None = None,
        priority: float = 0.0,
        resources: dict[str, float] | None = None,
    ) -> ForkedBuild | Worker:
        """Start ``job`` in a fresh process (``timeout``, ``priority`` and ``resources``
        are a remote launcher's: the scheduler enforces the timeout here)."""
        try:
            payload, newest = self._dumps(job)
        except (pickle.PicklingError, TypeError, AttributeError):
            self.compiler_here()  # a fresh worker is forked from here
            self.fresh += 1
            self.started += 1
            return Worker(job, output=output, max_memory=max_memory, close_fds=close_fds)
        self._needed = max(self._needed, newest)
        message = (str(output), max_memory, payload, dict(os.environ), os.getcwd())
        process = self._take(newest, close_fds)
        try:
            process.conn.send(message)
        except OSError:  # it died while waiting: a new one
            self._end(process)
            process = self._take(newest, close_fds)
            process.conn.send(message)
        self.started += 1
        self._fork_ahead(close_fds)
        return ForkedBuild(self, process, output)

    def describe(self) -> str | None:
        return None  # the status line counts the local builds itself

    def close(self) -> None:
        """End every process of the pool (builds still running are the scheduler's to
        kill first)."""
        for process in list(self.processes):
            self._end(process)
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
        """A spare that knows table entry ``newest``, else a process forked now."""
        self.drop_dead_server()
        while self._spares:
            process = self._spares.pop(0)
            if process.known > newest and process.process.is_alive():
                return process
            self._end(process)  # forked before what this build needs, or dead
        process = _Process(self, newest, close_fds)
        self.processes.append(process)
        return process

    def _fork_ahead(self, close_fds: tuple[int, ...]) -> None:
        """Fork spares while the build just started runs: the next build need not wait
        for a fork. A spare knows what builds have needed so far."""
        while len(self._spares) < self.spares:
            try:
                process = _Process(self, self._needed, close_fds)
            except OSError:
                return  # no process to spare now (out of pids or memory): fork when needed
            self.processes.append(process)
            self._spares.append(process)

    def _ended(self, process: _Process) -> None:
        """A build's process is over (answered, died or killed): collect it."""
        self._end(process)

    def _end(self, process: _Process) -> None:
        with contextlib.suppress(ValueError):
            self.processes.remove(process)
        with contextlib.suppress(ValueError):
            self._spares.remove(process)
        process.end()


# -- in a forked process ---------------------------------------------------------------
def _build_once(
    conn: Connection, close_fds: tuple[int, ...], parent: int, table: list[Any]
) -> None:
    """Wait for one build, run it, answer and exit (the exit's teardown is off its path)."""
    become_worker(parent, close_fds)
    try:
        output, max_memory, payload, environment, cwd = conn.recv()
    except (EOFError, OSError):
        os._exit(0)  # never given a build: nothing to tidy (torch's exit is slow)
    # the parent's environment and directory as they are now, as a fork taken now has them
    if os.environ != environment:
        os.environ.clear()
        os.environ.update(environment)
    with contextlib.suppress(OSError):
        os.chdir(cwd)
    _reset_peak()
    start_rss = memory_budget.extra_peak().get("VmRSS")
    result = run_job(partial(_load_and_run, payload, table), Path(output), max_memory, start_rss)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    try:
        conn.send(result)
    except (OSError, ValueError):
        os._exit(1)
    os._exit(0)


def _load_and_run(payload: bytes, table: list[Any]) -> Any:
    return _Unpickler(io.BytesIO(payload), table).load()()


def _reset_peak() -> None:
    """Start this build's peak resident set (``VmHWM``) from what the process holds now,
    not from the zygote's (a fork inherits its high-water mark)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
