"""What a folding search asks of the way it proposes trials (``search: exact`` or ``optuna``).

The driver (``driver.py``) opens a proposer once the steps every trial shares are built
(``Start``), asks it for foldings as trials are wanted, and, where what a trial measured
decides the next (``measures``), tells it what each batch measured, in trial order. A
proposer that cannot go on raises ``SearchStopped``: the search's error, not the run's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ..expectations import Expectation
from ..tree import Segment

#: a design's estimates and the model they were made from (``Engine.measured``)
Measured = tuple[dict[str, Any], str]


class SearchStopped(Exception):
    """No (more) trials can be asked; the message says why. ``exhausted``: every trial
    the search can propose was built already."""

    def __init__(self, reason: str, *, exhausted: bool = False) -> None:
        super().__init__(reason)
        self.exhausted = exhausted


@dataclass(frozen=True)
class Start:
    """What a search starts from, once the steps every trial shares are built."""

    prefix: Segment
    key: str | None  # the prefix's cache key
    #: the prefix's output model, fetched first where it was left on the remote cache
    model: Callable[[], Path]
    #: the designs below the prefix that start the search (warm_start), and their estimates
    warm: list[tuple[Segment, Measured | None]]
    capacity: dict[str, int] | None  # the part's LUT/BRAM_18K/URAM/DSP (None: unknown)
    bounds: list[Expectation]  # the ``expect:`` bounds of the prefix's designs


class Proposal(NamedTuple):
    """A folding to build as a trial, and what a model predicted of it (if anything)."""

    folding: dict[str, Any]
    predicted: dict[str, Any] | None = None


class Result(NamedTuple):
    """What a trial measured: its estimates (None: it failed before them), and the name
    of its folding file."""

    estimates: dict[str, Any] | None
    file: str


class Proposer(Protocol):
    #: what a trial measured decides the next: trials are asked a batch at a time, and
    #: each batch is told before the next is asked
    measures: bool

    def open(self, start: Start) -> None:
        """Read what the search needs (from the memo, else from the model with FINN)."""

    def ask(self, first: int) -> list[Proposal]:
        """The next trials, numbered from ``first``."""

    def tell(self, results: list[Result], complete: bool) -> None:
        """What the last batch measured, in trial order (``complete``: all of it; else
        the search stops after these)."""

    def close(self) -> None:
        """The run ends."""
