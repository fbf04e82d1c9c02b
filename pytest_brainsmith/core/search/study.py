"""Optuna's study of one folding search, made in memory and replayed where needed.

A study is made from the search space (an integer attribute is searched by index, an
ordered distribution; others by value), the warm trials (FINN's foldings, told with
their estimates: NSGA-II's first generation) and the balanced proposals (queued: the
first trials asked). Batch ``index`` is asked with a sampler seeded by (seed,
``index``), so the same batches asked again after the same results draw the same
trials: a process that makes the study late replays what the memo recorded.
"""

from __future__ import annotations

import warnings
from typing import Any

from ..blueprint.space import FoldingSearchSettings


def ordered(values: tuple[Any, ...]) -> bool:
    """Integer values are searched by index (an ordered distribution), others by value."""
    return all(isinstance(v, int) for v in values)


def param_value(space: Any, name: str, value: Any) -> Any:
    """A folding value as the study's param (an index for ordered values)."""
    param = next(p for p in space.params if p.name == name)
    return param.values.index(value) if ordered(param.values) else value


def folding_of(space: Any, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The folding (FINN's folding config) a trial's params stand for."""
    values = {}
    for param in space.params:
        chosen = params[param.name]
        values[param.name] = param.values[int(chosen)] if ordered(param.values) else chosen
    return space.folding(values)


class OptunaStudy:
    """The study: batches asked (each trial's params) and told, in trial order."""

    def __init__(
        self,
        space: Any,
        settings: FoldingSearchSettings,
        warm: list[dict[str, Any]],
        proposals: list[dict[str, Any]],
    ) -> None:
        import optuna  # an optional dependency: the search checked it is there

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.settings = settings
        self.warm_trials = len(warm)  # study trials that are FINN's foldings (numbered first)
        self._distributions: dict[str, Any] = {}
        for param in space.params:
            if ordered(param.values):  # by index
                distribution: Any = optuna.distributions.IntDistribution(0, len(param.values) - 1)
            else:
                distribution = optuna.distributions.CategoricalDistribution(list(param.values))
            self._distributions[param.name] = distribution
        study = optuna.create_study(directions=[d for d, _ in settings.objectives])
        generation = f"{optuna.samplers.NSGAIISampler.__name__}:generation"
        for trial in warm:  # NSGA-II's first generation: the search breeds from it
            study.add_trial(
                optuna.trial.create_trial(
                    params=trial["params"],
                    distributions=self._distributions,
                    values=trial["values"],
                    user_attrs={"warm": trial["design"]},
                    system_attrs={generation: 0},
                    constraints=trial["constraints"],
                )
            )
        for params in proposals:  # the first trials asked
            study.enqueue_trial(
                {name: param_value(space, name, value) for name, value in params.items()},
                user_attrs={"proposed": "balanced"},
            )
        self.study = study
        self._handles: dict[int, Any] = {}  # trial number -> optuna Trial, until told

    def ask(self, index: int) -> list[dict[str, Any]]:
        """Ask batch ``index`` of the study, its sampler seeded from (seed, ``index``)."""
        self.study.sampler = self._sampler(index)
        asked = []
        batch = self.settings.batch
        for number in range(index * batch, (index + 1) * batch):
            handle = self.study.ask(self._distributions)
            if handle.number != number + self.warm_trials:
                raise RuntimeError(f"trial {handle.number} asked where {number} was expected")
            self._handles[number] = handle
            asked.append(handle.params)
        return asked

    def tell(self, index: int, batch: list[dict[str, Any]]) -> None:
        """Tell the study what batch ``index`` measured (``told`` of each trial), in
        trial order."""
        state = self.optuna.trial.TrialState
        for number, trial in enumerate(batch, index * self.settings.batch):
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

    def finished(self) -> list[Any]:
        """The study's finished trials, in order (what the journal holds)."""
        done = self.study.get_trials(deepcopy=False)
        return [t for t in done if t.state.is_finished()]

    def _sampler(self, batch: int) -> Any:
        samplers = self.optuna.samplers
        seed = self.settings.seed * 100_003 + batch
        if self.settings.sampler == "tpe":
            with warnings.catch_warnings():  # multivariate TPE is "experimental" in Optuna
                warnings.simplefilter("ignore", self.optuna.exceptions.ExperimentalWarning)
                return samplers.TPESampler(
                    seed=seed, n_startup_trials=self.settings.batch, multivariate=True
                )
        if self.settings.sampler == "random":
            return samplers.RandomSampler(seed=seed)
        return samplers.NSGAIISampler(seed=seed, population_size=max(2, self.settings.batch))
