"""A baseline: a blueprint's designs as a run left them, kept like a golden file.

A baseline holds each design's outcome, estimates and verification, and the blueprint's
Pareto front, in one JSON file (``<blueprint>.baseline.json``) written a design a line,
so a diff of a committed baseline shows the designs that changed (``document``,
``dumps``; ``parse`` reads one back, naming the file in every error). A design is known
by its blueprint's name and its choices, never by a segment key (which every code
change moves); ``fixed_choices`` lets a design match across a sweep that grew from one
value or shrank to one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..metrics import NAMES as METRICS
from .fronts import DEFAULT_FRONT_METRICS, front_of

FORMAT = "pytest-brainsmith-baseline"
VERSION = 1
SUFFIX = ".baseline.json"


class BaselineError(ValueError):
    """A baseline cannot be read or written (the message names the file or URL)."""


def identity(choices: dict[str, Any] | None) -> str:
    """A design within its blueprint: its choices, canonical."""
    return json.dumps(choices or {}, sort_keys=True, separators=(",", ":"), default=str)


def label(choices: dict[str, Any] | None) -> str:
    """``MVAU=rtl, target_fps=400000``"""
    return ", ".join(f"{k}={v}" for k, v in (choices or {}).items()) or "single design"


@dataclass(frozen=True)
class BaselineDesign:
    """One design as the baseline holds it."""

    choices: dict[str, Any]
    outcome: str
    estimates: dict[str, float]
    verification: str | None = None

    @property
    def label(self) -> str:
        return label(self.choices)


@dataclass
class Baseline:
    """A blueprint's baseline, read from ``source`` (a file, a URL, a results store run)."""

    blueprint: str
    designs: dict[str, BaselineDesign]  # by identity
    source: str
    front_metrics: tuple[str, ...] = DEFAULT_FRONT_METRICS
    toolchain: str | None = None
    #: what every design of the baseline's blueprint had in common (``fixed_choices``)
    fixed: dict[str, Any] = field(default_factory=dict)

    def get(
        self, choices: dict[str, Any], fixed: dict[str, Any] | None = None
    ) -> BaselineDesign | None:
        """The baseline's design with these choices. A branch point that one side no longer
        has (a sweep narrowed to one value, or widened from one) matches on the value the
        other side fixed for it (``fixed``: the blueprint's, ``self.fixed``: the baseline's)."""
        exact = self.designs.get(identity(choices))
        if exact is not None or fixed is None:
            return exact
        found = [
            d
            for d in self.designs.values()
            if all(
                _value(k, choices, fixed) == _value(k, d.choices, self.fixed)
                for k in set(choices) | set(d.choices)
            )
        ]
        return found[0] if len(found) == 1 else None

    def front(self, metrics: Sequence[str] | None = None) -> list[BaselineDesign]:
        """The baseline's passing designs no other passing design dominates."""
        chosen = tuple(metrics or self.front_metrics)
        entrants = [(d, d.estimates) for d in self.designs.values() if d.outcome == "passed"]
        return [d for d, _ in front_of(entrants, chosen)]


_MISSING = object()


def _value(key: str, choices: dict[str, Any], fixed: dict[str, Any]) -> Any:
    if key in choices:
        return choices[key]
    return fixed.get(key, _MISSING)  # never equal to anything, itself included


def fixed_choices(space: Any) -> dict[str, Any]:
    """What a blueprint fixes where another version of it may branch: its FINN config
    fields (a sweep of one value included), a kernel's one backend, its one model. A
    design's identity is its choices; these let a design match across a sweep that grew
    from one value or shrank to one."""
    fixed: dict[str, Any] = dict(space.finn_config)
    for name, values in space.sweeps.items():
        if len(values) == 1:
            fixed[name] = values[0]
    for choice in space.kernels:
        if len(choice.backends) == 1:
            fixed[choice.kernel.name] = choice.backends[0]
    if len(space.models) == 1:
        fixed["model"] = space.models[0].name
    return json.loads(json.dumps(fixed, default=str))


def metrics_of(estimates: dict[str, Any] | None) -> dict[str, float]:
    return {
        m: float(v) if isinstance(v, float) else v
        for m, v in (estimates or {}).items()
        if m in METRICS and isinstance(v, int | float) and not isinstance(v, bool)
    }


def document(
    blueprint: str,
    records: Iterable[dict[str, Any]],
    *,
    front_metrics: Sequence[str] = DEFAULT_FRONT_METRICS,
    blueprint_file: str | None = None,
    toolchain: str | None = None,
    fixed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A baseline document from design records (``DesignOutcome.record()``, the results
    store's rows): designs sorted by identity, no time stamp, so a baseline committed
    beside its blueprint changes only where a design did."""
    designs = []
    for record in records:
        verification = record.get("verification")
        status = verification.get("status") if isinstance(verification, dict) else verification
        designs.append(
            {
                "choices": record.get("choices") or {},
                "outcome": record.get("outcome") or record.get("engine_outcome") or "unknown",
                "estimates": metrics_of(record.get("estimates")),
                "verification": None if status in (None, "off") else status,
            }
        )
    designs.sort(key=lambda d: identity(d["choices"]))
    parsed = [_design(d, "", n) for n, d in enumerate(designs)]
    entrants = [(d, d.estimates) for d in parsed if d.outcome == "passed"]
    on_front = [d.choices for d, _ in front_of(entrants, front_metrics)]
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION, "blueprint": blueprint}
    if blueprint_file:
        doc["blueprint_file"] = blueprint_file
    if toolchain:
        doc["toolchain"] = toolchain
    doc["front"] = {"metrics": list(front_metrics), "designs": on_front}
    if fixed:
        doc["fixed"] = fixed
    doc["designs"] = designs
    return doc


def dumps(doc: dict[str, Any]) -> str:
    """The document as text: a design a line, so a diff of a committed baseline shows
    the designs that changed."""
    lines = []
    for name, value in doc.items():
        if name == "designs":
            rows = [json.dumps(d, sort_keys=True) for d in value]
            inner = ",\n".join(f"  {row}" for row in rows)
            lines.append(f' "designs": [\n{inner}\n ]' if rows else ' "designs": []')
        else:
            lines.append(f" {json.dumps(name)}: {json.dumps(value, sort_keys=True)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def parse(text: str | bytes, source: str, blueprint: str | None = None) -> Baseline:
    """A baseline from its JSON text; BaselineError (naming ``source``) for anything that
    is not a whole baseline of this format version, or (``blueprint``) of another blueprint."""
    try:
        doc = json.loads(text)
    except UnicodeDecodeError:
        raise BaselineError(f"{source}: not a baseline: the file is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        cut = " (truncated?)" if exc.pos >= len(text) - 1 else ""
        raise BaselineError(
            f"{source}: not a baseline: invalid JSON at line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}{cut}"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BaselineError(f'{source}: not a pytest-brainsmith baseline (no "format": "{FORMAT}")')
    version = doc.get("version")
    if version != VERSION:
        raise BaselineError(
            f"{source}: baseline format version {version!r}; this pytest-brainsmith reads "
            f"version {VERSION}: write it again with --brainsmith-baseline-update"
        )
    name = doc.get("blueprint")
    if not isinstance(name, str):
        raise BaselineError(f'{source}: "blueprint": expected the blueprint\'s name')
    if blueprint is not None and name != blueprint:
        raise BaselineError(f"{source}: the baseline of blueprint {name!r}, not of {blueprint!r}")
    designs = doc.get("designs")
    if not isinstance(designs, list):
        raise BaselineError(f'{source}: "designs": expected a list of designs')
    parsed: dict[str, BaselineDesign] = {}
    for n, raw in enumerate(designs):
        design = _design(raw, source, n)
        key = identity(design.choices)
        if key in parsed:
            raise BaselineError(f"{source}: designs[{n}]: {design.label} is listed twice")
        parsed[key] = design
    front = doc.get("front") or {}
    metrics = front.get("metrics") if isinstance(front, dict) else None
    if not isinstance(metrics, list) or not metrics or any(m not in METRICS for m in metrics):
        raise BaselineError(f'{source}: "front.metrics": expected a list of estimate metrics')
    toolchain = doc.get("toolchain")
    fixed = doc.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise BaselineError(f'{source}: "fixed": expected a mapping of name: value')
    return Baseline(
        name,
        parsed,
        source,
        tuple(metrics),
        toolchain if isinstance(toolchain, str) else None,
        fixed,
    )


def _design(raw: Any, source: str, n: int) -> BaselineDesign:
    where = f"{source}: designs[{n}]"
    if not isinstance(raw, dict):
        raise BaselineError(f"{where}: expected a mapping with choices, outcome, estimates")
    choices, outcome, estimates = raw.get("choices"), raw.get("outcome"), raw.get("estimates")
    if not isinstance(choices, dict):
        raise BaselineError(f"{where}: choices: expected a mapping of branch point: value")
    if not isinstance(outcome, str):
        raise BaselineError(f"{where}: outcome: expected passed, failed, skipped or error")
    if not isinstance(estimates, dict) or any(
        isinstance(v, bool) or not isinstance(v, int | float) for v in estimates.values()
    ):
        raise BaselineError(f"{where}: estimates: expected a mapping of metric: number")
    verification = raw.get("verification")
    return BaselineDesign(
        choices,
        outcome,
        metrics_of(estimates),
        verification if isinstance(verification, str) else None,
    )
