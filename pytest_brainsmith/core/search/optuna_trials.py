"""``search: optuna``: trials sampled by Optuna a batch at a time, told what they measured.

Once the prefix is built, the search space is read from its model (``finn/folding.py``:
FINN's own rules, through the toolchain). The study's first trials are, with
``warm_start``, FINN's foldings of the designs below the prefix (told with their
estimates, nothing rebuilt) and foldings balanced across layers by FINN's per-node
estimates (asked and built first). Then trials are asked in batches of ``batch``; when
a whole batch is done its results are told, in trial order, and the next batch is
asked with a sampler seeded by (seed, batch) (``study.py``). Objectives and the
``expect:`` bounds come from FINN's estimates; the bounds are Optuna constraints (a
trial that misses one is kept, but ranks below every feasible one).

So the trials depend on the seed and on what earlier trials measured, never on how many
workers there are or which build finished first. Every process computes the study from
scratch in memory: an xdist worker asks the same trials as any other, a later run asks
the same trials again (cache hits: nothing is rebuilt) and goes on from there when
``trials`` was raised. What the search derived and asked is kept in the memo
(``memo.py``): a run that finds it all there makes no study and needs no FINN. The
process holding the study's lock also writes it to Optuna's journal storage
(``journal.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..blueprint.folding import OPTUNA_MISSING
from ..blueprint.space import FoldingSearchSettings
from ..expectations import Expectation
from .bounds import constraints
from .journal import StudyJournal
from .memo import FoldingMemo, code_identity
from .proposer import Measured, Proposal, Result, SearchStopped, Start
from .study import OptunaStudy, folding_of, param_value

if TYPE_CHECKING:
    from ..toolchain import Toolchain


class OptunaTrials:
    """The batches asked of the study, and what each trial measured."""

    measures = True

    def __init__(
        self,
        settings: FoldingSearchSettings,
        memo: FoldingMemo,
        storage: Path | None,
        compiler: Toolchain,
    ) -> None:
        self.settings = settings
        self.compiler = compiler
        self.memo = memo
        self.journal = StudyJournal(storage, [d for d, _ in settings.objectives])
        self.space: Any = None  # the toolchain's folding space (``finn.folding.FoldingSpace``)
        self.study: OptunaStudy | None = None  # made only when the memo lacks a batch
        self.study_name = ""
        self._bounds: list[Expectation] = []
        self._capacity: dict[str, int] | None = None
        #: FINN's foldings that start the study, with their estimates (told first)
        self._warm_told: list[dict[str, Any]] = []
        self._proposals: list[dict[str, Any]] = []  # balanced foldings, asked first
        self._asked_identity: dict[str, Any] = {}
        #: every batch asked: each trial's params and what it measured (None: not yet)
        self._history: list[list[dict[str, Any]]] = []

    def open(self, start: Start) -> None:
        """Read the search space (from the memo, else from the model with FINN) and name
        the study. Optuna's study itself is made only when a trial must be asked that the
        memo does not hold (``_study``)."""
        if importlib.util.find_spec("optuna") is None:
            raise SearchStopped(OPTUNA_MISSING)
        self._bounds, self._capacity = start.bounds, start.capacity
        try:
            derived = self._derive(start)
        except FileNotFoundError as exc:
            raise SearchStopped(f"the model after the shared steps cannot be had: {exc}") from None
        self.space = space = self.compiler.folding.space_from_json(derived["space"])
        if not space.params:
            raise SearchStopped(
                "the model after the shared steps has no node whose folding can vary"
            )
        identity = {
            "prefix": start.key,
            "settings": self.settings.key(),
            "space": space.describe(),
            "expect": [str(e) for e in start.bounds],
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
        where = "::".join(start.prefix.nodeid_parts())
        self.study_name = f"{start.prefix.tree.space.name}:{where}:{digest.hexdigest()[:16]}"
        self._proposals = derived["proposals"]
        for (design, found), chosen in zip(start.warm, derived["warm"], strict=True):
            values = self._values(found[0]) if found is not None else None
            if values is None or chosen is None:
                continue  # no estimates, or a folding the space cannot express
            self._warm_told.append(
                {
                    "design": "::".join(design.nodeid_parts()),
                    "params": {n: param_value(space, n, v) for n, v in chosen.items()},
                    "values": values,
                    "constraints": constraints(found[0], self._bounds, self._capacity),
                }
            )
        self._asked_identity = {
            "study": digest.hexdigest(),
            "code": code_identity(self.compiler.folding),
            "warm": self._warm_told,
            "proposals": self._proposals,
        }

    def _derive(self, start: Start) -> dict[str, Any]:
        """What the search reads from built models, with FINN: the space of the prefix's
        model, the folding of each design that starts the study (None: it is not one of
        the space's) and the balanced proposals. Kept in the memo, keyed by the models'
        cache keys and what else it depends on: a later run needs no FINN for it."""
        config = start.prefix.config()
        measured: list[Measured | None] = [found for _, found in start.warm]
        metric = next(
            (
                m
                for d, m in self.settings.objectives
                if d == "minimize" and m in self.compiler.folding.node_estimates
            ),
            None,
        )
        identity = {
            "prefix": start.key,
            "attributes": {k: list(v) for k, v in sorted(self.settings.attributes.items())},
            # each warm design's model, by its cache entry (content-addressed)
            "warm": [Path(found[1]).parent.name if found else None for found in measured],
            "metric": metric,
            "batch": self.settings.batch,
            "part": [config.get("fpga_part"), config.get("board")],
            "code": code_identity(self.compiler.folding),
        }
        found = self.memo.get("derived", identity)
        if found is not None:
            return found
        model = start.model()
        compiler = self.compiler
        compiler.prepare()
        attributes = {k: list(v) for k, v in self.settings.attributes.items()}
        space = compiler.folding.space(model, attributes)
        warm = [
            compiler.folding.read(Path(found[1]), space) if found is not None else None
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
                proposals = compiler.folding.balanced(
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

    def _study(self) -> OptunaStudy:
        """Optuna's study, made on first need, and every batch asked so far asked again
        and told (the same draws: each batch's sampler is seeded by its number), so it
        stands where this run is."""
        if self.study is not None:
            return self.study
        self.study = study = OptunaStudy(
            self.space, self.settings, self._warm_told, self._proposals
        )
        for index, batch in enumerate(self._history):
            if study.ask(index) != [trial["params"] for trial in batch]:
                raise RuntimeError(
                    f"Optuna asked other trials than recorded for batch {index}; "
                    f"remove {self.memo.root} to start the search's records again"
                )
            study.tell(index, batch)
        return study

    def ask(self, first: int) -> list[Proposal]:
        """The next ``batch`` trials (never fewer: the trials do not depend on how many
        were asked for). They come from the memo when an earlier run asked them after the
        same results, else from the study (and are kept in the memo)."""
        assert self.space is not None
        index = len(self._history)
        identity = {
            **self._asked_identity,
            "told": [[trial["told"] for trial in batch] for batch in self._history],
        }
        asked = self.memo.get("asked", identity)
        if asked is None:
            asked = json.loads(json.dumps(self._study().ask(index)))
            self.memo.put("asked", identity, asked)
        elif self.study is not None and self.study.ask(index) != asked:
            raise RuntimeError(f"Optuna asked other trials than recorded for batch {index}")
        self._history.append([{"params": params, "told": None} for params in asked])
        return [Proposal(folding_of(self.space, params)) for params in asked]

    def tell(self, results: list[Result], complete: bool) -> None:
        """Record what the last batch measured, in trial order (and tell the study, if
        made); a complete batch is written to the journal."""
        recorded = self._history[-1]
        for entry, (estimates, file) in zip(recorded, results, strict=False):
            values = self._values(estimates) if estimates is not None else None
            entry["told"] = (
                "fail"
                if values is None or estimates is None
                else {
                    "values": values,
                    "constraints": constraints(estimates, self._bounds, self._capacity),
                    "file": file,
                }
            )
        if self.study is not None:
            self.study.tell(len(self._history) - 1, recorded)
        if complete:
            self._write_journal()

    def close(self) -> None:
        """The study into the journal (trials not told are not written), its lock let go."""
        with contextlib.suppress(Exception):
            self._write_journal()
        self.journal.release()

    def _write_journal(self) -> None:
        if self.space is None:
            return
        finished = len(self._warm_told) + sum(
            trial["told"] is not None for batch in self._history for trial in batch
        )
        self.journal.write(self.study_name, finished, lambda: self._study().finished())

    def _values(self, estimates: dict[str, Any]) -> list[float] | None:
        values = [estimates.get(metric) for _, metric in self.settings.objectives]
        if all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            return [float(v) for v in values]  # type: ignore[arg-type]
        return None
