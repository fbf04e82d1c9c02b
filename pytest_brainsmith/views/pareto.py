"""The resources/throughput trade-off of the explored designs: which designs are
Pareto-optimal, and a plot of them (inline in the html report, or a file from
``brainsmith-results plot``). matplotlib is needed for the plot only."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from ..core import metrics
from ..core.metrics import maximized

X_METRIC = "LUT"  # fewer is better
Y_METRIC = "estimated_throughput_fps"  # more is better
_LABELS = metrics.LABELS


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed (the message says how to get it)."""


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


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def plotted(
    records: list[dict[str, Any]], x: str = X_METRIC, y: str = Y_METRIC
) -> list[dict[str, Any]]:
    """The records that have both metrics."""
    return [
        r
        for r in records
        if _number((r.get("estimates") or {}).get(x)) and _number((r.get("estimates") or {}).get(y))
    ]


def front_records(
    records: list[dict[str, Any]], x: str = X_METRIC, y: str = Y_METRIC
) -> list[dict[str, Any]]:
    """The Pareto-optimal records on ``x`` and ``y`` (each better as the metric says:
    throughput higher, the others lower), sorted by ``x``: among the designs that passed
    (met every expectation; a folding search's infeasible proposals are skipped), else
    among all plotted."""
    points = [r for r in plotted(records, x, y) if not r.get("equivalent_to")]  # one per equal set
    passed = [r for r in points if r.get("outcome") == "passed"]
    points = passed or points
    xy = [
        (
            -r["estimates"][x] if maximized(x) else r["estimates"][x],
            r["estimates"][y] if maximized(y) else -r["estimates"][y],
        )
        for r in points
    ]
    front = [points[i] for i in pareto_front(xy)]
    return sorted(front, key=lambda r: r["estimates"][x])


def pareto_figure(
    records: list[dict[str, Any]],
    x: str = X_METRIC,
    y: str = Y_METRIC,
    baselines: Sequence[tuple[str, list[dict[str, Any]]]] = (),
) -> Any:
    """A matplotlib figure of ``y`` against ``x``: one colour per blueprint, designs that
    failed hollow, the Pareto front as a line, and each baseline's front (blueprint name,
    its designs) dotted grey. None when no record has both metrics; PlotUnavailable
    without matplotlib."""
    points = plotted(records, x, y)
    if not points:
        return None
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(
            "the Pareto plot needs matplotlib: pip install matplotlib "
            "(or 'pytest-brainsmith[plot]')"
        ) from None
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    figure = Figure(figsize=(7.5, 4.2), dpi=96)
    axes = figure.add_subplot()
    blueprints = sorted({str(r.get("blueprint_name") or r.get("blueprint")) for r in points})
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    for n, name in enumerate(blueprints):
        color = palette[n % len(palette)]
        for passed in (True, False):
            mine = [
                r
                for r in points
                if str(r.get("blueprint_name") or r.get("blueprint")) == name
                and (r.get("outcome") == "passed") == passed
            ]
            if not mine:
                continue
            axes.scatter(
                [r["estimates"][x] for r in mine],
                [r["estimates"][y] for r in mine],
                s=36,
                facecolors=color if passed else "none",
                edgecolors=color if passed else "#aaaaaa",
                label=name if passed else f"{name} (failed or infeasible)",
            )
    front = front_records(points, x, y)
    where = "post"  # a front point's value holds until the next point's x
    axes.step(
        [r["estimates"][x] for r in front],
        [r["estimates"][y] for r in front],
        where=where,
        color="black",
        linewidth=1,
        linestyle="--",
        label="Pareto front",
    )
    values = [r["estimates"][y] for r in points]
    for name, designs in baselines:
        theirs = front_records(designs, x, y)
        if not theirs:
            continue
        axes.step(
            [r["estimates"][x] for r in theirs],
            [r["estimates"][y] for r in theirs],
            where=where,
            color="grey",
            linewidth=1.2,
            linestyle=":",
            marker="x",
            label=f"baseline front ({name})",
        )
        values += [r["estimates"][y] for r in theirs]
    if min(values) > 0 and max(values) / min(values) > 20:
        axes.set_yscale("log")
    axes.set_xlabel(_LABELS.get(x, f"{x} (estimate)"))
    axes.set_ylabel(_LABELS.get(y, f"{y} (estimate)"))
    axes.set_title(
        f"{y} against {x}" if (x, y) != (X_METRIC, Y_METRIC) else "Resources against throughput"
    )
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small", loc="best")
    return figure


def pareto_svg(
    records: list[dict[str, Any]], baselines: Sequence[tuple[str, list[dict[str, Any]]]] = ()
) -> str | None:
    """An inline SVG of LUT against throughput (see ``pareto_figure``); None when there
    is nothing to plot or no matplotlib."""
    try:
        figure = pareto_figure(records, X_METRIC, Y_METRIC, baselines)
    except PlotUnavailable:
        return None
    return inline_svg(figure) if figure is not None else None


def inline_svg(figure: Any) -> str:
    """A matplotlib figure as an ``<svg>`` element to put inline in html."""
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prolog and doctype
