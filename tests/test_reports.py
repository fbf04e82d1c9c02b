"""Reports of a real-FINN run: pytest-html rows, tree and Pareto plot, junit
properties, the SQLite results store and its command, tree export, the terminal
summary. The runs use -n 2: every view is built from the records on the reports."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import MODEL, TFC_BLUEPRINT, need

from pytest_brainsmith.views.pareto import pareto_front
from pytest_brainsmith.views.records import segment_counts, tree_from_records

#: Two of the four designs (target_fps 100000) miss the throughput floor.
EXPECTING = TFC_BLUEPRINT + 'expect:\n  estimated_throughput_fps: ">= 200000"\n'


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One segment cache for this module: only the first run builds."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def project(pytester: pytest.Pytester, shared_cache: Path) -> pytest.Pytester:
    shutil.copyfile(MODEL, pytester.path / "tfc.onnx")
    pytester.makefile(".blueprint.yaml", tfc=EXPECTING)
    pytester.makeini(f"[pytest]\nbrainsmith_cache = {shared_cache}\n")
    return pytester


def run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return project.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", *args)


def report_data(path: Path) -> dict:
    """The test data pytest-html embeds in its report (a JSON blob)."""
    blob = re.search(r'data-jsonblob="([^"]*)"', path.read_text()).group(1)
    return json.loads(html.unescape(blob))


def test_html_report_has_a_row_per_design_the_tree_and_the_pareto_plot(project):
    result = run(project, "--html=out/report.html", "--self-contained-html", "--brainsmith-tree")
    result.assert_outcomes(passed=2, failed=2)
    page = (project.path / "out" / "report.html").read_text()
    for title in ("Design", "fps", "latency ns", "LUT", "BRAM", "DSP", "FINN s", "Segments"):
        assert re.search(rf'<th class="sortable" data-column-type="bs_\w+">{title}</th>', page)
    tests = report_data(project.path / "out" / "report.html")["tests"]
    rows = {nodeid: entries[0] for nodeid, entries in tests.items()}
    assert len(rows) == 4
    rtl = next(r for n, r in rows.items() if n.endswith("MVAU[rtl]::target_fps[400000]"))
    cells = "".join(rtl["resultsTableRow"])
    assert "MVAU=rtl target_fps=400000" in cells
    assert rtl["result"] == "Passed"
    lut = re.search(r'col-bs_lut"><span hidden>([\d.]+)</span>', cells).group(1)
    assert 1000 < float(lut) < 100000  # a real estimate, sortable as a padded number
    # every row links its segment logs and FINN reports, and holds a details table
    names = [extra["name"] for extra in rtl["extras"]]
    assert "FINN reports" in names and any(n and n.startswith("log ") for n in names)
    details = next(e for e in rtl["extras"] if e["format_type"] == "html")
    assert "specialize_layers" in details["content"]  # the segments table
    assert "estimated_throughput_fps &gt;= 200000" in details["content"]  # the expectations
    failed = next(r for n, r in rows.items() if n.endswith("MVAU[hls]::target_fps[100000]"))
    assert failed["result"] == "Failed"
    assert "estimated_throughput_fps &gt;= 200000" in failed["log"]
    # the summary: counts, the Pareto plot (inline SVG) and the execution tree
    assert "designs: 2 passed, 2 failed" in page
    assert "<svg" in page and "Pareto front" in page
    assert "Execution tree: tfc" in page
    assert page.count('class="bs-seg"') >= 7  # one box per segment (+ the legend)
    # the tree export sits next to the report
    tree = json.loads((project.path / "out" / "tfc.blueprint.tree.json").read_text())
    assert tree["stats"]["designs"] == 4 and tree["stats"]["segments"] == 7
    assert [c["name"] for c in tree["root"]["children"]] == ["MVAU[hls]", "MVAU[rtl]"]
    dot = (project.path / "out" / "tfc.blueprint.tree.dot").read_text()
    assert dot.startswith('digraph "tfc" {') and dot.count("->") == 6


def test_junit_properties_and_terminal_summary(project):
    result = run(project, "--junitxml=junit.xml")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*designs: 2 passed, 2 failed, 0 skipped, 0 errors",
            "*FINN steps: * for 4 designs instead of *% saved by sharing)",
            "*best fps: *  tfc: MVAU=*, target_fps=400000",
            "*best LUT: *",
        ]
    )
    cases = ET.parse(project.path / "junit.xml").getroot().iter("testcase")
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert props["brainsmith.choice.MVAU"] in ("hls", "rtl")
        assert props["brainsmith.choice.target_fps"] in ("100000", "400000")
        assert float(props["brainsmith.LUT"]) > 0
        assert float(props["brainsmith.estimated_throughput_fps"]) > 0


def test_results_store_holds_every_run_and_compares_them(project):
    run(project).assert_outcomes(passed=2, failed=2)
    db_path = project.path / "build" / "brainsmith" / "results.sqlite"
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT design, outcome, lut, throughput_fps, choices FROM designs")
        rows = rows.fetchall()
        (exitstatus,) = db.execute("SELECT exitstatus FROM runs").fetchone()
    assert len(rows) == 4 and exitstatus == 1
    assert sorted(r[1] for r in rows) == ["failed", "failed", "passed", "passed"]
    assert all(r[2] > 0 and r[3] > 0 for r in rows)
    assert {json.loads(r[4])["MVAU"] for r in rows} == {"hls", "rtl"}

    # a second run with a lower floor: the two failures pass
    project.makefile(".blueprint.yaml", tfc=EXPECTING.replace(">= 200000", ">= 50000"))
    run(project).assert_outcomes(passed=4)

    def results(*args: str) -> str:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest_brainsmith.views.results_store",
                "--db",
                str(db_path),
                *args,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    assert len(results("runs").splitlines()) == 2
    compared = results("compare")
    assert compared.count("outcome: failed -> passed") == 2
    assert "2 change(s)" in compared
    best = results("best", "--metric", "estimated_throughput_fps", "-n", "1").splitlines()
    assert "target_fps[400000]" in best[1]
    table = results("export", "--format", "csv").splitlines()
    assert table[0].startswith("design,blueprint,outcome,throughput_fps")
    assert table[0].endswith("choice.MVAU,choice.target_fps")
    assert len(table) == 5
    exported = json.loads(results("export", "--format", "json"))
    assert {d["outcome"] for d in exported} == {"passed"}
    assert all(d["config"]["target_fps"] in (100000, 400000) for d in exported)


def test_an_unwritable_results_store_costs_nothing_but_a_warning(project):
    result = run(project, "--brainsmith-results=/proc/brainsmith/results.sqlite")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*results store /proc/brainsmith/results.sqlite NOT written: *"])


def test_report_renders_in_headless_chromium_without_console_errors(project, tmp_path: Path):
    need(shutil.which("chromium"), "chromium is not installed here")
    run(project, "--html=report.html", "--self-contained-html").assert_outcomes(passed=2, failed=2)

    def render(page: Path, shot: Path) -> str:
        done = subprocess.run(
            [
                "chromium",
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1400,2400",
                f"--screenshot={shot}",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={**os.environ, "HOME": str(tmp_path)},
        )
        return "\n".join(line for line in done.stderr.splitlines() if "CONSOLE" in line)

    # the check itself can see an error: a page that throws one
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>undefinedFunction()</script></body></html>")
    assert "undefinedFunction" in render(broken, tmp_path / "broken.png")

    shot = tmp_path / "report.png"
    assert render(project.path / "report.html", shot) == ""
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one


def test_pareto_front_keeps_only_undominated_designs():
    # (LUT, fps): fewer LUTs and more frames per second are better
    points = [(3000, 100), (2000, 50), (2500, 120), (4000, 120), (1000, 10), (2000, 40)]
    assert pareto_front(points) == [4, 1, 2]


def test_tree_of_records_merges_what_each_worker_saw():
    def record(leaf: str, root_status: str, leaf_status: str) -> dict:
        seg = {"choice": None, "key": "k", "seconds": 1.0, "steps": 2, "step_names": ["a", "b"]}
        return {
            "nodeid": f"t.yaml::a..b::{leaf}",
            "blueprint": "t.yaml",
            "outcome": "passed",
            "segments": [
                {**seg, "path": "t::a..b", "name": "a..b", "status": root_status},
                {**seg, "path": f"t::a..b::{leaf}", "name": leaf, "status": leaf_status},
            ],
        }

    # worker 1 built the root, worker 2 found it in the cache
    records = [record("x[1]", "built", "built"), record("x[2]", "reused", "failed")]
    tree = tree_from_records("t.yaml", records)
    assert tree["root"]["status"] == "built" and tree["root"]["designs"] == 2
    assert [c["status"] for c in tree["root"]["children"]] == ["built", "failed"]
    assert tree["stats"] == {
        "designs": 2,
        "segments": 3,
        "steps_executed": 6,
        "steps_naive": 8,
        "saving_percent": 25.0,
    }
    assert segment_counts(records) == {"built": 2, "failed": 1}
