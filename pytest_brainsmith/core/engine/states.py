"""Task states as data: which stimulus moves a task from which state to which.

As Dask's worker state machine (``distributed/worker_state_machine.py``), the states and
their transitions are a table, not code spread over methods that also do I/O: the
scheduler says what happened to a task (a stimulus) and ``move`` answers the state it is
in now, or raises ``IllegalTransition`` for a stimulus that cannot happen in its state
(a bug of ours, caught where it happens instead of as a stalled run). Nothing here
reads, writes, forks or waits.

States (``tasks.STATES``): ``new`` (known, not needed yet), ``waiting`` (for its parent
or a gate), ``ready`` (queued), ``held`` (another process holds the key's lock),
``parked`` (a Pareto gate decides first), ``running`` (on a worker), ``done`` (it has an
outcome).
"""

from __future__ import annotations

from typing import Protocol

#: stimulus -> {state it may come in: the state it leads to}
TRANSITIONS: dict[str, dict[str, str]] = {
    # a submitted design needs the task
    "needed": {"new": "waiting"},
    # its parent is done (or it has none): queued, unless a gate or a cause stops it
    "queued": {"waiting": "ready"},
    # a Pareto gate must see every competitor before this segment may run
    "parked": {"waiting": "parked"},
    # the gate decided: the task goes on (or is pruned, "finished")
    "unparked": {"parked": "waiting"},
    # another process builds the key: wait for its lock
    "lock-busy": {"ready": "held", "held": "held"},
    # time to try the lock again
    "retry": {"held": "ready"},
    # another task of this engine builds the same key (a twin): wait for it, no lock
    "twin-building": {"ready": "held", "held": "held"},
    # the twin is done: reuse what it built (or try the lock)
    "twin-done": {"held": "ready"},
    # its build started on a worker
    "launched": {"ready": "running", "held": "running"},
    # an outcome: built, reused, fetched, failed, blocked, pruned, cancelled, error
    "finished": {
        "waiting": "done",
        "ready": "done",
        "held": "done",
        "parked": "done",
        "running": "done",
    },
    # the checkpoint it (or a child) would resume from was found damaged: built again
    # (the task being started, the passthroughs above it, and the segment that made it)
    "input-damaged": {
        "done": "waiting",
        "waiting": "waiting",
        "ready": "waiting",
        "held": "waiting",
    },
}


class IllegalTransition(RuntimeError):
    """A stimulus that cannot happen to a task in its state."""


class HasState(Protocol):
    state: str
    label: str


def next_state(state: str, stimulus: str) -> str:
    """The state a task in ``state`` is in after ``stimulus``."""
    try:
        moves = TRANSITIONS[stimulus]
    except KeyError:
        raise IllegalTransition(f"unknown stimulus {stimulus!r}") from None
    if state not in moves:
        raise IllegalTransition(
            f"{stimulus!r} cannot happen to a task that is {state!r} "
            f"(only to one that is {', '.join(sorted(moves))})"
        )
    return moves[state]


def move(task: HasState, stimulus: str) -> str:
    """Apply ``stimulus`` to ``task``; its new state."""
    try:
        task.state = next_state(task.state, stimulus)
    except IllegalTransition as exc:
        raise IllegalTransition(f"{task.label}: {exc}") from None
    return task.state


def reachable(start: str = "new") -> set[str]:
    """Every state a task can reach from ``start`` (for the table's own checks)."""
    seen, todo = {start}, [start]
    while todo:
        state = todo.pop()
        for moves in TRANSITIONS.values():
            target = moves.get(state)
            if target is not None and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen
