"""A folding search: foldings asked for and built by the engine as trials.

``search: exact`` (the default): once the prefix (the steps every trial shares) is
built, FINN's own per-node cost model of every setting of every node is read from its
model in process (``finn/cost_model.py``) and solved (``core/folding_solver.py``): the
cheapest design at every throughput within the part (and the ``expect:`` bounds). The
trials are the designs of that front, built on real FINN in order (the cheapest meeting
each ``targets`` throughput and each FINN folding's throughput first); each trial's
record holds what the model predicted of it beside FINN's estimates. Nothing depends on
what a trial measured, so the plan is kept in the cache and a warm run needs no FINN.

``search: optuna``: one search per prefix of a blueprint's tree. Once the
prefix is built, the search space is read from its model (``finn/folding.py``: FINN's
own rules). The study's first trials are, with ``warm_start``, FINN's foldings of the
designs below the prefix (told with their estimates, nothing rebuilt) and foldings
balanced across layers by FINN's per-node estimates (asked and built first). Then
trials are asked in batches of ``batch``: each is one design below the prefix
(``TrialSegment`` and the segments below it where the tree cuts), built by the engine's workers through the cache. When a whole batch
is done its results are told, in trial order, and the next batch is asked with a
sampler seeded by (seed, batch).

So the trials depend on the seed and on what earlier trials measured, never on how many
workers there are or which build finished first. Every process computes the study from
scratch in memory: an xdist worker asks the same trials as any other, a later run asks
the same trials again (cache hits: nothing is rebuilt) and goes on from there when
``trials`` was raised. The process holding the study's lock also writes it to Optuna's
journal storage beside the results store (for optuna-dashboard and for the record),
replacing what an earlier run wrote. Objectives and the ``expect:`` bounds come from
FINN's estimates; the bounds are Optuna constraints (a trial that misses one is kept,
but ranks below every feasible one).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock
from filelock import Timeout as LockTimeout

from ..expectations import Expectation, for_design
from ..toolchain import current as toolchain
from ..tree import Segment, trial_of, trial_path
from . import parts as fpga_parts
from .memo import FoldingMemo, code_identity

if TYPE_CHECKING:
    from ..engine import Engine

#: the file of Optuna's journal storage, beside the results store
STUDY_FILE = "folding-studies.journal"
BUDGET_REASON = (
    "the time budget (--brainsmith-budget) ran out before this trial was asked; "
    "a later run continues the search"
)


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
        self.trials: dict[int, Segment] = {}  # trial number -> its design (leaf)
        self.error: str | None = None  # why no (more) trials are asked
        self.out_of_time = False  # the time budget stopped it
        self.exact = self.settings.search == "exact"
        #: the exact search's designs, in build order (folding, model), and how solved
        self.plan: list[dict[str, Any]] = []
        self.solved: dict[str, Any] = {}
        self.exhausted = False  # the exact front has fewer designs than trials
        #: the part's LUT/BRAM_18K/URAM/DSP (None: unknown): a trial beyond is infeasible
        self.capacity: dict[str, int] | None = None
        self._opened = False
        self.space: Any = None  # the toolchain's folding space (``finn.folding.FoldingSpace``)
        self.study: Any = None
        self.study_name = ""
        self.warm_trials = 0  # study trials that are FINN's foldings (numbered first)
        self._optuna: Any = None
        self._distributions: dict[str, Any] = {}
        #: what the search derived and asked is kept in the cache: a re-run needs no FINN
        self.memo = FoldingMemo(engine.cache.base)
        #: FINN's foldings that start the study, with their estimates (told first)
        self._warm_told: list[dict[str, Any]] = []
        self._proposals: list[dict[str, Any]] = []  # balanced foldings, asked first
        self._asked_identity: dict[str, Any] = {}
        #: every batch asked: each trial's params and what it measured (None: not yet)
        self._history: list[list[dict[str, Any]]] = []
        self._batch: list[Segment] = []
        self._handles: dict[int, Any] = {}  # trial number -> optuna Trial, until told
        self._written = 0  # study trials written to the journal
        self._journal: Any = None
        self._lock: FileLock | None = None
        self._started = False
        #: the designs below the prefix whose foldings start the study (warm_start)
        self._warm = (
            [d for d in prefix.leaves() if not engine.unrunnable(d)]
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
            self.engine.add_driver(self)

    def trial(self, number: int) -> Segment | None:
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
            if not self._opened and not self._open():
                return
            if self.exact:  # nothing depends on what a trial measured: ask as wanted
                while self.error is None and len(self.trials) < self.wanted:
                    self._ask_exact()
                return
            if self._batch and all(self._measured(t) for t in self._batch):
                self._tell_batch()
            if not self._batch and len(self.trials) < self.wanted:
                if self.engine.out_of_time():
                    self.error, self.out_of_time = BUDGET_REASON, True
                    return
                self._ask_batch()
        except Exception as exc:  # a broken model or study: the search's error, not the run's
            self.error = f"folding search failed: {type(exc).__name__}: {exc}"

    def close(self) -> None:
        """The run ends: a batch that finished is told and the journal written (trials
        not told are not written: a later run asks them again)."""
        with contextlib.suppress(Exception):
            if self._opened and not self.exact and self.error is None and self._batch:
                if all(self._measured(t) for t in self._batch):
                    self._tell_batch()
        with contextlib.suppress(Exception):
            self._write_journal()
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock.release()
            self._lock = None

    # -- the study ----------------------------------------------------------------------
    def _open(self) -> bool:
        """Once the prefix (and the designs that start the study) are built: read the
        search space (from the memo, else from the model with FINN) and name the study.
        Optuna's study itself is made only when a trial must be asked that the memo does
        not hold (``_study``)."""
        outcome = self.engine.outcome(self.prefix)
        if outcome is None:
            return False
        if not all(self.engine.finished(d) or self.engine.measured(d) for d in self._warm):
            return False
        if not outcome.ok or not outcome.output_model:
            cause = outcome.root_cause
            if cause.status in ("cancelled", "pruned"):  # the run stopped, or its budget
                self.out_of_time = self.engine.out_of_time()
                self.error = BUDGET_REASON if self.out_of_time else (cause.error or "stopped")
                return False
            self.error = (
                f"the steps every trial shares failed (segment {cause.segment}"
                f"{', step ' + cause.step if cause.step else ''}: {cause.error})"
            )
            return False
        measured = [self.engine.measured(d) for d in self._warm]
        config = self.prefix.config()
        part = fpga_parts.part_of(config) or toolchain().fpga_part(config)
        self.capacity = fpga_parts.capacity(part) if part else None
        if self.exact:
            return self._open_exact(Path(outcome.output_model), measured, outcome.key)
        if importlib.util.find_spec("optuna") is None:
            from ..blueprint.folding import OPTUNA_MISSING

            self.error = OPTUNA_MISSING
            return False
        try:
            derived = self._derive(Path(outcome.output_model), measured, outcome.key)
        except FileNotFoundError as exc:
            self.error = f"the model after the shared steps cannot be had: {exc}"
            return False
        self.space = space = toolchain().folding_space_from_json(derived["space"])
        if not space.params:
            self.error = "the model after the shared steps has no node whose folding can vary"
            return False
        identity = {
            "prefix": self.engine.key(self.prefix),
            "settings": self.settings.key(),
            "space": space.describe(),
            "expect": [str(e) for e in self._bounds()],
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
        where = "::".join(self.prefix.nodeid_parts())
        self.study_name = f"{self.prefix.tree.space.name}:{where}:{digest.hexdigest()[:16]}"
        self._proposals = derived["proposals"]
        for design, found, chosen in zip(self._warm, measured, derived["warm"], strict=True):
            values = self._values(found[0]) if found is not None else None
            if values is None or chosen is None:
                continue  # no estimates, or a folding the space cannot express
            self._warm_told.append(
                {
                    "design": "::".join(design.nodeid_parts()),
                    "params": {n: self._param_value(n, v) for n, v in chosen.items()},
                    "values": values,
                    "constraints": self._constraints(found[0]),
                }
            )
        self.warm_trials = len(self._warm_told)
        self._asked_identity = {
            "study": digest.hexdigest(),
            "code": code_identity(),
            "warm": self._warm_told,
            "proposals": self._proposals,
        }
        self._opened = True
        return True

    # -- the exact search ---------------------------------------------------------------
    def _open_exact(
        self, model: Path, measured: list[tuple[dict[str, Any], str] | None], key: str | None
    ) -> bool:
        """The plan: FINN's cost model of the prefix's model solved (from the memo, else
        with FINN; ``core/folding_solver.py``)."""
        config = self.prefix.config()
        clock = float(config.get("synth_clk_period_ns") or 0)
        if clock <= 0:
            self.error = "the exact search needs the clock (clock_ns) to count throughput"
            return False
        capacity, max_cycles = self._solver_bounds(clock)
        targets = [int(1e9 / clock / fps) for fps in self.settings.targets]
        targets += [
            int(found[0]["max_cycles"])
            for found in measured
            if found is not None and isinstance(found[0].get("max_cycles"), int | float)
        ]
        objective = next(m for d, m in self.settings.objectives if d == "minimize")
        part = fpga_parts.part_of(config) or toolchain().fpga_part(config)
        identity = {
            "prefix": self.engine.key(self.prefix),
            "settings": self.settings.key(),
            "attributes": {k: list(v) for k, v in sorted(self.settings.attributes.items())},
            "part": part,
            "capacity": capacity,
            "max_cycles": max_cycles,
            "targets": targets,
            "clock": clock,
            "minimize_bit_width": config.get("minimize_bit_width", True),
            "code": code_identity(),
        }
        found = self.memo.get("plan", identity)
        if found is None:
            if not model.exists() and key:  # left on the remote cache: fetched now
                why = self.engine.cache.verify_file(key, toolchain().output_model)
                if why is not None:
                    self.error = f"the model after the shared steps cannot be had: {why}"
                    return False
            if not part:
                self.error = "the exact search needs the part (fpga_part or board)"
                return False
            from .solver import plan

            compiler = toolchain()
            compiler.prepare()
            started = time.perf_counter()
            table = compiler.cost_table(
                model,
                part,
                {k: list(v) for k, v in self.settings.attributes.items()},
                ultra=bool(self.capacity and self.capacity.get("URAM")),
                minimize_bit_width=bool(config.get("minimize_bit_width", True)),
            )
            found = plan(
                table,
                objective=objective,
                capacity=capacity,
                clock_ns=clock,
                max_cycles=max_cycles,
                targets=targets,
                metric="cost" if self.settings.estimates == "corrected" else "finn",
            )
            found["stats"]["table_seconds"] = round(
                time.perf_counter() - started - found["stats"]["seconds"], 3
            )
            found = json.loads(json.dumps(found))  # what the memo gives back, also now
            self.memo.put("plan", identity, found)
        self.solved = {k: v for k, v in found.items() if k != "designs"}
        self.plan = found["designs"]
        where = "::".join(self.prefix.nodeid_parts())
        self.study_name = f"{self.prefix.tree.space.name}:{where}:exact"
        if not self.plan:  # every trial an infeasible proposal: the last one fails
            self.error = f"the exact search found no design to build: {found.get('why')}"
            self.exhausted = True
            return False
        self._opened = True
        return True

    def _solver_bounds(self, clock: float) -> tuple[dict[str, float] | None, int | None]:
        """The capacity the solver keeps designs within: the part's, less the ``expect:``
        bounds on resources; and the most cycles an ``expect:`` throughput bound allows.
        (Other bounds are checked on the built designs only.)"""
        capacity: dict[str, float] = dict(self.capacity or {})
        max_cycles: int | None = None
        for bound in self._bounds():
            if bound.metric in fpga_parts.RESOURCES and bound.op in ("<=", "<"):
                limit = bound.bound if bound.op == "<=" else bound.bound - 1e-6
                capacity[bound.metric] = min(capacity.get(bound.metric, math.inf), limit)
            cycles = None
            if bound.metric == "estimated_throughput_fps" and bound.op in (">=", ">"):
                exact = 1e9 / clock / bound.bound
                cycles = math.floor(exact) - (1 if bound.op == ">" and exact.is_integer() else 0)
            elif bound.metric == "max_cycles" and bound.op in ("<=", "<"):
                cycles = math.floor(bound.bound) - (1 if bound.op == "<" else 0)
            if cycles is not None:
                max_cycles = cycles if max_cycles is None else min(max_cycles, cycles)
        return (capacity or None), max_cycles

    def _ask_exact(self) -> None:
        """The plan's next ``batch`` designs, written as folding JSON and submitted."""
        first = len(self.trials)
        if first >= len(self.plan):
            self.exhausted = True
            self.error = (
                f"the solved front has {len(self.plan)} design(s), all built as "
                f"trial-0..{len(self.plan) - 1}: there is no trial-{first} to build"
            )
            return
        batch = []
        for number, entry in enumerate(self.plan[first : first + self.settings.batch], first):
            folding = entry["folding"]
            text = json.dumps(folding, sort_keys=True)
            name = f"folding-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
            path = toolchain().write_folding(self.folding_dir / name, folding)
            leaf = trial_path(self.prefix, number, folding, path)
            trial = trial_of(leaf)
            assert trial is not None
            trial.predicted = {
                **entry["model"],
                "capacity": self.capacity,
                "estimates": self.settings.estimates,
                "solver": self.solved.get("stats", {}),
                "front": len(self.solved.get("front", [])),
                "fastest": (self.solved.get("front") or [{}])[0].get("estimated_throughput_fps"),
            }
            self.trials[number] = leaf
            batch.append(leaf)
        self.engine.submit(batch)

    # -- what a trial's verdict needs ---------------------------------------------------
    def beyond_part(self, estimates: dict[str, Any]) -> list[str]:
        """What a design's estimates use beyond the part's capacity (empty: it fits)."""
        found = []
        for metric, limit in (self.capacity or {}).items():
            value = estimates.get(metric)
            if isinstance(value, int | float) and value > limit:
                found.append(f"{metric} {value:,.0f} > {limit:,} (the part's)")
        return found

    def feasible(self, leaf: Segment) -> bool:
        """The trial met every expectation and fits the part."""
        outcome = self.engine.design(leaf)
        return outcome.status == "passed" and not self.beyond_part(outcome.estimates)

    def _derive(
        self,
        model: Path,
        measured: list[tuple[dict[str, Any], str] | None],
        key: str | None = None,
    ) -> dict[str, Any]:
        """What the search reads from built models, with FINN: the space of the prefix's
        ``model``, the folding of each design that starts the study (None: it is not one
        of the space's) and the balanced proposals. Kept in the memo, keyed by the models'
        cache keys and what else it depends on: a later run needs no FINN for it."""
        config = self.prefix.config()
        metric = next(
            (
                m
                for d, m in self.settings.objectives
                if d == "minimize" and m in toolchain().node_estimates
            ),
            None,
        )
        identity = {
            "prefix": self.engine.key(self.prefix),
            "attributes": {k: list(v) for k, v in sorted(self.settings.attributes.items())},
            # each warm design's model, by its cache entry (content-addressed)
            "warm": [Path(found[1]).parent.name if found else None for found in measured],
            "metric": metric,
            "batch": self.settings.batch,
            "part": [config.get("fpga_part"), config.get("board")],
            "code": code_identity(),
        }
        found = self.memo.get("derived", identity)
        if found is not None:
            return found
        if not model.exists() and key:  # left on the remote cache (entry ``key``): fetched now
            why = self.engine.cache.verify_file(key, toolchain().output_model)
            if why is not None:
                raise FileNotFoundError(why)
        compiler = toolchain()
        compiler.prepare()
        attributes = {k: list(v) for k, v in self.settings.attributes.items()}
        space = compiler.folding_space(model, attributes)
        warm = [
            compiler.read_folding(Path(found[1]), space) if found is not None else None
            for found in measured
        ]
        reached = tuple(
            int(found[0]["max_cycles"])
            for found in measured
            if found is not None and isinstance(found[0].get("max_cycles"), int | float)
        )
        proposals = []
        part = compiler.fpga_part(config)
        if self.settings.warm_start and space.params and metric and part:
            try:
                proposals = compiler.balanced_foldings(
                    model, space, metric, self.settings.batch, part, reached
                )
            except Exception:  # noqa: BLE001 - an op without per-node estimates: no proposals
                proposals = []
        # what the memo gives back, also in this run: both paths go on from the same data
        value = json.loads(
            json.dumps({"space": space.to_json(), "warm": warm, "proposals": proposals})
        )
        self.memo.put("derived", identity, value)
        return value

    def _study(self) -> Any:
        """Optuna's study, made on first need: the warm trials told, the proposals
        queued, and every batch asked so far asked again and told (the same draws: each
        batch's sampler is seeded by its number), so it stands where this run is."""
        if self.study is not None:
            return self.study
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        assert self.space is not None
        for param in self.space.params:
            if _ordered(param.values):  # by index
                distribution: Any = optuna.distributions.IntDistribution(0, len(param.values) - 1)
            else:
                distribution = optuna.distributions.CategoricalDistribution(list(param.values))
            self._distributions[param.name] = distribution
        study = optuna.create_study(directions=[d for d, _ in self.settings.objectives])
        generation = f"{optuna.samplers.NSGAIISampler.__name__}:generation"
        for warm in self._warm_told:  # NSGA-II's first generation: the search breeds from it
            study.add_trial(
                optuna.trial.create_trial(
                    params=warm["params"],
                    distributions=self._distributions,
                    values=warm["values"],
                    user_attrs={"warm": warm["design"]},
                    system_attrs={generation: 0},
                    constraints=warm["constraints"],
                )
            )
        for params in self._proposals:  # the first trials asked
            study.enqueue_trial(
                {name: self._param_value(name, value) for name, value in params.items()},
                user_attrs={"proposed": "balanced"},
            )
        self.study = study
        for index, batch in enumerate(self._history):
            if self._ask_in_study(index) != [trial["params"] for trial in batch]:
                raise RuntimeError(
                    f"Optuna asked other trials than recorded for batch {index}; "
                    f"remove {self.memo.root} to start the search's records again"
                )
            self._tell_study(index)
        return study

    def _ask_in_study(self, index: int) -> list[dict[str, Any]]:
        """Ask batch ``index`` of the study, its sampler seeded from (seed, ``index``)."""
        self.study.sampler = self._sampler(index)
        asked = []
        for number in range(index * self.settings.batch, (index + 1) * self.settings.batch):
            handle = self.study.ask(self._distributions)
            if handle.number != number + self.warm_trials:
                raise RuntimeError(f"trial {handle.number} asked where {number} was expected")
            self._handles[number] = handle
            asked.append(handle.params)
        return asked

    def _tell_study(self, index: int) -> None:
        """Tell the study what batch ``index`` measured, in trial order."""
        state = self._optuna.trial.TrialState
        for number, trial in enumerate(self._history[index], index * self.settings.batch):
            told = trial["told"]
            if told is None or number not in self._handles:
                continue
            handle = self._handles.pop(number)
            if told == "fail":
                self.study.tell(handle, state=state.FAIL)
                continue
            handle.set_user_attr("folding_file", told["file"])
            for name, value in told["constraints"].items():
                handle.set_constraint(name, value)
            self.study.tell(handle, told["values"])

    def _param_value(self, name: str, value: Any) -> Any:
        """A folding value as the study's param (an index for ordered values)."""
        assert self.space is not None
        param = next(p for p in self.space.params if p.name == name)
        return param.values.index(value) if _ordered(param.values) else value

    def _sampler(self, batch: int) -> Any:
        samplers = self._optuna.samplers
        seed = self.settings.seed * 100_003 + batch
        if self.settings.sampler == "tpe":
            with warnings.catch_warnings():  # multivariate TPE is "experimental" in Optuna
                warnings.simplefilter("ignore", self._optuna.exceptions.ExperimentalWarning)
                return samplers.TPESampler(
                    seed=seed, n_startup_trials=self.settings.batch, multivariate=True
                )
        if self.settings.sampler == "random":
            return samplers.RandomSampler(seed=seed)
        return samplers.NSGAIISampler(seed=seed, population_size=max(2, self.settings.batch))

    def _ask_batch(self) -> None:
        """The next ``batch`` trials (never fewer: the trials do not depend on how many
        were asked for), written as folding JSON and submitted to the engine. They come
        from the memo when an earlier run asked them after the same results, else from
        the study (and are kept in the memo)."""
        assert self.space is not None
        index, first = len(self._history), len(self.trials)
        identity = {
            **self._asked_identity,
            "told": [[trial["told"] for trial in batch] for batch in self._history],
        }
        asked = self.memo.get("asked", identity)
        if asked is None:
            self._study()
            asked = json.loads(json.dumps(self._ask_in_study(index)))
            self.memo.put("asked", identity, asked)
        elif self.study is not None and self._ask_in_study(index) != asked:
            raise RuntimeError(f"Optuna asked other trials than recorded for batch {index}")
        self._history.append([{"params": params, "told": None} for params in asked])
        batch = []
        for number, params in enumerate(asked, first):
            folding = self._folding(params)
            text = json.dumps(folding, sort_keys=True)
            name = f"folding-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
            path = toolchain().write_folding(self.folding_dir / name, folding)
            leaf = trial_path(self.prefix, number, folding, path)
            self.trials[number] = leaf
            batch.append(leaf)
        self._batch = batch
        self.engine.submit(batch)

    def _folding(self, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
        assert self.space is not None
        values = {}
        for param in self.space.params:
            chosen = params[param.name]
            values[param.name] = param.values[int(chosen)] if _ordered(param.values) else chosen
        return self.space.folding(values)

    def _bounds(self) -> list[Expectation]:
        space = self.prefix.tree.space
        choices = dict(c.describe() for c in self.prefix.choices())
        return for_design(space.expect, choices)

    def _values(self, estimates: dict[str, Any]) -> list[float] | None:
        values = [estimates.get(metric) for _, metric in self.settings.objectives]
        if all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            return [float(v) for v in values]  # type: ignore[arg-type]
        return None

    def _constraints(self, estimates: dict[str, Any]) -> dict[str, float]:
        """Optuna's constraints (<= 0 is feasible): the ``expect:`` bounds and the part's
        capacity, relative."""
        found = {str(e): _violation(e, estimates.get(e.metric)) for e in self._bounds()}
        for metric, limit in (self.capacity or {}).items():
            value = estimates.get(metric)
            if isinstance(value, int | float) and limit > 0:
                found[f"{metric} <= {limit} (the part)"] = (value - limit) / limit
        return found

    def _measured(self, leaf: Segment) -> bool:
        """The trial has its estimates (the steps after them need not be done: the next
        batch is asked meanwhile), or it ended without them."""
        return self.engine.measured(leaf, self.prefix) is not None or self.engine.finished(leaf)

    def _tell_batch(self) -> None:
        """Record what the batch measured, in trial order (and tell the study, if made)."""
        recorded = self._history[-1]
        for leaf, entry in zip(self._batch, recorded, strict=True):
            trial = trial_of(leaf)
            assert trial is not None
            measured = self.engine.measured(leaf, self.prefix)
            if measured is not None:
                estimates = measured[0]
                values = self._values(estimates)
                entry["told"] = (
                    "fail"
                    if values is None
                    else {
                        "values": values,
                        "constraints": self._constraints(estimates),
                        "file": trial.folding_file.name,
                    }
                )
                continue
            outcome = self.engine.design(leaf)  # ended without estimates
            if outcome.status in ("cancelled", "aborted", "error", "skipped"):
                # not the trial's verdict (the run stopped, the machine failed): the study
                # stops here, so that what follows never depends on it
                if self.study is not None:
                    self._tell_study(len(self._history) - 1)
                self._batch = []
                self.out_of_time = self.engine.out_of_time()
                self.error = (
                    BUDGET_REASON
                    if self.out_of_time
                    else f"the search stopped at trial {trial.number}: "
                    f"{outcome.reason or outcome.status}"
                )
                return
            entry["told"] = "fail"  # it failed before its estimates
        if self.study is not None:
            self._tell_study(len(self._history) - 1)
        self._batch = []
        self._write_journal()

    def _write_journal(self) -> None:
        """The study so far into the journal beside the results store, replacing an
        earlier run's copy, if this process holds the study's lock (else another
        process writes it). A journal that already holds every trial this run knows
        (an earlier run wrote them) is left as it is: no study is made for it."""
        if self.storage is None or self.space is None or self.exact:
            return
        name = hashlib.sha256(self.study_name.encode()).hexdigest()[:16]
        if self._lock is None:
            lock = FileLock(str(self.storage.parent / f".{self.storage.name}.{name}.lock"))
            try:
                self.storage.parent.mkdir(parents=True, exist_ok=True)
                lock.acquire(timeout=0)
            except (LockTimeout, OSError):
                self.storage = None  # another process writes it
                return
            self._lock = lock
        mark = self.storage.parent / f".{self.storage.name}.{name}.written"
        finished = len(self._warm_told) + sum(
            trial["told"] is not None for batch in self._history for trial in batch
        )
        if self._journal is None and _journal_holds(self.storage, mark) >= finished:
            return
        study = self._study()
        if self._journal is None:
            journal = self._optuna.storages.JournalStorage(
                self._optuna.storages.journal.JournalFileBackend(str(self.storage))
            )
            with contextlib.suppress(KeyError):
                self._optuna.delete_study(study_name=self.study_name, storage=journal)
            self._journal = self._optuna.create_study(
                study_name=self.study_name,
                storage=journal,
                directions=[d for d, _ in self.settings.objectives],
            )
        done = study.get_trials(deepcopy=False)
        finished_trials = [t for t in done if t.state.is_finished()]
        self._journal.add_trials(finished_trials[self._written :])
        self._written = len(finished_trials)
        st = self.storage.stat()
        mark.write_text(
            json.dumps({"trials": self._written, "file": _file_id(st), "size": st.st_size})
        )


def _ordered(values: tuple[Any, ...]) -> bool:
    """Integer values are searched by index (an ordered distribution), others by value."""
    return all(isinstance(v, int) for v in values)


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
