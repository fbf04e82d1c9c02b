"""Ctrl-C and SIGTERM stop a run, every time.

Python runs a signal's handler between two bytecodes of the main thread, wherever that
is. Inside a callback whose exceptions Python prints as "Exception ignored" and drops,
the handler's KeyboardInterrupt is lost and the run goes on waiting for a build that
may take hours. Seen in CI: a SIGTERM landing in ``os.fork()``'s after-fork callback
(logging's lock release) while a worker was started; finalizers, weakref and garbage-
collector callbacks drop it the same way. So the handler records the signal, and the
engine raises it again on its next turn (``raise_pending``) if its first raise was lost.
While a worker is started and registered the signals wait (``deferred``: only
recorded, raised after the block), so that no worker is started that nobody kills.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

#: What a terminal (Ctrl-C), a batch scheduler or ``kill`` sends to end a run.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_pending: str | None = None  # the signal received and not raised yet (or swallowed)
_deferring = 0  # depth of ``deferred`` blocks: the handler only records
_installed = 0  # depth of ``installed`` blocks: the outermost one owns the handlers


def _handle(signum: int, frame: Any) -> None:
    global _pending
    _pending = signal.Signals(signum).name
    if not _deferring:
        raise KeyboardInterrupt(f"signal {_pending}")


def raise_pending() -> None:
    """Raise the KeyboardInterrupt of a signal that was deferred or whose first raise
    was swallowed; nothing if there is none."""
    global _pending
    if _pending is not None:
        name, _pending = _pending, None
        raise KeyboardInterrupt(f"signal {name}")


def _replaceable(handler: Any) -> bool:
    """Python's own handlers (or ours): a handler someone else installed is theirs."""
    return handler in (signal.SIG_DFL, signal.default_int_handler, _handle)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def installed(*, raise_at_exit: bool = False) -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise KeyboardInterrupt (and are remembered), unless
    another handler than Python's default is installed. Nested blocks share the outer
    one's handlers and pending signal. ``raise_at_exit``: a signal still pending when
    the block ends without an exception (one whose raise was swallowed after the last
    check) is raised then, after the outermost block restored the handlers. Main
    thread only (elsewhere a no-op: only it can set handlers)."""
    global _pending, _installed
    if not _main_thread():
        yield
        return
    outer = _installed == 0
    previous: dict[int, Any] = {}
    pending = None
    _installed += 1
    try:
        if outer:
            _pending = None
            previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
            for sig, handler in previous.items():
                if _replaceable(handler):
                    signal.signal(sig, _handle)
        yield
    finally:
        _installed -= 1
        if outer:
            for sig, handler in previous.items():
                if signal.getsignal(sig) is _handle:
                    signal.signal(sig, handler)
            pending, _pending = _pending, None
    if raise_at_exit:  # reached only without an exception
        if pending is not None:
            raise KeyboardInterrupt(f"signal {pending}")
        raise_pending()  # a nested block: the outer one's handlers stay


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within: SIGINT and SIGTERM are recorded, not raised (call ``raise_pending`` after
    the block), so the block runs to its end. They are also blocked in this thread, so a
    process forked inside starts with them blocked: the worker lifts that (``unblock``)
    once it has its own handlers. Main thread only (elsewhere a no-op)."""
    global _deferring
    if not _main_thread():
        yield
        return
    _deferring += 1
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a blocked one is recorded
        _deferring -= 1


def unblock() -> None:
    """Let SIGINT and SIGTERM through again (in a worker forked inside ``deferred``)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
