"""The states a segment's outcome can be in, why a failed one failed, and their colours.

Below both the tree (its DOT export colours a segment by its state) and the outcomes
that carry a state, so neither needs the other for them.
"""

#: Segment states. ``built``/``reused``/``fetched`` (from the remote cache, ``remote_cache.py``)
#: /``passthrough`` are usable; the others are not.
#: ``failed``: its own steps failed in this run; ``failed-before``: a recorded failure
#: reused; ``blocked``: an ancestor did not build; ``error``: the machine's fault (full
#: disk, FINN missing, a worker killed from outside), never recorded; ``aborted``: a
#: step asked to skip or fail the test (pytest.skip / pytest.fail), never recorded;
#: ``cancelled``: the run stopped first (Ctrl-C, -x, the time budget: kind ``budget``);
#: ``pruned``: not built because every design that needed it was stopped by a gate
#: (kind ``expect`` or ``pareto``, see gates.py); ``not-run``: not needed.
OK_STATES = ("built", "reused", "fetched", "passthrough")

#: Fill colours of segment states, shared by the DOT and html views.
STATUS_COLORS = {
    "built": "palegreen",
    "reused": "lightblue",
    "fetched": "lightcyan",
    "failed": "salmon",
    "failed-before": "lightsalmon",
    "blocked": "mistyrose",
    "pruned": "khaki",
    "cancelled": "lightgrey",
    "skipped": "lightgrey",
    "not-run": "white",
    "passthrough": "white",
}

#: Why a segment failed: ``exception`` (a step raised), ``crash`` (its worker died:
#: exit code, signal), ``timeout``, ``memory``, ``killed`` (SIGKILL from outside: the
#: OOM killer or a person), ``environment`` (disk full, FINN missing), ``control``.
LASTING_KINDS = ("exception", "crash", "timeout", "memory")
