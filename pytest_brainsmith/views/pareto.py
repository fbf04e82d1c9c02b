"""The resources/throughput trade-off of the explored designs: which designs are
Pareto-optimal, and a plot of them for the html report."""

from __future__ import annotations

import io
from typing import Any

X_METRIC = "LUT"  # fewer is better
Y_METRIC = "estimated_throughput_fps"  # more is better


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (min x, max y),
    sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best_y = float("-inf")
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def plotted(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that have both metrics."""
    return [
        r
        for r in records
        if isinstance((r.get("estimates") or {}).get(X_METRIC), (int, float))
        and isinstance((r.get("estimates") or {}).get(Y_METRIC), (int, float))
    ]


def front_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Pareto-optimal designs among those that passed (met every expectation; a
    folding search's infeasible proposals are skipped), else among all plotted."""
    points = [r for r in plotted(records) if not r.get("equivalent_to")]  # one per equal set
    passed = [r for r in points if r.get("outcome") == "passed"]
    points = passed or points
    xy = [(r["estimates"][X_METRIC], r["estimates"][Y_METRIC]) for r in points]
    return [points[i] for i in pareto_front(xy)]


def pareto_svg(records: list[dict[str, Any]]) -> str | None:
    """An inline SVG of LUT against throughput, one colour per blueprint, the
    Pareto front as a line and designs that missed an expectation hollow."""
    points = plotted(records)
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    figure = Figure(figsize=(7.5, 4.2), dpi=96)
    axes = figure.add_subplot()
    blueprints = sorted({r["blueprint_name"] for r in points})
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    for n, name in enumerate(blueprints):
        color = palette[n % len(palette)]
        for passed in (True, False):
            mine = [
                r
                for r in points
                if r["blueprint_name"] == name and (r.get("outcome") == "passed") == passed
            ]
            if not mine:
                continue
            axes.scatter(
                [r["estimates"][X_METRIC] for r in mine],
                [r["estimates"][Y_METRIC] for r in mine],
                s=36,
                facecolors=color if passed else "none",
                edgecolors=color if passed else "#aaaaaa",
                label=name if passed else f"{name} (failed or infeasible)",
            )
    front = front_records(points)
    axes.step(
        [r["estimates"][X_METRIC] for r in front],
        [r["estimates"][Y_METRIC] for r in front],
        where="post",
        color="black",
        linewidth=1,
        linestyle="--",
        label="Pareto front",
    )
    values = [r["estimates"][Y_METRIC] for r in points]
    if min(values) > 0 and max(values) / min(values) > 20:
        axes.set_yscale("log")
    axes.set_xlabel("LUT (estimate)")
    axes.set_ylabel("throughput, frames/s (estimate)")
    axes.set_title("Resources against throughput")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small", loc="best")
    return inline_svg(figure)


def inline_svg(figure: Any) -> str:
    """A matplotlib figure as an ``<svg>`` element to put inline in html."""
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prolog and doctype
