"""A folding search: Optuna asks for foldings, the engine builds them as trials.

One search per prefix of a blueprint's tree (the steps every trial shares). Once the
prefix is built, the search space is read from its model (``finn/folding.py``: FINN's
own rules), and trials are asked in batches of ``batch``: each is one design below the
prefix (``TrialSegment``), built by the engine's workers through the cache, so a
folding asked again is a cache hit. When a whole batch is done its results are told,
in trial order, and the next batch is asked with a sampler seeded by (seed, batch):
the trials depend on the seed and what earlier trials measured, never on how many
workers there are, which finished first or whether the study was reloaded. So every
process (an xdist worker, a later run) asks the same trials, and a re-run with the
same seed rebuilds nothing.

The study persists in Optuna's journal storage (beside the results store), under a
name that covers the prefix's cache key, the search settings and the search space.
The process that holds the study's lock writes it; another process running the same
search at the same time (an xdist worker) keeps its own copy in memory, which asks
the same trials. A later run continues the stored study: trials asked but never
told (the run was stopped) are built and told then. Objectives and the ``expect:``
bounds come from FINN's estimates; bounds and FINN's weight-stream limit are
Optuna constraints (a trial that misses them is kept, but ranks below every feasible one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock
from filelock import Timeout as LockTimeout

from ..finn import runner as finn_runner
from ..finn.folding import FoldingSpace, folding_space, read_folding, write_folding
from .expectations import Expectation, for_design
from .tree import Segment, TrialSegment

if TYPE_CHECKING:
    from .engine import Engine

#: the file of Optuna's journal storage, beside the results store
STUDY_FILE = "folding-studies.journal"


@dataclass
class TrialResult:
    """What a trial measured, as the study was told."""

    number: int
    state: str  # complete | fail | open (not told: the run stopped first)
    values: list[float] | None
    feasible: bool
    folding_file: Path


class FoldingSearch:
    """The trials below one prefix; the engine drives it (``Engine.add_driver``)."""

    def __init__(
        self, engine: Engine, prefix: Segment, storage: Path | None, folding_dir: Path
    ) -> None:
        space = prefix.tree.space
        assert space.folding is not None
        self.engine = engine
        self.prefix = prefix
        self.settings = space.folding
        self.storage = storage
        self.folding_dir = folding_dir
        self.wanted = 0  # trials needed: the highest selected trial number + 1
        self.trials: dict[int, TrialSegment] = {}
        self.results: dict[int, TrialResult] = {}
        self.error: str | None = None  # why no (more) trials are asked
        self.space: FoldingSpace | None = None
        self.study: Any = None
        self.study_name = ""
        self.persistent = False  # this process writes the stored study
        self._optuna: Any = None
        self._distributions: dict[str, Any] = {}
        self._batch: list[TrialSegment] = []
        self._handles: dict[int, Any] = {}  # trial number -> optuna Trial
        self._stored: dict[int, Any] = {}  # trial number -> FrozenTrial from storage
        self._lock: FileLock | None = None
        self._started = False
        #: the designs below the prefix whose foldings start the study (warm_start)
        self._warm = list(prefix.leaves()) if self.settings.warm_start else []
        self.warm_trials = 0  # study trials that are those designs (numbered first)

    # -- what the caller asks -----------------------------------------------------------
    def want(self, number: int) -> None:
        """Trial ``number`` is selected: the search runs at least that far."""
        self.wanted = max(self.wanted, min(number + 1, self.settings.trials))
        if not self._started:
            self._started = True
            self.engine.submit([self.prefix, *self._warm])
            self.engine.add_driver(self)

    def trial(self, number: int) -> TrialSegment | None:
        """Trial ``number``'s design, once asked (None: the search stopped before it;
        ``error`` says why)."""
        self.want(number)
        self.engine.advance_until(lambda: number in self.trials or self.error is not None)
        return self.trials.get(number)

    # -- the engine's turn ----------------------------------------------------------------
    def drive(self) -> None:
        if self.error is not None or not self.wanted:
            return
        try:
            if self.study is None and not self._open():
                return
            if self._batch and all(self.engine.finished(t) for t in self._batch):
                for trial in self._batch:
                    self._tell(trial)
                self._batch = []
            if not self._batch and len(self.trials) < self.wanted:
                if self.engine.out_of_time():
                    self.error = (
                        "the time budget (--brainsmith-budget) ran out before this trial was "
                        "asked; a later run continues the search"
                    )
                    return
                self._ask_batch()
        except Exception as exc:  # a broken study or model: the search's error, not the run's
            self.error = f"folding search failed: {type(exc).__name__}: {exc}"

    def close(self) -> None:
        """The run ends: a batch that finished is told (an unfinished one stays open in
        the study; the next run builds what is missing and tells it)."""
        if self.study is not None and self.error is None and self._batch:
            if all(self.engine.finished(t) for t in self._batch):
                with contextlib.suppress(Exception):
                    for trial in self._batch:
                        self._tell(trial)
                self._batch = []
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock.release()
            self._lock = None

    # -- the study ----------------------------------------------------------------------
    def _open(self) -> bool:
        """Once the prefix is built: read the search space and open the study."""
        outcome = self.engine.outcome(self.prefix)
        if outcome is None:
            return False
        if not all(self.engine.finished(d) or self.engine.measured(d) for d in self._warm):
            return False  # their foldings start the study
        if not outcome.ok or not outcome.output_model:
            cause = outcome.root_cause
            self.error = (
                f"the steps every trial shares failed (segment {cause.segment}"
                f"{', step ' + cause.step if cause.step else ''}: {cause.error})"
            )
            return False
        try:
            import optuna
        except ImportError:
            from .blueprint.folding import OPTUNA_MISSING

            self.error = OPTUNA_MISSING
            return False
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        finn_runner.import_finn()
        attributes = {k: list(v) for k, v in self.settings.attributes.items()}
        self.space = space = folding_space(Path(outcome.output_model), attributes)
        if not space.params:
            self.error = "the model after the shared steps has no node whose folding can vary"
            return False
        distributions = optuna.distributions
        for param in space.params:
            if all(isinstance(v, int) for v in param.values):  # ordered: by index
                self._distributions[param.name] = distributions.IntDistribution(
                    0, len(param.values) - 1
                )
            else:
                self._distributions[param.name] = distributions.CategoricalDistribution(
                    list(param.values)
                )
        blueprint = self.prefix.tree.space
        identity = {
            "prefix": self.engine.key(self.prefix),
            "settings": self.settings.key(),
            "space": space.describe(),
            "expect": [str(e) for e in self._bounds()],
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
        self.study_name = (
            f"{blueprint.name}:{'::'.join(self.prefix.nodeid_parts())}:{digest.hexdigest()[:16]}"
        )
        storage = self._storage()
        self.study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            directions=[d for d, _ in self.settings.objectives],
            load_if_exists=True,
        )
        stored = self.study.get_trials(deepcopy=False)
        self.warm_trials = sum(1 for t in stored if "warm" in t.user_attrs)
        if self._warm and not stored:
            self._warm_start()
        self._stored = {t.number: t for t in stored}
        return True

    def _warm_start(self) -> None:
        """FINN's foldings of the designs below the prefix, told as the study's first
        trials (NSGA-II's first generation): the search breeds from them. Nothing is built
        for them; a design whose folding the space cannot express is left out."""
        assert self.space is not None
        optuna = self._optuna
        generation = f"{optuna.samplers.NSGAIISampler.__name__}:generation"
        for design in self._warm:
            found = self.engine.measured(design)
            if found is None:
                continue
            estimates, model = found
            values = [estimates.get(metric) for _, metric in self.settings.objectives]
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                continue
            chosen = read_folding(Path(model), self.space)
            if chosen is None:
                continue
            params = {name: self._param_value(name, value) for name, value in chosen.items()}
            folding = self._folding(params)
            constraints = self._constraints(folding, estimates)
            self.study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions=self._distributions,
                    values=[float(v) for v in values],  # type: ignore[arg-type]
                    user_attrs={"warm": "::".join(design.nodeid_parts())},
                    system_attrs={generation: 0},
                    constraints=constraints,
                )
            )
            self.warm_trials += 1

    def _param_value(self, name: str, value: Any) -> Any:
        """A folding value as the study's param (an index for ordered values)."""
        assert self.space is not None
        param = next(p for p in self.space.params if p.name == name)
        if isinstance(self._distributions[name], self._optuna.distributions.IntDistribution):
            return param.values.index(value)
        return value

    def _constraints(
        self, folding: dict[str, dict[str, Any]], estimates: dict[str, Any]
    ) -> dict[str, float]:
        """Optuna's constraints (<= 0 is feasible): FINN's weight-stream limits, relative
        to the limit, and the ``expect:`` bounds, relative to the bound."""
        assert self.space is not None
        named = {
            str(limit): max(-1.0, min(1.0, limit.excess(folding) / limit.limit))
            for limit in self.space.limits
        }
        named.update({str(e): _violation(e, estimates.get(e.metric)) for e in self._bounds()})
        return named

    def _storage(self) -> Any:
        """The journal file if this process may write the study, else memory."""
        if self.storage is None:
            return None
        name = hashlib.sha256(self.study_name.encode()).hexdigest()[:16]
        lock = FileLock(str(self.storage.parent / f".{self.storage.name}.{name}.lock"))
        try:
            self.storage.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=0)
        except (LockTimeout, OSError):
            return None  # another process writes it; this one asks the same trials
        self._lock = lock
        self.persistent = True
        journal = self._optuna.storages.journal
        return self._optuna.storages.JournalStorage(journal.JournalFileBackend(str(self.storage)))

    def _sampler(self, batch: int) -> Any:
        samplers = self._optuna.samplers
        seed = self.settings.seed * 100_003 + batch
        if self.settings.sampler == "tpe":
            return samplers.TPESampler(seed=seed, n_startup_trials=self.settings.batch)
        if self.settings.sampler == "random":
            return samplers.RandomSampler(seed=seed)
        return samplers.NSGAIISampler(seed=seed, population_size=max(2, self.settings.batch))

    def _ask_batch(self) -> None:
        first = len(self.trials)
        last = min(first + self.settings.batch, self.settings.trials)
        self.study.sampler = self._sampler(first // self.settings.batch)
        batch = []
        for number in range(first, last):
            stored = self._stored.get(number + self.warm_trials)
            if stored is not None and stored.params.keys() == self._distributions.keys():
                params = stored.params
                if stored.state.name == "RUNNING":  # asked by a run that stopped first
                    self._handles[number] = self._optuna.Trial(self.study, stored._trial_id)
            else:
                handle = self.study.ask(self._distributions)
                if handle.number != number + self.warm_trials:
                    raise RuntimeError(
                        f"the stored study {self.study_name} has trial {handle.number} where "
                        f"{number + self.warm_trials} was expected"
                    )
                self._handles[number] = handle
                params = handle.params
            folding = self._folding(params)
            text = json.dumps(folding, sort_keys=True)
            name = f"folding-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
            path = write_folding(self.folding_dir / name, folding)
            trial = TrialSegment(self.prefix, number, folding, path)
            self.trials[number] = trial
            batch.append(trial)
        self._batch = batch
        self.engine.submit(batch)

    def _folding(self, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
        assert self.space is not None
        values = {}
        for param in self.space.params:
            chosen = params[param.name]
            if isinstance(
                self._distributions[param.name], self._optuna.distributions.IntDistribution
            ):
                chosen = param.values[int(chosen)]
            values[param.name] = chosen
        return self.space.folding(values)

    def _bounds(self) -> list[Expectation]:
        space = self.prefix.tree.space
        choices = dict(c.describe() for c in self.prefix.choices())
        return for_design(space.expect, choices)

    def _tell(self, trial: TrialSegment) -> None:
        """Tell the study what the trial measured (in trial order, a batch at a time)."""
        number = trial.number
        outcome = self.engine.design(trial)
        estimates = outcome.estimates
        handle = self._handles.pop(number, None)
        assert self.space is not None
        named = self._constraints(trial.folding, estimates)
        violations = list(named.values())
        values = [estimates.get(metric) for _, metric in self.settings.objectives]
        stopped = outcome.status in ("cancelled", "aborted", "error")
        if stopped:  # not the trial's verdict: a later run tells it
            self.results[number] = TrialResult(number, "open", None, False, trial.folding_file)
            return
        measured = outcome.failure is None and all(
            isinstance(v, int | float) and math.isfinite(v) for v in values
        )
        feasible = measured and all(v <= 0 for v in violations)
        self.results[number] = TrialResult(
            number,
            "complete" if measured else "fail",
            [float(v) for v in values] if measured else None,  # type: ignore[arg-type]
            feasible,
            trial.folding_file,
        )
        if handle is None:  # told in an earlier run
            return
        state = self._optuna.trial.TrialState
        if not measured:
            self.study.tell(handle, state=state.FAIL)
            return
        handle.set_user_attr("folding_file", trial.folding_file.name)
        for name, value in named.items():  # Optuna's constraints: <= 0 is feasible
            handle.set_constraint(name, value)
        self.study.tell(handle, [float(v) for v in values])  # type: ignore[arg-type]

    # -- the result -----------------------------------------------------------------------
    def front(self) -> list[TrialResult]:
        """The feasible trials no other feasible trial beats on every objective."""
        done = [r for r in self.results.values() if r.feasible and r.values is not None]
        signs = [1.0 if d == "minimize" else -1.0 for d, _ in self.settings.objectives]

        def beats(a: TrialResult, b: TrialResult) -> bool:
            assert a.values is not None and b.values is not None
            pairs = [(s * x, s * y) for s, x, y in zip(signs, a.values, b.values, strict=True)]
            return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)

        front = [r for r in done if not any(beats(o, r) for o in done)]
        return sorted(front, key=lambda r: r.number)

    def export(self, folder: Path) -> list[Path]:
        """The Pareto front's foldings as FINN folding JSON files, ``trial-N.json``."""
        written = []
        for result in self.front():
            folding = json.loads(result.folding_file.read_text())
            folding.pop("Defaults", None)
            written.append(write_folding(folder / f"trial-{result.number}.json", folding))
        return written


def _violation(expectation: Expectation, value: Any) -> float:
    """How far a value is from meeting a bound, relative to the bound (<= 0: met)."""
    if not isinstance(value, int | float):
        return 1.0
    if expectation.op in ("==", "!="):
        return 0.0 if expectation.holds(value) else 1.0
    gap = value - expectation.bound if expectation.op in ("<=", "<") else expectation.bound - value
    if not expectation.holds(value):
        gap = max(gap, 1e-9)
    return gap / (abs(expectation.bound) or 1.0)
