"""``regress:``: how much worse than the baseline a design may get (see core/regression/).

```yaml
regress:
  LUT: +2%                          # may rise by 2% of the baseline's value
  BRAM_18K: +0                      # may not rise at all (in the metric's unit)
  estimated_throughput_fps: -0%     # may not drop
  front: hypervolume -1%            # the blueprint's Pareto front may lose 1% of its hypervolume
  gone: allow                       # designs of the baseline gone from the blueprint pass
```

``regress: true`` gates every metric and the front with zero tolerance (keys given beside
it override those), ``regress: false`` turns an inherited one off. Merged key by key
through ``extends``. The front's objectives are ``front: {hypervolume: -1%, metrics: [...]}``,
else the blueprint's ``explore.pareto``, else its folding search's objectives, else LUT
against throughput.
"""

from __future__ import annotations

from typing import Any

from ..errors import did_you_mean
from ..metrics import NAMES as METRICS
from ..regression.fronts import DEFAULT_FRONT_METRICS
from ..regression.tolerances import (
    FrontTolerance,
    RegressSettings,
    Tolerance,
    parse_front_tolerance,
    parse_tolerance,
)
from .report import FileReport, MergedReport, typename
from .space import ExploreSettings, FoldingSearchSettings

#: Keys besides the metrics (``enabled`` is what ``regress: true/false`` stands for).
OTHER_KEYS = ("front", "gone", "enabled")
GONE = ("fail", "allow")


def check_regress_file(value: Any, report: FileReport) -> dict[str, Any]:
    """One file's ``regress:`` before ``extends`` merges it: a mapping of known keys (a
    bool turns it on or off)."""
    if isinstance(value, bool):
        return {"enabled": value}
    if not isinstance(value, dict):
        raise report.error(
            ("regress",),
            'expected true, false or a mapping of metric: tolerance (e.g. LUT: "+2%"), '
            f"front and gone, got {typename(value)}",
        )
    known = (*METRICS, *OTHER_KEYS)
    for name in value:
        if name not in known:
            raise report.error(
                ("regress", name),
                "unknown key",
                did_you_mean(str(name), known) or f"metrics: {', '.join(METRICS)}; and front, gone",
            )
    return dict(value)


def resolve_regress(
    raw: dict[str, Any] | None,
    explore: ExploreSettings | None,
    folding: FoldingSearchSettings | None,
    report: MergedReport,
) -> RegressSettings | None:
    """The merged ``regress:`` as settings, or None when absent or turned off."""
    if raw is None:
        return None
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise report.error(
            ("regress", "enabled"), f"expected true or false, got {typename(enabled)}"
        )
    if not enabled:
        return None
    everything = "enabled" in raw  # ``regress: true``: every metric, zero tolerance
    tolerances: dict[str, Tolerance] = {}
    if everything:
        tolerances = {m: parse_tolerance(m, 0) for m in METRICS}
    for metric, value in raw.items():
        if metric in OTHER_KEYS:
            continue
        try:
            tolerances[metric] = parse_tolerance(str(metric), value)
        except ValueError as exc:
            raise report.error(("regress", metric), str(exc)) from None
    metrics = _default_front_metrics(explore, folding)
    front: FrontTolerance | None = None
    if everything:
        front = FrontTolerance(metrics, 0.0, "hypervolume -0%")
    value = raw.get("front")
    if value is not None:
        key: tuple[Any, ...] = ("regress", "front")
        text = value
        if isinstance(value, dict):
            for name in value:
                if name not in ("hypervolume", "metrics"):
                    raise report.error(
                        (*key, name),
                        "unknown key",
                        did_you_mean(str(name), ("hypervolume", "metrics"))
                        or "allowed keys: hypervolume, metrics",
                    )
            metrics = _metrics(value.get("metrics", list(metrics)), (*key, "metrics"), report)
            text = value.get("hypervolume")
            text = f"hypervolume {text}" if isinstance(text, str | int | float) else text
            key = (*key, "hypervolume")
        try:
            front = parse_front_tolerance(text, metrics)
        except ValueError as exc:
            raise report.error(key, str(exc)) from None
    gone = raw.get("gone", "fail")
    if gone not in GONE:
        raise report.error(
            ("regress", "gone"),
            f"expected allow (designs gone from the blueprint pass) or fail (the default), "
            f"got {gone!r}"[:200],
        )
    return RegressSettings(tolerances, front, gone == "allow", tuple(metrics))


def _default_front_metrics(
    explore: ExploreSettings | None, folding: FoldingSearchSettings | None
) -> tuple[str, ...]:
    if explore is not None and len(explore.pareto) >= 2:
        return tuple(explore.pareto)
    if folding is not None and len(folding.objectives) >= 2:
        return tuple(metric for _direction, metric in folding.objectives)
    return DEFAULT_FRONT_METRICS


def _metrics(value: Any, key: tuple[Any, ...], report: MergedReport) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) < 1:
        raise report.error(key, f"expected a list of estimate metrics, got {typename(value)}")
    for n, metric in enumerate(value):
        if metric not in METRICS:
            raise report.error(
                (*key, n),
                f"expected an estimate metric, got {metric!r}"[:200],
                did_you_mean(str(metric), METRICS) or f"metrics: {', '.join(METRICS)}",
            )
    if len(set(value)) != len(value):
        raise report.error(key, "lists the same metric twice")
    return tuple(value)
