"""pytest-html: one row per design with its choices and estimates (sortable), the
design's details, logs and FINN reports as extras, and each blueprint's
execution tree and the Pareto plot above the table. Everything is read from the
design records (records.py), so it works the same under xdist and with
``--self-contained-html``."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pytest

from ..core.outcomes import STATUS_COLORS
from . import folding, pareto
from .records import (
    KEY_METRICS,
    best_designs,
    equivalences,
    gate_savings,
    group_by_blueprint,
    outcomes_line,
    segment_counts,
    sharing,
    short_id,
    tree_from_records,
    verification_cell,
)

#: (column id, title) inserted after pytest-html's "Test" column.
COLUMNS: list[tuple[str, str]] = [
    ("bs_design", "Design"),
    *((f"bs_{metric.lower()}", title) for metric, title, _ in KEY_METRICS),
    ("bs_finn", "FINN s"),
    ("bs_cache", "Segments"),
    ("bs_verified", "Verified"),
]
_INSERT_AT = 2


def _sortable(column: str, sort_key: str, shown: str) -> str:
    # pytest-html sorts on the cell's inner HTML as a string: a hidden, zero-padded
    # key in front makes numbers sort as numbers.
    return f'<td class="col-{column}"><span hidden>{sort_key}</span>{shown}</td>'


def _number_cell(column: str, value: Any) -> str:
    if not isinstance(value, (int, float)):
        return _sortable(column, "~", "")
    shown = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"
    return _sortable(column, f"{value:020.3f}", shown)


def row_cells(record: dict[str, Any] | None) -> list[str]:
    if record is None:
        return [f'<td class="col-{column}"></td>' for column, _ in COLUMNS]
    choices = record.get("choices") or {}
    design = " ".join(f"{k}={v}" for k, v in choices.items()) or "single design"
    same = record.get("equivalent_to")
    if same:  # the representative's row is named in the summary's table of equals
        tail = same.split("::", 1)[-1]
        design += f" (equals {tail}: {record.get('equivalence')})"
    cells = [f'<td class="col-bs_design">{html.escape(design)}</td>']
    estimates = record.get("estimates") or {}
    for metric, _title, _ in KEY_METRICS:
        cells.append(_number_cell(f"bs_{metric.lower()}", estimates.get(metric)))
    cells.append(_number_cell("bs_finn", record.get("finn_seconds")))
    states = [s["status"] for s in record["segments"] if s["steps"]]
    built = states.count("built")
    summary = ", ".join(
        f"{states.count(state)} {state}"
        for state in (
            "built",
            "fetched",
            "reused",
            "failed",
            "failed-before",
            "blocked",
            "pruned",
            "cancelled",
            "not-run",
        )
        if states.count(state)
    )
    cells.append(_sortable("bs_cache", f"{built:06d}", html.escape(summary)))
    status, step = verification_cell(record)
    shown = (
        status if not step else f"{status} ({'after' if status == 'failed' else 'through'} {step})"
    )
    cells.append(_sortable("bs_verified", status, html.escape(shown)))
    return cells


def header_cells() -> list[str]:
    return [
        f'<th class="sortable" data-column-type="{column}">{html.escape(title)}</th>'
        for column, title in COLUMNS
    ]


def design_extras(record: dict[str, Any]) -> list[dict[str, Any]]:
    """pytest-html extras of one design: a details table, links to its segment logs and
    FINN reports, and its estimates as JSON."""
    from pytest_html import extras

    result = [extras.html(design_details(record))]
    for seg in record["segments"]:
        if seg.get("log") and Path(seg["log"]).is_file():
            result.append(extras.url(Path(seg["log"]).as_uri(), name=f"log {seg['name']}"))
    if record.get("report_dir"):
        result.append(extras.url(Path(record["report_dir"]).as_uri(), name="FINN reports"))
    if record.get("final_model"):
        result.append(extras.url(Path(record["final_model"]).as_uri(), name="final model"))
    return result


def _table(head: list[str], rows: list[list[Any]]) -> str:
    out = ['<table class="bs-table"><tr>']
    out += [f"<th>{html.escape(h)}</th>" for h in head]
    out.append("</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def design_details(record: dict[str, Any]) -> str:
    parts = [f'<div class="bs-details"><b>{html.escape(short_id(record))}</b>']
    if record.get("error"):
        parts.append(
            f"<p>failed at step {html.escape(str(record.get('failed_step')))}: "
            f"{html.escape(record['error'])}</p>"
        )
    seg_rows = [
        [
            seg["name"],
            seg["status"],
            f"{seg['seconds']:.1f}",
            ", ".join(s.rsplit(":", 1)[-1] for s in seg["step_names"]),
            (seg["key"] or "")[:12],
        ]
        for seg in record["segments"]
    ]
    parts.append(_table(["segment", "state", "s", "steps", "cache key"], seg_rows))
    if record.get("expectations"):
        parts.append(
            _table(
                ["expectation", "value", "met"],
                [
                    [e["expect"], e["value"], "yes" if e["met"] else "NO"]
                    for e in record["expectations"]
                ],
            )
        )
    steps = (record.get("verification") or {}).get("steps") or []
    if steps:
        parts.append(
            _table(
                ["verified after", "result", "vectors differing", "max |err|", "why not"],
                [
                    [
                        s["step"],
                        s["status"],
                        "" if s.get("differ") is None else f"{s['differ']} of {s['vectors']}",
                        "" if s.get("max_err") is None else f"{s['max_err']:g}",
                        s.get("reason") or s.get("error") or "",
                    ]
                    for s in steps
                ],
            )
        )
    if record.get("layers"):
        metrics = sorted({m for layer in record["layers"].values() for m in layer})
        parts.append(
            _table(
                ["layer", *metrics],
                [
                    [name, *(layer.get(m, "") for m in metrics)]
                    for name, layer in record["layers"].items()
                ],
            )
        )
    config = {k: v for k, v in (record.get("config") or {}).items()}
    parts.append(_table(["FINN config", "value"], [[k, v] for k, v in sorted(config.items())]))
    parts.append("</div>")
    return "".join(parts)


STYLE = """<style>
.bs-section { margin: 1em 0; }
.bs-table { border-collapse: collapse; margin: .4em 0; font-size: 12px; }
.bs-table td, .bs-table th { border: 1px solid #ccc; padding: 2px 6px; text-align: left; }
.bs-tree, .bs-tree ul { list-style: none; margin: 0; padding-left: 1.4em; }
.bs-tree li { margin: 2px 0; }
.bs-seg { display: inline-block; color: #000; border: 1px solid #999; border-radius: 4px; padding: 0 5px; }
.bs-steps { color: #666; font-size: 11px; }
.bs-legend span { margin-right: .6em; }
</style>"""


def _tree_html(node: dict[str, Any]) -> str:
    color = STATUS_COLORS.get(node.get("status", ""), "white")
    steps = ", ".join(s.rsplit(":", 1)[-1] for s in node["steps"]) or "no steps"
    label = (
        f'<span class="bs-seg" style="background:{color}" title="{html.escape(node.get("status", ""))}">'
        f"{html.escape(node['name'])}</span> "
        f'<span class="bs-steps">{html.escape(node.get("status", ""))} · {html.escape(steps)}'
        f" · {node.get('seconds', 0):.1f} s · {node['designs']} design(s)"
    )
    if node.get("outcome"):
        label += f" · <b>{html.escape(node['outcome'])}</b>"
    label += "</span>"
    children = node.get("children", [])
    if not children:
        return f"<li>{label}</li>"
    inner = "".join(_tree_html(child) for child in children)
    return f"<li><details open><summary>{label}</summary><ul>{inner}</ul></details></li>"


def tree_section(blueprint: str, records: list[dict[str, Any]]) -> str:
    tree = tree_from_records(blueprint, records)
    stats = tree["stats"]
    return (
        f'<div class="bs-section"><h3>Execution tree: {html.escape(tree["name"])} '
        f"({html.escape(blueprint)})</h3>"
        f"<p>{stats['designs']} designs, {stats['segments']} segments, "
        f"{stats['steps_executed']} FINN steps instead of {stats['steps_naive']} "
        f"({stats['saving_percent']}% saved by sharing)</p>"
        f'<ul class="bs-tree">{_tree_html(tree["root"])}</ul></div>'
    )


def summary_html(records: list[dict[str, Any]]) -> list[str]:
    """The report's brainsmith section: counts, best designs, Pareto plot, trees."""
    if not records:
        return []
    counts = segment_counts(records)
    executed, naive = sharing(records)
    legend = "".join(
        f'<span><span class="bs-seg" style="background:{c}">{html.escape(s)}</span></span>'
        for s, c in STATUS_COLORS.items()
    )
    parts = [
        STYLE,
        '<div class="bs-section"><h2>Design-space exploration (pytest-brainsmith)</h2>',
        f"<p>{html.escape(outcomes_line(records))}. "
        "Segments: "
        + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        + f". FINN steps: {executed} run for {len(records)} designs instead of {naive}.</p>",
    ]
    savings = gate_savings(records)
    if savings:
        parts.append(
            _table(
                ["gate", "designs stopped", "segments not built", "recorded seconds not spent"],
                [
                    [gate, int(v["designs"]), int(v["segments"]), f"{v['seconds']:.1f}"]
                    for gate, v in sorted(savings.items())
                ],
            )
        )
    best = best_designs(records)
    if best:
        title = {m: t for m, t, _ in KEY_METRICS}
        parts.append(
            _table(
                ["best", "value", "design"],
                [[title[m], f"{v:,.4g}", short_id(r)] for m, r, v in best],
            )
        )
    groups = equivalences(records)
    if groups:
        by_id = {r["nodeid"]: r for r in records}
        parts.append(
            _table(
                ["representative design", "designs equal to it", "why"],
                [
                    [
                        short_id(by_id[rep]) if rep in by_id else rep,
                        "; ".join(short_id(r) for r in equal),
                        equal[0].get("equivalence") or "",
                    ]
                    for rep, equal in groups.items()
                ],
            )
        )
    svg = pareto.pareto_svg(records)
    if svg:
        front = pareto.front_records(records)
        parts.append(f'<div class="bs-section bs-pareto">{svg}</div>')
        parts.append(
            _table(
                ["Pareto-optimal design", "LUT", "fps", "outcome"],
                [
                    [
                        short_id(r),
                        f"{r['estimates'][pareto.X_METRIC]:,.0f}",
                        f"{r['estimates'][pareto.Y_METRIC]:,.0f}",
                        r.get("outcome"),
                    ]
                    for r in front
                ],
            )
        )
    searched = folding.folding_html(records)
    if searched:
        parts.append(f'<div class="bs-section bs-folding">{searched}</div>')
    parts.append(f'<p class="bs-legend">{legend}</p>')
    for blueprint, mine in group_by_blueprint(records).items():
        parts.append(tree_section(blueprint, mine))
    parts.append("</div>")
    return ["".join(parts)]


class HtmlReportPlugin:
    """Registered by the controller when pytest-html writes a report."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """pytest-html makes a design's row from its "call" report once its teardown
        arrives; a worker that dies mid-design sends neither, only xdist's ``when='???'``
        failure. Hand pytest-html that failure as the design's call and a teardown, so the
        design has its row (with its record, set by the RunRecorder)."""
        if report.when != "???" or getattr(report, "brainsmith", None) is None:
            return
        try:
            self._add_row(report)
        except Exception as exc:  # a view must never end the session
            self.recorder.record_errors.append(f"{report.nodeid}: html row: {exc!r}")

    def _add_row(self, report: pytest.TestReport) -> None:
        html = next(
            (p for p in self.recorder.config.pluginmanager.get_plugins() if _is_html(p)), None
        )
        if html is None:
            return
        fields = {"nodeid": report.nodeid, "location": report.location, "keywords": {}}
        call = pytest.TestReport(**fields, outcome="failed", longrepr=report.longrepr, when="call")
        call.brainsmith = report.brainsmith  # type: ignore[attr-defined]
        call.extras = design_extras(report.brainsmith)  # type: ignore[attr-defined]
        teardown = pytest.TestReport(**fields, outcome="passed", longrepr=None, when="teardown")
        html.pytest_runtest_logreport(call)
        html.pytest_runtest_logreport(teardown)

    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells[_INSERT_AT:_INSERT_AT] = header_cells()

    def pytest_html_results_table_row(self, report: Any, cells: list[str]) -> None:
        cells[_INSERT_AT:_INSERT_AT] = row_cells(getattr(report, "brainsmith", None))

    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session: Any
    ) -> None:
        prefix.extend(summary_html(self.recorder.ordered_records()))


def _is_html(plugin: object) -> bool:
    try:
        from pytest_html.basereport import BaseReport
    except ImportError:
        return False
    return isinstance(plugin, BaseReport)
