"""The results store and its command (views/results_store.py): explore() runs recorded,
runs named by their blueprints, compare by blueprint and choices, URAM as a metric, the
Pareto plot; and what the html report makes of many designs (views/html_report.py).

The store is fed design records as a run's controller feeds it (records.py's shape);
test_reports.py runs it behind real FINN runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MODEL

from pytest_brainsmith.views.html_report import design_details, summary_html
from pytest_brainsmith.views.records import KEY_METRICS
from pytest_brainsmith.views.results_store import METRIC_COLUMNS, ResultsStore


def design(
    blueprint: str,
    choices: dict,
    nodeid: str | None = None,
    outcome: str = "passed",
    **estimates: float,
) -> dict:
    path = f"{blueprint}.blueprint.yaml"
    label = "::".join(f"{k}[{v}]" for k, v in choices.items())
    return {
        "nodeid": nodeid or f"{path}::front::{label}",
        "blueprint": path,
        "blueprint_name": blueprint,
        "choices": choices,
        "config": {},
        "outcome": outcome,
        "estimates": estimates,
        "segments": [{"status": "built", "steps": 2}],
    }


def fill(store: ResultsStore, run: str, records: list[dict], args: list[str] | None = None) -> None:
    store.start_run(run, args or ["blueprints/"], "1.6.1")
    for record in records:
        store.add_design(run, record, 1.0)
    store.finish_run(run, 0)


def results(db: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_brainsmith.views.results_store", "--db", str(db), *args],
        capture_output=True,
        text=True,
        check=check,
    )


def tfc(fps: int, lut: float, **more: float) -> dict:
    return design("tfc", {"target_fps": fps}, LUT=lut, estimated_throughput_fps=fps, **more)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Three runs: the TFC sweep, then 44 designs of another blueprint, then the TFC sweep
    again (one design bigger, its segments named differently, one design gone)."""
    db = tmp_path / "results.sqlite"
    store = ResultsStore(db)
    fill(store, "run1tfc", [tfc(1000, 2616, URAM=0), tfc(2000, 3211, URAM=2)])
    other = [design("cnv", {"n": n}, LUT=100 + n, URAM=1) for n in range(44)]
    fill(store, "run2cnv", other)
    again = [
        tfc(1000, 2700, URAM=0),
        design(
            "tfc",
            {"target_fps": 1500},
            "tfc.blueprint.yaml::front::target_fps[1500]",
            LUT=3000,
            estimated_throughput_fps=1500,
        ),
    ]
    again[0]["nodeid"] = "tfc.blueprint.yaml::front..estimates::target_fps[1000]"  # re-cut
    fill(store, "run3tfc", again, ["explore()", "tfc.blueprint.yaml"])
    store.close()
    return db


def test_runs_name_their_blueprints_and_who_ran_them(store: Path):
    lines = results(store, "runs").stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["run1tfc", "run2cnv", "run3tfc"]
    assert lines[0].endswith("pytest: tfc") and lines[1].endswith("pytest: cnv")
    assert lines[2].endswith("explore(): tfc")


def test_compare_matches_designs_by_blueprint_and_choices(store: Path):
    compared = results(store, "compare").stdout
    # the latest run against the latest earlier run of the same blueprint (not cnv's)
    assert compared.startswith("comparing run run1tfc -> run3tfc (tfc)")
    # target_fps 1000 is the same design though its node id changed with the tree's cut
    assert "LUT: worse: 2,616 -> 2,700 (+3.2%)" in compared
    assert "tfc.blueprint.yaml::front..estimates::target_fps[1000]" in compared
    assert re.search(r"target_fps\[2000\]\n\s+gone: passed", compared)
    assert re.search(r"target_fps\[1500\]\n\s+new: passed", compared)
    assert "3 change(s)" in compared  # LUT, new, gone: no design of cnv's in it
    # two runs of different blueprints share nothing to compare: said, not 46 changes
    across = results(store, "compare", "run2cnv", "run3tfc", check=False)
    assert across.returncode == 2
    assert "explored no blueprint in common: nothing to compare" in across.stderr
    # one blueprint named: the runs that explored it
    assert results(store, "compare", "--blueprint", "cnv", check=False).returncode == 2


def test_uram_is_a_metric_wherever_metrics_are_listed(store: Path):
    assert "URAM" in METRIC_COLUMNS and "URAM" in [m for m, _, _ in KEY_METRICS]
    best = results(store, "best", "--run", "run1tfc", "--metric", "URAM", "-n", "1").stdout
    assert best.splitlines()[0] == "URAM (lower is better)" and "target_fps[1000]" in best
    table = results(store, "export", "--run", "run1tfc").stdout.splitlines()
    header = table[0].split(",")
    assert "uram" in header and table[2].split(",")[header.index("uram")] == "2.0"


def test_plot_writes_the_pareto_plot_as_png_or_svg(store: Path, tmp_path: Path):
    done = results(store, "plot", "-o", str(tmp_path / "p.png"))
    assert "wrote" in done.stdout and "2 designs of run run3tfc" in done.stdout
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results(
        store, "plot", "--run", "run2cnv", "-x", "URAM", "-y", "LUT", "-o", str(tmp_path / "c.svg")
    )
    svg = (tmp_path / "c.svg").read_text()
    assert "<svg" in svg and "LUT against URAM" in svg
    wrong = results(store, "plot", "-o", str(tmp_path / "p.gif"), check=False)
    assert wrong.returncode == 2 and "expected a .png, .svg or .pdf" in wrong.stderr


def test_plot_without_matplotlib_says_what_to_install(store: Path, tmp_path: Path):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"  # as if it were not installed
        "from pytest_brainsmith.views.results_store import main\n"
        f"sys.exit(main(['--db', {str(store)!r}, 'plot', '-o', {str(tmp_path / 'p.png')!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert "the Pareto plot needs matplotlib: pip install matplotlib" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "p.png").exists()


STEPS = """
import json, os

def estimate(model, cfg):
    report = os.path.join(cfg.output_dir, "report")
    os.makedirs(report, exist_ok=True)
    with open(os.path.join(report, "estimate_network_performance.json"), "w") as f:
        json.dump({"estimated_throughput_fps": cfg.target_fps}, f)
    with open(os.path.join(report, "estimate_layer_resources.json"), "w") as f:
        json.dump({"total": {"LUT": 10 * cfg.target_fps, "URAM": 1}}, f)
    return model

def register(registry):
    registry.register_step(estimate, reads=("target_fps",), estimates=True)
"""


def test_explore_records_its_run_unless_told_not_to(tmp_path: Path):
    shutil.copyfile(MODEL, tmp_path / "tfc.onnx")
    (tmp_path / "steps.py").write_text(STEPS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "e.blueprint.yaml").write_text(
        "name: e\nmodel: tfc.onnx\nclock_ns: 10\n"
        "design_space:\n  steps: [estimate]\n  finn_config:\n    target_fps: [1, 2]\n"
    )
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from steps import register\n"
        "from pytest_brainsmith import explore\n"
        f"blueprint = {str(tmp_path / 'e.blueprint.yaml')!r}\n"
        "first = explore(blueprint, register=register)\n"
        "off = explore(blueprint, register=register, results=False)\n"
        "print(json.dumps([first.stats.get('results'), off.stats.get('results')]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    recorded, off = json.loads(done.stdout.splitlines()[-1])
    db = tmp_path / "build" / "brainsmith" / "results.sqlite"
    assert recorded == str(db) and off is None  # where pytest writes it; opted out: nowhere
    runs = results(db, "runs").stdout.splitlines()
    assert len(runs) == 1 and runs[0].endswith("explore(): e") and "2 passed" in runs[0]
    rows = json.loads(results(db, "export", "--format", "json").stdout)
    assert sorted(r["uram"] for r in rows) == [1.0, 1.0]
    assert sorted(r["choices"]["target_fps"] for r in rows) == [1, 2]


# -- the html report of many designs -----------------------------------------------------------
def big_record(n: int) -> dict:
    """A design as MobileNet's blueprint reports it: 80 layers, a long FINN config, a
    failure without a failing step (an expect bound missed)."""
    record = design("mobilenet", {"MVAU": "hls", "target_fps": n}, outcome="failed", LUT=2e5)
    layers = {
        f"MVAU_hls_{i}": {"LUT": 1000 + i, "BRAM_18K": 2, "URAM": 0, "DSP": 0} for i in range(80)
    }
    record.update(
        layers=layers,
        config={f"field_{i}": i for i in range(30)},
        error="LUT 202,484 > 230,400 on estimates; stopped before hw_codegen",
        failed_step=None,
        expectations=[{"expect": "LUT <= 230400", "value": 202484, "met": False}],
        segments=[
            {
                "name": f"s{i}",
                "status": "built",
                "seconds": 1.0,
                "step_names": ["finn:streamline"],
                "key": "k",
                "path": f"m::s{i}",
                "steps": 1,
            }
            for i in range(4)
        ],
    )
    return record


def visible_rows(page: str) -> int:
    """Table rows a reader sees: those not inside a closed <details>."""
    closed = re.compile(r"<details>(?:(?!<details).)*?</details>", re.S)
    while True:
        shown = closed.sub("", page)
        if shown == page:
            return page.count("<tr>")
        page = shown


def test_a_failed_design_says_why_and_its_long_tables_are_collapsed():
    record = big_record(500)
    details = design_details(record)
    assert "step None" not in details
    assert "<p>failed: LUT 202,484 &gt; 230,400 on estimates; stopped before hw_codegen</p>" in (
        details
    )
    assert "<details><summary>per-layer estimates (80 layers)</summary>" in details
    assert "<details><summary>FINN config (30 rows)</summary>" in details
    assert visible_rows(details) < 15  # segments and expectations; layers and config folded
    built = {**record, "failed_step": "step_hw_codegen", "error": "boom"}
    assert "<p>failed at step step_hw_codegen: boom</p>" in design_details(built)


def test_the_report_of_a_mobilenet_sized_run_stays_readable():
    records = [big_record(n) for n in range(44)]
    rows = sum(visible_rows(design_details(r)) for r in records)
    summary = summary_html(records)[0]
    every = sum(design_details(r).count("<tr>") for r in records)
    assert every > 44 * 110  # what it was: every layer and config row of every design
    assert rows + visible_rows(summary) < 44 * 15  # what a reader scrolls through now
