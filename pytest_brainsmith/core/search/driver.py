"""A folding search's driver: the trials wanted, proposed, built and told.

The engine drives each search on its turn (``Engine.add_driver``). Once the prefix (the
steps every trial shares) and the designs that start the search are built, the search
opens its proposer (``exact.py`` or ``optuna_trials.py``) and makes each folding it
proposes a trial: the folding written as FINN's folding JSON, and one design below the
prefix (``TrialSegment`` and the segments below it where the tree cuts) submitted to the
engine's workers through the cache. An exact plan is asked as far as trials are wanted;
an Optuna batch is told what it measured, in trial order, before the next is asked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..toolchain import current as toolchain
from ..tree import Segment, trial_of, trial_path
from . import bounds, parts
from .exact import ExactPlan
from .memo import FoldingMemo
from .optuna_trials import OptunaTrials
from .proposer import Proposal, Proposer, Result, SearchStopped, Start

if TYPE_CHECKING:
    from ..engine import Engine

BUDGET_REASON = (
    "the time budget (--brainsmith-budget) ran out before this trial was asked; "
    "a later run continues the search"
)
#: a trial that ended so without estimates: not its verdict (the run stopped, the
#: machine failed), so the search stops there and what follows never depends on it
_STOPPED = ("cancelled", "aborted", "error", "skipped")


class FoldingSearch:
    """The trials below one prefix; the engine drives it (``Engine.add_driver``)."""

    def __init__(
        self, engine: Engine, prefix: Segment, storage: Path | None, folding_dir: Path
    ) -> None:
        space = prefix.tree.space
        assert space.folding is not None
        self.engine = engine
        self.prefix = prefix
        #: the compiler, taken once: the search's proposers read its folding facet
        self.compiler = toolchain()
        self.settings = space.folding
        self.folding_dir = folding_dir
        self.wanted = 0  # trials needed: the highest selected trial number + 1
        self.trials: dict[int, Segment] = {}  # trial number -> its design (leaf)
        self.error: str | None = None  # why no (more) trials are asked
        self.out_of_time = False  # the time budget stopped it
        self.exhausted = False  # the exact front has fewer designs than trials
        #: the part's LUT/BRAM_18K/URAM/DSP (None: unknown): a trial beyond is infeasible
        self.capacity: dict[str, int] | None = None
        #: what the search derived and asked is kept in the cache: a re-run needs no FINN
        memo = FoldingMemo(engine.cache.base)
        self.proposer: Proposer = (
            ExactPlan(self.settings, memo, self.compiler)
            if self.settings.search == "exact"
            else OptunaTrials(self.settings, memo, storage, self.compiler)
        )
        self._opened = False
        self._started = False
        self._batch: list[Segment] = []  # the trials asked last, until told
        #: the designs below the prefix whose foldings start the search (warm_start)
        self._warm = (
            [d for d in prefix.leaves() if not engine.limits.unrunnable(d)]
            if self.settings.warm_start
            else []
        )

    # -- what the caller asks -----------------------------------------------------------
    def want(self, number: int) -> None:
        """Trial ``number`` is selected: the search runs at least that far."""
        self.wanted = max(self.wanted, min(number + 1, self.settings.trials))
        if not self._started:
            self._started = True
            self.engine.submit([self.prefix, *self._warm])
            self.engine.scheduler.drivers.add(self)

    def trial(self, number: int) -> Segment | None:
        """Trial ``number``'s design, once asked (None: the search stopped before it;
        ``error`` says why)."""
        self.want(number)
        self.engine.advance_until(lambda: number in self.trials or self.error is not None)
        return self.trials.get(number)

    def beyond_part(self, estimates: dict[str, Any]) -> list[str]:
        """What a design's estimates use beyond the part's capacity (empty: it fits)."""
        return bounds.beyond_part(estimates, self.capacity)

    def feasible(self, leaf: Segment) -> bool:
        """The trial met every expectation and fits the part."""
        outcome = self.engine.design(leaf)
        return outcome.status == "passed" and not self.beyond_part(outcome.estimates)

    # -- the engine's turn ----------------------------------------------------------------
    def drive(self) -> None:
        if self.error is not None or not self.wanted:
            return
        try:
            if not self._opened and not self._open():
                return
            if not self.proposer.measures:  # nothing depends on what a trial measured
                while len(self.trials) < self.wanted:
                    self._submit(self.proposer.ask(len(self.trials)))
                return
            if self._batch and all(self._measured(t) for t in self._batch):
                self._tell_batch()
            if not self._batch and len(self.trials) < self.wanted:
                if self.engine.gating.out_of_time():
                    self.error, self.out_of_time = BUDGET_REASON, True
                    return
                self._batch = self._submit(self.proposer.ask(len(self.trials)))
        except SearchStopped as stop:
            self.error, self.exhausted = str(stop), stop.exhausted
        except Exception as exc:  # a broken model or study: the search's error, not the run's
            self.error = f"folding search failed: {type(exc).__name__}: {exc}"

    def close(self) -> None:
        """The run ends: a batch that finished is told, and the proposer closed."""
        with contextlib.suppress(Exception):
            if self._opened and self.proposer.measures and self.error is None and self._batch:
                if all(self._measured(t) for t in self._batch):
                    self._tell_batch()
        self.proposer.close()

    def _open(self) -> bool:
        """Once the prefix (and the designs that start the search) are built: the part's
        capacity, and the proposer opened on them."""
        outcome = self.engine.outcome(self.prefix)
        if outcome is None:
            return False
        if not all(self.engine.finished(d) or self.engine.measured(d) for d in self._warm):
            return False
        if not outcome.ok or not outcome.output_model:
            cause = outcome.root_cause
            if cause.status in ("cancelled", "pruned"):  # the run stopped, or its budget
                self.out_of_time = self.engine.gating.out_of_time()
                self.error = BUDGET_REASON if self.out_of_time else (cause.error or "stopped")
                return False
            self.error = (
                f"the steps every trial shares failed (segment {cause.segment}"
                f"{', step ' + cause.step if cause.step else ''}: {cause.error})"
            )
            return False
        warm = [(d, self.engine.measured(d)) for d in self._warm]
        config = self.prefix.config()
        part = parts.part_of(config) or self.compiler.fpga_part(config)
        self.capacity = parts.capacity(part) if part else None
        start = Start(
            prefix=self.prefix,
            key=self.engine.key(self.prefix),
            model=partial(self._model, Path(outcome.output_model), outcome.key),
            warm=warm,
            capacity=self.capacity,
            bounds=bounds.expect_bounds(self.prefix),
        )
        self.proposer.open(start)
        self._opened = True
        return True

    def _model(self, model: Path, key: str | None) -> Path:
        """The prefix's output model, fetched now where it was left on the remote cache
        (entry ``key``)."""
        if not model.exists() and key:
            why = self.engine.cache.verify_file(key, self.compiler.output_model)
            if why is not None:
                raise SearchStopped(f"the model after the shared steps cannot be had: {why}")
        return model

    def _submit(self, proposals: list[Proposal]) -> list[Segment]:
        """Each proposal a trial, numbered on from the last: its folding written as
        FINN's folding JSON, its design submitted to the engine."""
        batch = []
        for number, (folding, predicted) in enumerate(proposals, len(self.trials)):
            text = json.dumps(folding, sort_keys=True)
            name = f"folding-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
            path = self.compiler.folding.write(self.folding_dir / name, folding)
            leaf = trial_path(self.prefix, number, folding, path)
            if predicted is not None:
                trial = trial_of(leaf)
                assert trial is not None
                trial.predicted = predicted
            self.trials[number] = leaf
            batch.append(leaf)
        self.engine.submit(batch)
        return batch

    def _measured(self, leaf: Segment) -> bool:
        """The trial has its estimates (the steps after them need not be done: the next
        batch is asked meanwhile), or it ended without them."""
        return self.engine.measured(leaf, self.prefix) is not None or self.engine.finished(leaf)

    def _tell_batch(self) -> None:
        """Tell the proposer what the batch measured, in trial order."""
        results: list[Result] = []
        for leaf in self._batch:
            trial = trial_of(leaf)
            assert trial is not None
            measured = self.engine.measured(leaf, self.prefix)
            outcome = self.engine.design(leaf) if measured is None else None
            if outcome is not None and outcome.status in _STOPPED:
                self.proposer.tell(results, complete=False)
                self._batch = []
                self.out_of_time = self.engine.gating.out_of_time()
                self.error = (
                    BUDGET_REASON
                    if self.out_of_time
                    else f"the search stopped at trial {trial.number}: "
                    f"{outcome.reason or outcome.status}"
                )
                return
            # ended without estimates: it failed before them
            results.append(Result(measured[0] if measured else None, trial.folding_file.name))
        self._batch = []
        self.proposer.tell(results, complete=True)
