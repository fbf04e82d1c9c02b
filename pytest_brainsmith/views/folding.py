"""What a folding search found, read from design records: each search's Pareto front
(on the blueprint's objectives, among trials that met every expectation), the front's
foldings written out as FINN folding JSON, and the html plot of the front against the
designs that use FINN's own folding (a ``target_fps`` sweep) of the same blueprint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .pareto import inline_svg

#: (direction, metric) when a record does not name its search's objectives
DEFAULT_OBJECTIVES = [["minimize", "LUT"], ["maximize", "estimated_throughput_fps"]]


def is_trial(record: dict[str, Any]) -> bool:
    return bool(record.get("folding"))


def search_of(record: dict[str, Any]) -> str:
    """The search a trial belongs to: its node id without the trial part."""
    return record["nodeid"].rsplit("::", 1)[0]


def _values(record: dict[str, Any], objectives: list[list[str]]) -> list[float] | None:
    estimates = record.get("estimates") or {}
    values = [estimates.get(metric) for _, metric in objectives]
    if not all(isinstance(v, int | float) for v in values):
        return None
    return [
        float(v) if d == "minimize" else -float(v)
        for (d, _), v in zip(objectives, values, strict=True)
    ]  # type: ignore[arg-type]


def front(records: list[dict[str, Any]], objectives: list[list[str]]) -> list[dict[str, Any]]:
    """The records that passed and that no other such record beats on every objective."""
    scored = [
        (r, v)
        for r in records
        if r.get("outcome", r.get("engine_outcome")) == "passed"
        and (v := _values(r, objectives)) is not None
    ]

    def beats(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    return [r for r, v in scored if not any(beats(w, v) for _, w in scored)]


def searches(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Trial records by search (node id of the prefix), in trial order."""
    found: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if is_trial(record):
            found.setdefault(search_of(record), []).append(record)
    for trials in found.values():
        trials.sort(key=lambda r: r["folding"]["trial"])
    return found


def objectives_of(trials: list[dict[str, Any]]) -> list[list[str]]:
    return trials[0]["folding"].get("objectives") or DEFAULT_OBJECTIVES


def summary_lines(records: list[dict[str, Any]], written: dict[str, list[Path]]) -> list[str]:
    lines = []
    for search, trials in searches(records).items():
        objectives = objectives_of(trials)
        best = front(trials, objectives)
        passed = sum(1 for r in trials if r.get("outcome", r.get("engine_outcome")) == "passed")
        names = ", ".join(f"{d[:3]} {m}" for d, m in objectives)
        line = (
            f"folding search {search}: {len(trials)} trials, {passed} met every expectation, "
            f"{len(best)} on the Pareto front ({names})"
        )
        if written.get(search):
            line += f"; foldings: {written[search][0].parent}/"
        lines.append(line)
    return lines


def folding_svg(records: list[dict[str, Any]]) -> str | None:
    """LUT against throughput per search: its trials, their front, and the same
    blueprint's designs with FINN's own folding and their front."""
    found = searches(records)
    if not found:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    objectives = DEFAULT_OBJECTIVES
    figure = Figure(figsize=(7.5, 4.2 * len(found)), dpi=96)
    for n, (search, trials) in enumerate(found.items(), start=1):
        axes = figure.add_subplot(len(found), 1, n)
        blueprint = trials[0]["blueprint"]
        finn = [r for r in records if r["blueprint"] == blueprint and not is_trial(r)]
        for label, group, color in (
            ("folding search", trials, "#1f77b4"),
            ("FINN's folding (target_fps)", finn, "#ff7f0e"),
        ):
            points = [r for r in group if _values(r, objectives) is not None]
            if not points:
                continue
            axes.scatter(
                [r["estimates"]["LUT"] for r in points],
                [r["estimates"]["estimated_throughput_fps"] for r in points],
                s=18,
                color=color,
                alpha=0.45,
                label=label,
            )
            best = sorted(front(points, objectives), key=lambda r: r["estimates"]["LUT"])
            axes.step(
                [r["estimates"]["LUT"] for r in best],
                [r["estimates"]["estimated_throughput_fps"] for r in best],
                where="post",
                color=color,
                linewidth=1.5,
                label=f"{label}: front",
            )
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("LUT (estimate)")
        axes.set_ylabel("frames/s (estimate)")
        axes.set_title(f"Folding search: {search}", fontsize="small")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small", loc="best")
    return inline_svg(figure)
