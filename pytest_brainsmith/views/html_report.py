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

from ..core.segment_states import STATUS_COLORS
from . import baseline, folding, pareto
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
    ("bs_baseline", "vs baseline"),
]
#: Tables longer than this are collapsed in a design's details (per-layer estimates of a
#: network of 80 layers, the FINN config): a report of many designs stays readable.
COLLAPSE_ROWS = 12
#: Execution trees with more segments than this show their first levels open only.
OPEN_TREE_SEGMENTS = 40
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


def _baseline_cell(record: dict[str, Any] | None) -> str:
    key, text, color = baseline.cell(record)
    style = f' style="background:{color}"' if text else ""
    return f'<td class="col-bs_baseline"{style}><span hidden>{key}</span>{html.escape(text)}</td>'


def check_cells(check: dict[str, Any]) -> list[str]:
    """The row of a blueprint's item against its baseline (``front``, ``gone[...]``)."""
    cells = [f'<td class="col-bs_design">{html.escape(baseline.check_text(check))}</td>']
    cells += [f'<td class="col-{column}"></td>' for column, _ in COLUMNS[1:-1]]
    front = check.get("front") or {}
    if check.get("kind") == "gone":
        allowed = bool(check.get("allowed"))
        color, text = ("khaki", "gone (allowed)") if allowed else ("salmon", "gone")
    else:
        verdict = front.get("verdict", "")
        color = baseline.COLORS.get(verdict, "white")
        text = f"front {verdict} ({_percent(front)})" if front else check.get("outcome", "")
    cells.append(
        f'<td class="col-bs_baseline" style="background:{color}"><span hidden>0</span>'
        f"{html.escape(text)}</td>"
    )
    return cells


def _percent(front: dict[str, Any]) -> str:
    value = front.get("percent")
    return "new front" if value is None else f"{value:+.2f}%"


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
    cells.append(_baseline_cell(record))
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


def _collapsible(title: str, table: str, rows: int) -> str:
    """A long table behind a summary line (closed), a short one as it is."""
    if rows <= COLLAPSE_ROWS:
        return table
    return f"<details><summary>{html.escape(title)} ({rows} rows)</summary>{table}</details>"


def _failure_line(record: dict[str, Any]) -> str:
    """Why the design did not pass, in one line: where a build failed, or what stopped it."""
    error = html.escape(record["error"])
    step = record.get("failed_step")
    if step:
        return f"<p>failed at step {html.escape(str(step))}: {error}</p>"
    outcome = record.get("outcome")
    what = {"skipped": "skipped", "passed": "note"}.get(outcome or "", "failed")
    return f"<p>{what}: {error}</p>"


def baseline_details(record: dict[str, Any]) -> str | None:
    """A design against its baseline: the verdict and each changed metric (an extra of
    its own: the comparison is made after the design's record)."""
    compared = record.get("baseline")
    if not compared:
        return None
    _key, _text, color = baseline.cell(record)
    parts = [
        f'<div class="bs-details"><p style="background:{color}">against the baseline '
        f"{html.escape(compared.get('source') or '')}: {html.escape(compared.get('summary', ''))}</p>"
    ]
    deltas = compared.get("deltas") or []
    if deltas:
        parts.append(
            _table(
                ["metric", "baseline", "now", "change", "tolerance", "verdict"],
                [
                    [
                        d["metric"],
                        f"{d['baseline']:,.6g}",
                        f"{d['value']:,.6g}",
                        d["change"],
                        d.get("tolerance") or "not gated",
                        d["verdict"],
                    ]
                    for d in deltas
                ],
            )
        )
    parts.append("</div>")
    return "".join(parts)


def design_details(record: dict[str, Any]) -> str:
    parts = [f'<div class="bs-details"><b>{html.escape(short_id(record))}</b>']
    if record.get("error"):
        parts.append(_failure_line(record))
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
                        s["status"]
                        + (
                            f" (through the model after {s['through']})" if s.get("through") else ""
                        ),
                        "" if s.get("differ") is None else f"{s['differ']} of {s['vectors']}",
                        "" if s.get("max_err") is None else f"{s['max_err']:g}",
                        s.get("reason") or s.get("error") or _width_text(s),
                    ]
                    for s in steps
                ],
            )
        )
    layers = record.get("layers") or {}
    if layers:
        metrics = sorted({m for layer in layers.values() for m in layer})
        table = _table(
            ["layer", *metrics],
            [[name, *(layer.get(m, "") for m in metrics)] for name, layer in layers.items()],
        )
        parts.append(
            f"<details><summary>per-layer estimates ({len(layers)} layers)</summary>"
            f"{table}</details>"
        )
    config = sorted((record.get("config") or {}).items())
    parts.append(
        _collapsible(
            "FINN config",
            _table(["FINN config", "value"], [[k, v] for k, v in config]),
            len(config),
        )
    )
    parts.append("</div>")
    return "".join(parts)


def _width_text(step: dict[str, Any]) -> str:
    """A step's width-check failure, if any: its first value too wide for its type."""
    violations = (step.get("width") or {}).get("violations") or []
    return f"width check: {violations[0]['message']}" if violations else ""


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


def _tree_html(node: dict[str, Any], depth: int = 0, open_depth: float = float("inf")) -> str:
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
    inner = "".join(_tree_html(child, depth + 1, open_depth) for child in children)
    shown = " open" if depth < open_depth else ""
    return f"<li><details{shown}><summary>{label}</summary><ul>{inner}</ul></details></li>"


def tree_section(blueprint: str, records: list[dict[str, Any]]) -> str:
    tree = tree_from_records(blueprint, records)
    stats = tree["stats"]
    # a big tree (MobileNet's trials) opens its first levels only
    open_depth = float("inf") if stats["segments"] <= OPEN_TREE_SEGMENTS else 2
    return (
        f'<div class="bs-section"><h3>Execution tree: {html.escape(tree["name"])} '
        f"({html.escape(blueprint)})</h3>"
        f"<p>{stats['designs']} designs, {stats['segments']} segments, "
        f"{stats['steps_executed']} FINN steps instead of {stats['steps_naive']} "
        f"({stats['saving_percent']}% saved by sharing)</p>"
        f'<ul class="bs-tree">{_tree_html(tree["root"], 0, open_depth)}</ul></div>'
    )


def summary_html(
    records: list[dict[str, Any]], checks: list[dict[str, Any]] | None = None
) -> list[str]:
    """The report's brainsmith section: counts, against the baseline, best designs,
    Pareto plot (with the baselines' fronts), trees."""
    checks = checks or []
    if not records and not checks:
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
    compared = baseline.summary_lines(records, checks)
    if compared:
        parts.append("<p>" + "<br>".join(html.escape(line) for line in compared) + "</p>")
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
    fronts = baseline.baseline_fronts(checks, pareto.X_METRIC, pareto.Y_METRIC)
    svg = pareto.pareto_svg(records, fronts)
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
        check = getattr(report, "brainsmith_baseline", None)
        if check is not None:
            cells[_INSERT_AT:_INSERT_AT] = check_cells(check)
            return
        cells[_INSERT_AT:_INSERT_AT] = row_cells(getattr(report, "brainsmith", None))

    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session: Any
    ) -> None:
        prefix.extend(
            summary_html(self.recorder.ordered_records(), list(self.recorder.checks.values()))
        )


def _is_html(plugin: object) -> bool:
    try:
        from pytest_html.basereport import BaseReport
    except ImportError:
        return False
    return isinstance(plugin, BaseReport)
