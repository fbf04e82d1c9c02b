"""The process the worker pool forks its processes from, so pytest never imports FINN.

Importing FINN (torch, brevitas, qonnx) costs seconds, and a process that did needs
most of a second more to exit. The pytest process has no use for FINN itself, so the
pool (``worker_pool.WorkerPool``) forks this server once, when the first segment must
be built: the server imports the compiler and, on request, forks the pool's
processes, which start with FINN loaded as before. The pytest process then ends as
quickly as it started. If FINN is in the pytest process already (a test imported it),
the pool forks from there as it always could, and no server is started.

The server is a fork of the pytest process taken once the engine has shared every step
function it knows (``WorkerPool.share``), so its children find them by identity as
children of the pytest process would. It runs in a process group of its own, ignores
Ctrl-C, dies with the pytest process (``PR_SET_PDEATHSIG``) and so do its children.
Requests travel over a socket pair: ``fork`` (the new process's end of its pipe goes
along as a file descriptor) and ``wait`` (the exit code of a child that ended: the
server is its parent, so only the server can collect it).
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import Any

from .. import interrupts, toolchain
from .workers import _FORK, become_worker, exit_cause, fork, kill_group


class ForkServerError(Exception):
    """The server cannot fork processes (it died): the pool forks from here instead."""


class ForkServer:
    """The parent's handle on the server."""

    def __init__(self, table: list[Any], close_fds: tuple[int, ...], serve: Any) -> None:
        mine, theirs = _FORK.Pipe(duplex=True)
        self.known = len(table)  # the table entries its children know
        self.process = fork(_serve, (theirs, close_fds, os.getpid(), table, serve))
        theirs.close()
        self.conn: Connection = mine
        self.error: str | None = None
        self.imported = False  # the compiler is imported there
        self._pending: list[ServedProcess] = []  # forks asked, not yet answered

    def ready(self) -> str | None:
        """Wait until the server has imported the compiler; why it cannot serve, if so."""
        if not self.imported and self.error is None:
            try:
                kind, detail = self.conn.recv()
            except (EOFError, OSError):
                self.process.join(timeout=10)
                kind, detail = "dead", exit_cause(self.process.exitcode)[1]
            if kind == "ready":
                self.imported = True
            else:
                self.error = str(detail)
        return self.error

    def fork(self, conn: Connection, close_fds: tuple[int, ...]) -> ServedProcess:
        """A new process, serving builds on ``conn`` (the child's end of its pipe). Only
        asked for here: the server forks while this process goes on, and the new
        process's pid is read when first needed (``ServedProcess.pid``)."""
        try:
            with interrupts.deferred():  # a request is sent whole
                self.conn.send(("fork", close_fds))
                reduction.send_handle(self.conn, conn.fileno(), self.process.pid)
        except (EOFError, OSError) as exc:
            raise ForkServerError(f"the fork server is gone ({exc})") from None
        served = ServedProcess(self)
        self._pending.append(served)
        return served

    def settle(self) -> None:
        """Read the answers to the forks asked so far, in the order they were asked."""
        while self._pending:
            try:
                with interrupts.deferred():
                    kind, pid = self.conn.recv()
            except (EOFError, OSError):
                kind, pid = "gone", None
            if kind == "forked":
                self._pending.pop(0).born(pid)
                continue
            why = (
                f"the fork server (pid {self.process.pid}) died before it forked this worker"
                if kind == "gone"
                else f"the fork server could not fork this worker: {pid}"
            )
            for served in self._pending:
                served.unborn(why)
            self._pending.clear()
            self.error = why
            return

    def wait(self, pid: int) -> int | None:
        """The exit code of the server's child ``pid``, which has ended (multiprocessing's
        convention: -N for signal N), None if the server cannot say."""
        self.settle()  # the answers to earlier forks come first
        if self.error is not None:
            return None
        try:
            with interrupts.deferred():
                self.conn.send(("wait", pid))
                kind, code = self.conn.recv()
        except (EOFError, OSError):
            self.error = "the fork server is gone"
            return None
        return code if kind == "status" else None

    def alive(self) -> bool:
        """Whether it can still fork (once it died, its children are dead or dying)."""
        return self.error is None and self.process.is_alive()

    def close(self) -> None:
        """End the server (its children die with it)."""
        if self.process.exitcode is None:  # once collected, its pid may be reused
            kill_group(self.process.pid)  # type: ignore[arg-type]
        self.process.join(timeout=10)
        with contextlib.suppress(OSError):
            self.conn.close()


class ServedProcess:
    """A child of the server, with what the pool uses of ``multiprocessing.Process``
    (``pid``, ``sentinel``, ``is_alive``, ``join``, ``exitcode``). Its pid arrives when
    the server has forked it (read when first needed). Its sentinel is a pidfd, readable
    once it ended (even while a process it started still holds its pipe open); the
    server then tells its exit code."""

    def __init__(self, server: ForkServer) -> None:
        self.server = server
        self._pid: int | None = None
        self.exitcode: int | None = None
        self.orphaned: str | None = None  # why it ended, if its server died first
        self._sentinel: int | None = None

    @property
    def pid(self) -> int | None:
        if self._pid is None and self.exitcode is None:
            self.server.settle()
        return self._pid

    @property
    def sentinel(self) -> int | None:
        self.pid  # noqa: B018 (the pid, and with it the pidfd, once the server answered)
        return self._sentinel

    def born(self, pid: int) -> None:
        self._pid = pid
        with contextlib.suppress(OSError, AttributeError):  # Linux 5.3+
            self._sentinel = os.pidfd_open(pid)

    def unborn(self, why: str) -> None:
        """The server never forked it: as a process killed with its server."""
        self.exitcode = -signal.SIGKILL
        self.orphaned = f"{why}; nothing is recorded: the next run builds it again"

    def is_alive(self) -> bool:
        if self.pid is None or self.exitcode is not None:
            return False
        if self._sentinel is None:
            return True  # only the end of its pipe will say
        return not select.select([self._sentinel], [], [], 0)[0]

    def join(self, timeout: float | None = None) -> None:
        """Collect its exit code (call once it ended, or was killed)."""
        if self.exitcode is None and self.pid is not None:
            code = self.server.wait(self.pid)
            if code is None:  # no answer: the server died, and the kernel killed its children
                self.exitcode = -signal.SIGKILL
                self.orphaned = (
                    f"the fork server (pid {self.server.process.pid}) that forked this "
                    "worker died, and the worker with it; nothing is recorded: the next "
                    "run builds it again"
                )
            else:
                self.exitcode = code
            if self._sentinel is not None:
                with contextlib.suppress(OSError):
                    os.close(self._sentinel)
                self._sentinel = None


# -- in the server ---------------------------------------------------------------------
def _serve(
    conn: Connection, close_fds: tuple[int, ...], parent: int, table: list[Any], serve: Any
) -> None:
    become_worker(parent, close_fds)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the import's chatter never reaches the terminal
        os.dup2(devnull, fd)
    os.close(devnull)
    try:
        toolchain.current().prepare()
    except Exception as exc:  # ToolchainUnavailable, or a broken installation
        with contextlib.suppress(OSError):
            conn.send(("unavailable", str(exc)))
        _drain(conn)
    conn.send(("ready", None))
    me = os.getpid()
    ended: dict[int, int] = {}  # exit codes of children collected, not yet asked for
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the parent is gone: nothing to tidy
        _collect(ended)  # children that answered and exited: no zombie piles up
        if request[0] == "fork":
            fd = reduction.recv_handle(conn)
            gc.freeze()  # as workers.fork: the children's collections copy no shared page
            pid = os.fork()
            if pid == 0:
                try:
                    conn.close()
                    serve(Connection(fd), request[1], me, table)
                finally:
                    os._exit(1)
            gc.unfreeze()
            os.close(fd)
            conn.send(("forked", pid))
        elif request[0] == "wait":
            code = ended.pop(request[1], None)
            if code is None:
                with contextlib.suppress(ChildProcessError):
                    _, status = os.waitpid(request[1], 0)
                    code = os.waitstatus_to_exitcode(status)
            conn.send(("status", code))


def _collect(ended: dict[int, int]) -> None:
    """Collect every child that has exited, keeping its exit code for a ``wait``."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        ended[pid] = os.waitstatus_to_exitcode(status)


def _drain(conn: Connection) -> None:
    """Answer nothing more until the parent closes (it reads why and stops asking)."""
    with contextlib.suppress(EOFError, OSError):
        while True:
            conn.recv()
    os._exit(0)
