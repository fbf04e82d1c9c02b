"""Ctrl-C and SIGTERM stop a run, every time.

Python runs a signal's handler between two bytecodes of the main thread, wherever that
is. Inside a callback whose exceptions Python prints as "Exception ignored" and drops,
the handler's KeyboardInterrupt is lost and the run goes on waiting for a build that
may take hours. Seen in CI: a SIGTERM landing in ``os.fork()``'s after-fork callback
(logging's lock release) while a worker was started; finalizers, weakref and garbage-
collector callbacks drop it the same way. So the signals wait while a worker is
started and registered (``deferred``: an interrupt there would also leave a worker no
one kills), and the handler records the signal, which the engine raises again on its
next turn (``raise_pending``) if its first raise was swallowed anywhere else.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

#: What a terminal (Ctrl-C), a batch scheduler or ``kill`` sends to end a run.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_pending: str | None = None


def _handle(signum: int, frame: Any) -> None:
    global _pending
    _pending = signal.Signals(signum).name
    raise KeyboardInterrupt(f"signal {_pending}")


def raise_pending() -> None:
    """Raise the KeyboardInterrupt of a signal whose first one was swallowed."""
    global _pending
    if _pending is not None:
        name, _pending = _pending, None
        raise KeyboardInterrupt(f"signal {name}")


def _replaceable(handler: Any) -> bool:
    """Python's own handlers (or ours): a handler someone else installed is theirs."""
    return handler in (signal.SIG_DFL, signal.default_int_handler, _handle)


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise KeyboardInterrupt (and are remembered), unless
    another handler than Python's default is installed. Main thread only (elsewhere a
    no-op: signal handlers can only be set there)."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    mine = [sig for sig, handler in previous.items() if _replaceable(handler)]
    _pending = None
    for sig in mine:
        signal.signal(sig, _handle)
    try:
        yield
    finally:
        for sig in mine:
            if signal.getsignal(sig) is _handle:
                signal.signal(sig, previous[sig])
        _pending = None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within: SIGINT and SIGTERM wait (blocked in this thread, delivered on exit), so
    the block runs to its end. A process forked inside inherits the block: the worker
    lifts it once it has its own handlers (``unblock``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def unblock() -> None:
    """Let SIGINT and SIGTERM through again (in a worker forked inside ``deferred``)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
