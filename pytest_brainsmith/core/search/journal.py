"""A folding study written to Optuna's journal storage, beside the results store.

For optuna-dashboard and for the record. The process holding the study's lock writes
it, replacing what an earlier run wrote (another process leaves it alone). A journal
that already holds every trial this run knows (an earlier run wrote them) is left as it
is: no study is made for it. Trials not told are not written: a later run asks them
again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as LockTimeout

#: the file of Optuna's journal storage, beside the results store
STUDY_FILE = "folding-studies.journal"


class StudyJournal:
    """One study's copy in the journal at ``storage`` (None: kept in memory only)."""

    def __init__(self, storage: Path | None, directions: list[str]) -> None:
        self.storage = storage
        self.directions = directions
        self._lock: FileLock | None = None
        self._study: Any = None  # the study in the journal, once this process made it
        self._written = 0  # trials written

    def write(self, name: str, finished: int, trials: Callable[[], list[Any]]) -> None:
        """The study ``name`` so far into the journal: its ``finished`` trials, given by
        ``trials`` (called only when the journal does not hold them all)."""
        if self.storage is None:
            return
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        if self._lock is None:
            lock = FileLock(str(self.storage.parent / f".{self.storage.name}.{digest}.lock"))
            try:
                self.storage.parent.mkdir(parents=True, exist_ok=True)
                lock.acquire(timeout=0)
            except (LockTimeout, OSError):
                self.storage = None  # another process writes it
                return
            self._lock = lock
        mark = self.storage.parent / f".{self.storage.name}.{digest}.written"
        if self._study is None and _journal_holds(self.storage, mark) >= finished:
            return
        done = trials()
        if self._study is None:
            import optuna  # an optional dependency: the search checked it is there

            journal = optuna.storages.JournalStorage(
                optuna.storages.journal.JournalFileBackend(str(self.storage))
            )
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=journal)
            self._study = optuna.create_study(
                study_name=name, storage=journal, directions=self.directions
            )
        self._study.add_trials(done[self._written :])
        self._written = len(done)
        st = self.storage.stat()
        mark.write_text(
            json.dumps({"trials": self._written, "file": _file_id(st), "size": st.st_size})
        )

    def release(self) -> None:
        """The run ends: the study's lock is let go."""
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock.release()
            self._lock = None


def _file_id(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino]


def _journal_holds(journal: Path, mark: Path) -> int:
    """How many trials of a study ``mark`` says the journal holds (-1: unknown, e.g. the
    journal was removed or replaced since)."""
    try:
        written = json.loads(mark.read_text())
        st = journal.stat()
        if written["file"] == _file_id(st) and written["size"] <= st.st_size:
            return int(written["trials"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return -1
