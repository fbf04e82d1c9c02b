"""The engine: builds the segments designs need, as a task graph on worker processes.

Every segment a submitted design needs is one task, keyed like its cache entry; the
engine builds each once, through the cache, and answers with segment and design
outcomes. Where things are:

- ``engine.py``: ``Engine``, the front the pytest items, ``explore()`` and folding
  searches call (submit designs, wait for one, its outcome, progress, shutdown);
- ``tasks.py``: the task graph and the task states (after Dask's scheduler);
- ``states.py``: the task states as a table: every state change goes through it;
- ``scheduler.py``: the turn loop that moves tasks: submit, queue by critical path,
  collect, enforce timeouts, finish, shut down;
- ``launching.py``: start a ready task: reuse, lock, fetch, check its input, spec,
  launch on a worker (or build inline); what fits in memory beside what runs;
- ``key_locks.py``: tasks waiting for a key another process (its lock) or another
  task of this engine (a twin) is building;
- ``toolchain_prep.py``: the compiler prepared once before the first launch;
- ``drivers.py``: work that asks for more work on every turn (a folding search);
- ``gating.py``: the gates' bookkeeping (expect, Pareto, best first, time budget);
  ``core/gates.py`` says what the gates mean;
- ``limits.py``: timeouts, memory, cluster resources per segment; step durations;
- ``results.py``: cache answers and worker answers to segment outcomes, and a
  design's verdict from its segments and its ``expect:`` bounds.

What ends a segment, and whether it is recorded in the cache as the segment's lasting
failure (a later run reports it without building again):

- a step raised, the worker crashed (exit code, SIGSEGV...), ran past its timeout or
  its memory limit: recorded (a timeout or memory failure stands only while the limit
  is not raised);
- the worker was killed from outside (SIGKILL: the OOM killer, a person), the disk
  filled up, FINN cannot be imported: the machine's fault, not recorded;
- a step called pytest.skip()/fail(): that run's verdict, not recorded;
- Ctrl-C, SIGTERM, -x, the end of the run: the worker is killed, nothing recorded.
"""

from .drivers import Driver
from .engine import Engine, EngineClosed
from .key_locks import POLL_SECONDS
from .launching import EngineEvents, Launcher
from .limits import DEFAULT_STEP_SECONDS, DURATIONS_FILE
from .results import describe_failure
from .tasks import segment_label

__all__ = [
    "DEFAULT_STEP_SECONDS",
    "DURATIONS_FILE",
    "POLL_SECONDS",
    "Driver",
    "Engine",
    "EngineClosed",
    "EngineEvents",
    "Launcher",
    "describe_failure",
    "segment_label",
]
