"""What the scheduler asks of a launcher, and of the build handle a launcher returns.

Every launcher (the local worker pool, a Dask cluster, batch jobs, the warm server)
has every member below, so the scheduler, the engine and the plugin use them plainly:
a member that means nothing for a launcher has a no-op value (a cluster shares no
step functions by identity, the local pool has no cluster to describe).
``tests/test_launchers.py`` checks each launcher class against these Protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Build(Protocol):
    """One segment's build as the scheduler sees it (a forked process, a Dask task)."""

    #: the build's answer (the small dict ``build_segment`` returns), once it came
    result: dict[str, Any] | None
    #: why we ended it ("timeout", "cancel"), None if we did not
    killed_by_us: str | None

    def waitables(self) -> list[Any]:
        """What ``multiprocessing.connection.wait`` may wait on for news of it."""
        ...

    def poll(self) -> bool:
        """True once it answered or ended without an answer."""
        ...

    def reap(self, timeout: float = 0.0) -> bool:
        """Collect what is left of it once it exited (True)."""
        ...

    def kill(self, why: str) -> None:
        """End it now, and everything it started."""
        ...

    def exit_cause(self) -> tuple[str, str]:
        """(kind, message) for a build that ended without an answer."""
        ...

    def output_tail(self, lines: int = 30) -> str:
        """What it printed last."""
        ...


@runtime_checkable
class Launcher(Protocol):
    """Starts ``job`` (a segment's build, returning its answer as a small dict) and
    returns its ``Build`` handle.

    A launcher whose ``remote`` is true builds elsewhere (a Dask cluster): this process
    then needs no compiler, and the launcher is also given the segment's ``timeout``
    (it enforces it where the build runs, from when it starts rather than when it was
    queued), the engine's ``priority`` and the worker ``resources`` its steps need."""

    #: builds run elsewhere: no compiler here, the timeout enforced where they run
    remote: bool
    #: builds run in processes forked here, sharing this machine's memory (its budget)
    local: bool
    #: processes kept forked ahead (the scheduler sets it to its build slots)
    spares: int
    #: builds that can run at once where they run (a cluster's threads), None: the
    #: engine's worker count
    slots: int | None
    #: where attempts ran whose worker died under them (a batch job ended)
    lost: list[str]
    #: builds started (each in a process of its own)
    started: int
    #: compiler imports outside this process (the worker pool's fork server)
    imports: int

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
    ) -> Build: ...

    def share(self, objects: Iterable[Any]) -> None:
        """Send these objects (step functions, the cache) to builds by identity."""
        ...

    def prepare(self, close_fds: tuple[int, ...] = ()) -> str | None:
        """Get the compiler ready for local builds (before the first fork); why it
        cannot be, if so."""
        ...

    def describe(self) -> str | None:
        """The launcher's part of the status line (None: it has none)."""
        ...

    def close(self) -> None:
        """The run ends: end what the launcher started here (idempotent)."""
        ...
