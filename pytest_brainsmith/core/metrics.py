"""The metrics a design reports: named once, here.

Every list of metrics derives from ``METRICS``: what ``expect:`` and ``regress:`` accept,
which way is better (gates, Pareto fronts, baselines), the columns every view shows and
the results store's SQL columns. A new metric is one line here (and the toolchain's
adapter reading it from the compiler's reports).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str  # as the estimates dict and blueprints name it
    better: str  # "max" or "min"
    title: str = ""  # a view's short column title ("" : not a key metric of the views)
    column: str = ""  # the results store's SQL column ("": none)
    label: str = ""  # a plot axis


METRICS: tuple[Metric, ...] = (
    Metric(
        "estimated_throughput_fps",
        "max",
        "fps",
        "throughput_fps",
        "throughput, frames/s (estimate)",
    ),
    Metric("estimated_latency_ns", "min", "latency ns", "latency_ns", "latency, ns (estimate)"),
    Metric("LUT", "min", "LUT", "lut", "LUT (estimate)"),
    Metric("BRAM_18K", "min", "BRAM", "bram_18k", "BRAM_18K (estimate)"),
    Metric("URAM", "min", "URAM", "uram", "URAM (estimate)"),
    Metric("DSP", "min", "DSP", "dsp", "DSP (estimate)"),
    Metric("critical_path_cycles", "min"),
    Metric("max_cycles", "min"),
)
BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
#: every metric's name, in the order views list them
NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
#: metrics where more is better; every other metric is better smaller
MAXIMIZED: frozenset[str] = frozenset(m.name for m in METRICS if m.better == "max")
#: what every view shows of a design, in order: (name, column title, better)
KEY_METRICS: list[tuple[str, str, str]] = [(m.name, m.title, m.better) for m in METRICS if m.title]
#: the results store's SQL column of each key metric
COLUMNS: dict[str, str] = {m.name: m.column for m in METRICS if m.column}
#: plot axis labels
LABELS: dict[str, str] = {m.name: m.label for m in METRICS if m.label}
#: the resources a design costs and a part holds, in FINN's estimate names (the folding
#: solver's cost columns, a part's capacity, the cost model's per-node estimates)
RESOURCES: tuple[str, ...] = ("LUT", "BRAM_18K", "URAM", "DSP")


def maximized(metric: str) -> bool:
    """More of ``metric`` is better."""
    return metric in MAXIMIZED
