"""What a folding search found, read from design records: each search's Pareto front
(on the blueprint's objectives, among trials that met every expectation and fit the
part: the others are infeasible proposals), the front's foldings written out as FINN
folding JSON, the html plot of the front against the designs that use FINN's own
folding (a ``target_fps`` sweep) of the same blueprint, infeasible trials greyed, and
for the exact search what its cost model predicted of each design beside FINN's
estimates of the built design (they must agree: a mismatch is reported)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..core.metrics import RESOURCES
from .pareto import inline_svg

#: (direction, metric) when a record does not name its search's objectives
DEFAULT_OBJECTIVES = [["minimize", "LUT"], ["maximize", "estimated_throughput_fps"]]


def is_trial(record: dict[str, Any]) -> bool:
    return bool(record.get("folding"))


def search_of(record: dict[str, Any]) -> str:
    """The search a trial belongs to: its node id without the trial part."""
    return record["nodeid"].rsplit("::", 1)[0]


def model_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """What the exact search's cost model predicted of a trial (None: not predicted)."""
    return (record.get("folding") or {}).get("model")


def corrected(record: dict[str, Any], metric: str) -> float | None:
    """A resource as the exact search counts it: FINN's estimate of the built design plus
    what the cost model charges for FINN's known gaps (FINN's figure where there is no
    prediction or the search minimised FINN's own figures)."""
    value = (record.get("estimates") or {}).get(metric)
    model = model_of(record)
    if not isinstance(value, int | float) or model is None or model.get("estimates") == "finn":
        return value
    return value + model["corrected"].get(metric, 0.0) - model["finn"].get(metric, 0.0)


def part_fraction(record: dict[str, Any]) -> float | None:
    """The largest fraction of the part's LUT/BRAM_18K/URAM/DSP the design uses."""
    capacity = (model_of(record) or {}).get("capacity") or {}
    fractions = []
    for metric, limit in capacity.items():
        value = corrected(record, metric)
        if not isinstance(value, int | float):
            return None
        if limit:
            fractions.append(value / limit)
    return max(fractions) if fractions else None


def metric_value(record: dict[str, Any], metric: str) -> Any:
    if metric == "part":
        return part_fraction(record)
    if metric in RESOURCES:
        return corrected(record, metric)
    return (record.get("estimates") or {}).get(metric)


def _values(record: dict[str, Any], objectives: list[list[str]]) -> list[float] | None:
    values = [metric_value(record, metric) for _, metric in objectives]
    if not all(isinstance(v, int | float) for v in values):
        return None
    return [
        float(v) if d == "minimize" else -float(v)
        for (d, _), v in zip(objectives, values, strict=True)
    ]  # type: ignore[arg-type]


def feasible(record: dict[str, Any]) -> bool:
    """The trial met every expectation and fits the part (it passed)."""
    return record.get("outcome", record.get("engine_outcome")) == "passed"


def front(records: list[dict[str, Any]], objectives: list[list[str]]) -> list[dict[str, Any]]:
    """The feasible records that no other such record beats on every objective."""
    scored = [(r, v) for r in records if feasible(r) and (v := _values(r, objectives)) is not None]

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


def mismatches(record: dict[str, Any]) -> list[str]:
    """Where FINN's estimates of a built trial differ from what the cost model predicted
    (empty: they agree, or nothing was predicted or built)."""
    model = model_of(record)
    estimates = record.get("estimates") or {}
    if model is None or not isinstance(estimates.get("LUT"), int | float):
        return []
    found = []
    pairs = [(m, model["finn"].get(m), estimates.get(m)) for m in RESOURCES]
    pairs.append(("max_cycles", model.get("max_cycles"), estimates.get("max_cycles")))
    for metric, predicted, measured in pairs:
        if isinstance(predicted, int | float) and isinstance(measured, int | float):
            if abs(predicted - measured) > 0.5:
                found.append(f"{metric} model {predicted:,.0f}, FINN {measured:,.0f}")
    return found


def summary_lines(records: list[dict[str, Any]], written: dict[str, list[Path]]) -> list[str]:
    lines = []
    for search, trials in searches(records).items():
        objectives = objectives_of(trials)
        best = front(trials, objectives)
        passed = sum(1 for r in trials if feasible(r))
        names = ", ".join(f"{d[:3]} {m}" for d, m in objectives)
        line = (
            f"folding search {search}: {len(trials)} trials, {passed} met every expectation "
            f"and fit the part, {len(best)} on the Pareto front ({names})"
        )
        if written.get(search):
            line += f"; foldings: {written[search][0].parent}/"
        lines.append(line)
        predicted = [r for r in trials if model_of(r) is not None]
        if predicted:
            model = model_of(predicted[0]) or {}
            stats = model.get("solver") or {}
            fastest = model.get("fastest")
            lines.append(
                f"  exact search: {model.get('front', '?')} designs on the solved front "
                f"({stats.get('options', 0):,} settings of {stats.get('units', 0)} units, "
                f"{stats.get('solves', '?')} knapsacks, {stats.get('programs', '?')} integer "
                f"programs; FINN's figures read in {stats.get('table_seconds', 0):.1f} s, "
                f"solved in {stats.get('seconds', 0):.1f} s)"
                + (f"; the fastest that fits: {fastest:,.0f} fps" if fastest else "")
            )
            built = [
                r
                for r in predicted
                if isinstance((r.get("estimates") or {}).get("LUT"), int | float)
            ]
            wrong = [(r, mismatches(r)) for r in built]
            wrong = [(r, m) for r, m in wrong if m]
            lines.append(
                f"  cost model and FINN agree on {len(built) - len(wrong)} of {len(built)} "
                "built designs"
                + (
                    ""
                    if not wrong
                    else "; mismatches: "
                    + "; ".join(
                        f"trial-{r['folding']['trial']}: {', '.join(m)}" for r, m in wrong[:3]
                    )
                )
            )
    return lines


def folding_svg(records: list[dict[str, Any]]) -> str | None:
    """LUT against throughput per search: its feasible trials and their front, its
    infeasible trials (greyed), and the same blueprint's designs with FINN's own folding
    and their front."""
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
            shown = [r for r in points if feasible(r)]
            greyed = [r for r in points if not feasible(r)]
            if greyed:
                axes.scatter(
                    [r["estimates"]["LUT"] for r in greyed],
                    [r["estimates"]["estimated_throughput_fps"] for r in greyed],
                    s=18,
                    color="#bbbbbb",
                    alpha=0.6,
                    label=f"{label}: infeasible",
                )
            if not shown:
                continue
            axes.scatter(
                [r["estimates"]["LUT"] for r in shown],
                [r["estimates"]["estimated_throughput_fps"] for r in shown],
                s=18,
                color=color,
                alpha=0.6,
                label=label,
            )
            best = sorted(front(shown, objectives), key=lambda r: r["estimates"]["LUT"])
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
        axes.set_xlabel("LUT (FINN's estimate)")
        axes.set_ylabel("frames/s (estimate)")
        axes.set_title(f"Folding search: {search}", fontsize="small")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small", loc="best")
    return inline_svg(figure)


def folding_html(records: list[dict[str, Any]]) -> str | None:
    """The plot, then per search a table of its trials: FINN's estimates, the corrected
    LUT and what the cost model predicted; infeasible trials greyed."""
    svg = folding_svg(records)
    if svg is None:
        return None
    parts = [svg]
    for search, trials in searches(records).items():
        objectives = objectives_of(trials)
        best = {id(r) for r in front(trials, objectives)}
        head = ["trial", "fps", "LUT", "LUT corrected", "BRAM_18K", "URAM", "DSP"]
        head += ["model agrees", "verdict"]
        rows = []
        for record in trials:
            estimates = record.get("estimates") or {}
            if not isinstance(estimates.get("LUT"), int | float):
                continue
            wrong = mismatches(record)
            agrees = (
                "-" if model_of(record) is None else ("no: " + "; ".join(wrong) if wrong else "yes")
            )
            verdict = (
                ("Pareto front" if id(record) in best else "feasible")
                if feasible(record)
                else "infeasible: " + str(record.get("error") or record.get("outcome") or "")
            )
            cells = [
                f"trial-{record['folding']['trial']}",
                f"{estimates.get('estimated_throughput_fps', 0):,.0f}",
                f"{estimates['LUT']:,.0f}",
                f"{corrected(record, 'LUT'):,.0f}",
                *(f"{estimates.get(m, 0):,.0f}" for m in RESOURCES[1:]),
                agrees,
                verdict,
            ]
            style = "" if feasible(record) else ' style="color:#999"'
            rows.append(
                f"<tr{style}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
            )
        if rows:
            parts.append(
                f'<p><b>{html.escape(search)}</b></p><table class="bs-table"><tr>'
                + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                + "</tr>"
                + "".join(rows)
                + "</table>"
            )
    return "".join(parts)
