"""CI gating on regressions (core/regression/, core/blueprint/regress.py,
plugin/baseline.py): a baseline of designs, ``regress:`` tolerances, each blueprint's
front and gone designs as test items, and the deltas in every view.

The plugin's mechanics run on registered pure-Python steps whose estimate reports the
test writes (``figures.json``, as test_gates.py does); the end-to-end case builds the
bundled TFC on real FINN with a step that makes one layer's folding worse."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import MODEL, TFC_BLUEPRINT, run_in

from pytest_brainsmith.core.blueprint import load_design_space
from pytest_brainsmith.core.errors import BlueprintError
from pytest_brainsmith.core.regression import baseline, comparison, fronts, tolerances
from pytest_brainsmith.core.toolchain import finn_registry

# -- tolerances, comparisons and fronts, without a run --------------------------------------


def test_a_tolerance_points_the_way_its_metric_gets_worse():
    lut = tolerances.parse_tolerance("LUT", "+2%")
    assert (lut.amount, lut.relative, str(lut)) == (2.0, True, "+2%")
    assert lut.allowed(1000) == 20
    fps = tolerances.parse_tolerance("estimated_throughput_fps", "-0%")
    assert fps.allowed(127551) == 0
    bram = tolerances.parse_tolerance("BRAM_18K", 0)  # YAML reads +0 as the number 0
    assert (bram.amount, bram.relative, str(bram)) == (0.0, False, "+0")
    assert str(tolerances.parse_tolerance("DSP", "3")) == "+3"  # unsigned: the worse way
    with pytest.raises(ValueError, match=r"LUT is better lower: .* may rise, e.g. \+2%"):
        tolerances.parse_tolerance("LUT", "-2%")
    with pytest.raises(ValueError, match="estimated_throughput_fps is better higher"):
        tolerances.parse_tolerance("estimated_throughput_fps", "+5%")
    with pytest.raises(ValueError, match="did you mean 'LUT'"):
        tolerances.parse_tolerance("LUTS", "+2%")
    with pytest.raises(ValueError, match="expected a tolerance such as"):
        tolerances.parse_tolerance("LUT", "two percent")


def record(choices: dict, outcome: str = "passed", **estimates: float) -> dict:
    return {"choices": choices, "outcome": outcome, "estimates": estimates}


def test_a_design_is_compared_metric_by_metric_and_gated_by_its_tolerances():
    doc = baseline.document(
        "tfc",
        [
            record({"MVAU": "hls"}, LUT=2616, estimated_throughput_fps=127551, BRAM_18K=11),
            record({"MVAU": "rtl"}, LUT=322, estimated_throughput_fps=127551, DSP=33),
            record({"MVAU": "x"}, "failed"),
        ],
    )
    base = baseline.parse(baseline.dumps(doc), "tfc.baseline.json", "tfc")
    settings = tolerances.RegressSettings(
        {
            "LUT": tolerances.parse_tolerance("LUT", "+2%"),
            "estimated_throughput_fps": tolerances.parse_tolerance(
                "estimated_throughput_fps", "-0%"
            ),
        }
    )

    def compare(choices, outcome="passed", **estimates):
        return comparison.compare_design(base, choices, outcome, estimates, None, settings)

    worse = compare({"MVAU": "hls"}, LUT=2900, estimated_throughput_fps=127551, BRAM_18K=11)
    assert worse.status == "regressed"
    assert worse.summary() == "regressed: LUT 2,616 -> 2,900 (+10.9%, tolerance +2%)"
    within = compare({"MVAU": "hls"}, LUT=2660, estimated_throughput_fps=127551, BRAM_18K=12)
    assert within.status == "worse" and not within.regressions  # BRAM is shown, not gated
    assert "BRAM_18K 11 -> 12 (+9.1%): worse (not gated)" in "\n".join(within.lines())
    faster = compare({"MVAU": "rtl"}, LUT=322, estimated_throughput_fps=200000, DSP=33)
    assert faster.status == "improved" and faster.best().metric == "estimated_throughput_fps"
    slower = compare({"MVAU": "rtl"}, LUT=300, estimated_throughput_fps=127550, DSP=33)
    assert slower.status == "regressed" and [d.metric for d in slower.regressions] == [
        "estimated_throughput_fps"
    ]
    assert compare({"MVAU": "rtl"}, LUT=322, estimated_throughput_fps=127551).status == "same"
    assert compare({"MVAU": "new"}, LUT=1).status == "new"
    fixed = compare({"MVAU": "x"}, LUT=100, estimated_throughput_fps=1)
    assert fixed.status == "improved" and "outcome failed -> passed" in fixed.summary()
    # what the views get: the worst change, each changed metric
    data = worse.as_dict("tfc.baseline.json")
    assert data["worst"]["metric"] == "LUT" and data["worst"]["tolerance"] == "+2%"
    assert data["source"] == "tfc.baseline.json"


def test_the_baseline_file_is_a_design_a_line_and_round_trips():
    records = [record({"t": n}, LUT=100 * n, estimated_throughput_fps=10 * n) for n in (3, 1, 2)]
    text = baseline.dumps(baseline.document("b", records))
    lines = text.splitlines()
    designs = [line for line in lines if line.startswith('  {"choices"')]
    assert [json.loads(line.rstrip(","))["choices"]["t"] for line in designs] == [1, 2, 3]
    parsed = baseline.parse(text, "b.baseline.json", "b")
    assert parsed.get({"t": 2}).estimates["LUT"] == 200
    # each design costs more LUTs and gives more frames/s: none dominates another
    assert json.loads(text)["front"]["designs"] == [{"t": 1}, {"t": 2}, {"t": 3}]
    assert [d.choices for d in parsed.front()] == [{"t": 1}, {"t": 2}, {"t": 3}]
    slower = record({"t": 4}, LUT=400, estimated_throughput_fps=5)  # dominated by all
    bigger = baseline.document("b", [*records, slower])
    assert {"t": 4} not in bigger["front"]["designs"]


def test_a_design_keeps_its_identity_when_a_sweep_narrows_to_one_value_or_widens():
    both = [
        record({"MVAU": "hls", "target_fps": 100000}, LUT=3528),
        record({"MVAU": "hls", "target_fps": 400000}, LUT=7019),
    ]
    base = baseline.parse(baseline.dumps(baseline.document("t", both)), "t.json", "t")
    # target_fps: [100000] is no branch point any more: the designs' choices lose it
    narrowed = {"target_fps": 100000, "MVAU": "rtl"}
    assert base.get({"MVAU": "hls"}, narrowed) is not None
    assert base.get({"MVAU": "hls"}, narrowed).estimates["LUT"] == 3528
    assert base.get({"MVAU": "hls"}) is None  # by its choices alone: another design
    gone = comparison.gone(base, [{"MVAU": "hls"}], narrowed)
    assert [d.choices for d in gone] == [{"MVAU": "hls", "target_fps": 400000}]
    # the other way: a baseline of one target_fps, a blueprint that now sweeps it
    one = baseline.document("t", [record({"MVAU": "hls"}, LUT=3528)], fixed={"target_fps": 1})
    base = baseline.parse(baseline.dumps(one), "t.json", "t")
    assert base.get({"MVAU": "hls", "target_fps": 1}, {}) is not None
    assert base.get({"MVAU": "hls", "target_fps": 4}, {}) is None


def test_hypervolume_is_exact_on_small_fronts():
    assert fronts.hypervolume([(0.0, 0.0)], (1.0, 1.0)) == 1.0
    assert fronts.hypervolume([(0.0, 0.5), (0.5, 0.0)], (1.0, 1.0)) == 0.75
    assert fronts.hypervolume([(2.0, 0.0)], (1.0, 1.0)) == 0.0  # past the reference
    three = fronts.hypervolume([(0.0, 0.0, 0.5), (0.5, 0.5, 0.0)], (1.0, 1.0, 1.0))
    assert three == pytest.approx(0.5 + 0.25 * 0.5)


def test_the_front_fails_when_its_best_design_disappears():
    metrics = ("LUT", "estimated_throughput_fps")
    designs = [
        record({"fps": 1}, LUT=35000, estimated_throughput_fps=900),
        record({"fps": 3}, LUT=10000, estimated_throughput_fps=500),
        record({"fps": 4}, LUT=25000, estimated_throughput_fps=800),
        record({"fps": 2}, LUT=20000, estimated_throughput_fps=300),  # dominated
    ]
    base = baseline.parse(baseline.dumps(baseline.document("b", designs)), "b.json", "b")
    tolerance = tolerances.parse_front_tolerance("hypervolume -1%", metrics)
    now = [(d["choices"], d["outcome"], d["estimates"]) for d in designs]
    same = comparison.compare_front(base, now, metrics, tolerance)
    assert same.verdict == "same" and same.percent == 0
    without_best = comparison.compare_front(base, now[1:], metrics, tolerance)
    assert without_best.verdict == "regressed" and without_best.percent < -1
    assert without_best.lost == [({"fps": 1}, designs[0]["estimates"])]
    assert "  lost from the front: fps=1 (LUT 35,000, estimated_throughput_fps 900)" in (
        without_best.lines()
    )
    # a failed design is not on the front either
    failed = [(c, "failed" if c == {"fps": 1} else o, e) for c, o, e in now]
    assert comparison.compare_front(base, failed, metrics, tolerance).verdict == "regressed"
    # a cheaper design: the front improves
    better = [*now, ({"fps": 5}, "passed", {"LUT": 5000, "estimated_throughput_fps": 600})]
    improved = comparison.compare_front(base, better, metrics, tolerance)
    assert improved.verdict == "improved" and improved.percent > 0
    # within the tolerance: worse, not regressed
    loose = tolerances.parse_front_tolerance("hypervolume -50%", metrics)
    assert comparison.compare_front(base, now[1:], metrics, loose).verdict == "worse"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": "pytest-brainsmith-baseline", "version": 1, "bluep', "invalid JSON at line 1"),
        ('{"format": "pytest-brainsmith-baseline", "version": 7}', "format version 7"),
        ('{"designs": []}', "not a pytest-brainsmith baseline"),
        ("[1, 2]", "not a pytest-brainsmith baseline"),
        (
            '{"format": "pytest-brainsmith-baseline", "version": 1, "blueprint": "cnv", '
            '"designs": [], "front": {"metrics": ["LUT"]}}',
            "the baseline of blueprint 'cnv', not of 'tfc'",
        ),
        (
            '{"format": "pytest-brainsmith-baseline", "version": 1, "blueprint": "tfc", '
            '"designs": [{"choices": 1}], "front": {"metrics": ["LUT"]}}',
            r"designs\[0\]: choices: expected a mapping",
        ),
    ],
)
def test_a_bad_baseline_is_an_error_naming_the_file(text: str, message: str):
    with pytest.raises(baseline.BaselineError, match=message) as caught:
        baseline.parse(text, "/ci/tfc.baseline.json", "tfc")
    assert str(caught.value).startswith("/ci/tfc.baseline.json: ")


# -- regress: in the blueprint -------------------------------------------------------------
HEAD = "model: model.onnx\nfpga_part: xc7z020clg400-1\nclock_ns: 10\n"


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        ("regress:\n  LUTS: +2%\n", 5, "regress.LUTS", "did you mean 'LUT'"),
        ("regress:\n  LUT: -2%\n", 5, "regress.LUT", "LUT is better lower"),
        ("regress:\n  front: area -1%\n", 5, "regress.front", 'expected "hypervolume -N%"'),
        ("regress:\n  gone: ignore\n", 5, "regress.gone", "expected allow"),
        ("regress: 3\n", 4, "regress", "expected true, false or a mapping"),
        (
            "regress:\n  front: {hypervolume: -1%, metrics: [LUT, fps]}\n",
            5,
            "regress.front.metrics[1]",
            "expected an estimate metric, got 'fps'",
        ),
    ],
)
def test_regress_errors_name_file_line_and_key(tmp_path: Path, text, line, key, message):
    (tmp_path / "model.onnx").write_bytes(b"x")
    path = tmp_path / "r.blueprint.yaml"
    path.write_text(HEAD + text)
    with pytest.raises(BlueprintError) as caught:
        load_design_space(path, finn_registry())
    error = caught.value
    assert (error.file, error.line, error.key) == (path, line, key)
    assert re.search(message, str(error)), str(error)


def test_regress_is_merged_through_extends(tmp_path: Path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    (tmp_path / "base.yaml").write_text(
        HEAD
        + "design_space:\n  steps:\n    - {after: generate_estimate_reports, insert: hw_codegen}\n"
        "explore:\n  pareto: [LUT, DSP]\n  before: hw_codegen\n"
        "regress:\n  LUT: +2%\n  front: hypervolume -1%\n"
    )
    child = tmp_path / "c.blueprint.yaml"
    child.write_text("extends: base.yaml\nregress:\n  LUT: +5%\n  DSP: +0\n  gone: allow\n")
    settings = load_design_space(child, finn_registry()).regress
    assert {m: str(t) for m, t in settings.tolerances.items()} == {"LUT": "+5%", "DSP": "+0"}
    assert str(settings.front) == "hypervolume -1%" and settings.allow_gone
    assert settings.front.metrics == ("LUT", "DSP")  # explore.pareto's metrics
    child.write_text("extends: base.yaml\nregress: false\n")
    assert load_design_space(child, finn_registry()).regress is None
    child.write_text("extends: base.yaml\nregress: true\n")
    everything = load_design_space(child, finn_registry()).regress
    assert str(everything.tolerances["LUT"]) == "+2%"  # the parent's key wins over true's 0
    assert str(everything.tolerances["estimated_throughput_fps"]) == "-0"
    assert str(everything.front) == "hypervolume -1%"


# -- the plugin, on pure-Python steps --------------------------------------------------------
STEPS = """
import json, os

def front_end(model, cfg):
    return model

def estimate(model, cfg):
    figures = FIGURES_HERE[str(cfg.target_fps)]
    report = os.path.join(cfg.output_dir, "report")
    os.makedirs(report, exist_ok=True)
    with open(os.path.join(report, "estimate_network_performance.json"), "w") as f:
        json.dump({"estimated_throughput_fps": figures["fps"], "estimated_latency_ns": 1000.0,
                   "critical_path_cycles": 10, "max_cycles": 10}, f)
    with open(os.path.join(report, "estimate_layer_resources.json"), "w") as f:
        json.dump({"MVAU_0": {"LUT": figures["LUT"]},
                   "total": {"LUT": figures["LUT"], "BRAM_18K": 0, "URAM": 0, "DSP": 0}}, f)
    return model

def pytest_brainsmith_register(registry):
    registry.register_step(front_end, reads=())
    registry.register_step(estimate, reads=("target_fps",), estimates=True)
"""

FIGURES = {
    "1": {"LUT": 35000, "fps": 900},
    "2": {"LUT": 20000, "fps": 300},
    "3": {"LUT": 10000, "fps": 500},
    "4": {"LUT": 25000, "fps": 800},
}

BLUEPRINT = """
model: tfc.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10
design_space:
  steps: [front_end, estimate]
  finn_config:
    target_fps: {sweep}
regress:
  LUT: +2%
  estimated_throughput_fps: -0%
  front: hypervolume -1%
{more}"""


def project(
    folder: Path, figures: dict | None = None, sweep: str = "[1, 2, 3, 4]", more: str = ""
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "tfc.onnx").exists():
        shutil.copyfile(MODEL, folder / "tfc.onnx")
        (folder / "pytest.ini").write_text("[pytest]\n")
    # the figures are in the step's source: other figures are another step (rebuilt)
    figures_text = json.dumps(figures or FIGURES, sort_keys=True)
    (folder / "conftest.py").write_text(STEPS.replace("FIGURES_HERE", figures_text))
    (folder / "g.blueprint.yaml").write_text(BLUEPRINT.format(sweep=sweep, more=more))
    return folder


def outcomes(junit: Path) -> dict[str, str]:
    """test name -> passed | failed | skipped, from a junit file."""
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = {"failure": "failed", "error": "error"}.get(tag, tag)
        result[case.get("name")] = outcome
    return result


def properties(junit: Path, name: str) -> dict[str, str]:
    case = next(c for c in ET.parse(junit).getroot().iter("testcase") if c.get("name") == name)
    return {p.get("name"): p.get("value") for p in case.iter("property")}


def test_regressions_fail_designs_and_the_front_under_xdist(tmp_path: Path):
    folder = project(tmp_path / "p")
    missing = run_in(folder)
    assert missing.returncode == 2  # a blueprint with regress: and no baseline
    assert "g.baseline.json: no baseline of blueprint 'g' (the file is missing)" in missing.stdout
    assert "--brainsmith-baseline-update" in missing.stdout and "Traceback" not in missing.stdout

    made = run_in(folder, "--brainsmith-baseline-update", "-n", "2")
    assert made.returncode == 0, made.stdout
    assert f"baseline written: {folder / 'g.baseline.json'} (4 designs of g)" in made.stdout
    written = baseline.parse((folder / "g.baseline.json").read_text(), "x", "g")
    assert written.get({"target_fps": 2}).estimates["LUT"] == 20000

    # target_fps 2 grows by 5% (tolerance 2%), 3 shrinks by 10%, 4 grows by 1% (within)
    changed = {**FIGURES, "2": {"LUT": 21000, "fps": 300}, "3": {"LUT": 9000, "fps": 500}}
    changed["4"] = {"LUT": 25250, "fps": 800}
    project(folder, changed)
    result = run_in(folder, "-n", "2", "--junitxml=j.xml", "--html=r.html")
    assert result.returncode == 1, result.stdout
    got = outcomes(folder / "j.xml")
    assert got == {
        "target_fps[1]": "passed",
        "target_fps[2]": "failed",
        "target_fps[3]": "passed",
        "target_fps[4]": "passed",
        "front": "passed",
    }
    assert (
        "FAILED g.blueprint.yaml::front_end::target_fps[2] - regressed: "
        "LUT 20,000 -> 21,000 (+5.0%, tolerance +2%)" in result.stdout
    )
    assert "baseline: 1 regressed, 1 improved, 1 worse within tolerance, 1 same; worst: LUT" in (
        result.stdout
    )
    assert "baseline front of g: hypervolume" in result.stdout
    # junit: the status and each change
    props = properties(folder / "j.xml", "target_fps[3]")
    assert props["brainsmith.baseline"] == "improved"
    assert props["brainsmith.baseline.LUT"] == "10000" and props["brainsmith.delta.LUT"] == "-10.0%"
    assert properties(folder / "j.xml", "front")["brainsmith.front.verdict"] == "worse"
    # the results store: a column per design and the front's check
    with sqlite3.connect(folder / "build" / "brainsmith" / "results.sqlite") as db:
        last = "(SELECT run_id FROM runs ORDER BY rowid DESC LIMIT 1)"
        rows = dict(db.execute(f"SELECT design, baseline FROM designs WHERE run_id = {last}"))
        front = db.execute(
            f"SELECT kind, outcome, verdict FROM baseline_checks WHERE run_id = {last}"
        ).fetchall()
    assert sorted(rows.values()) == ["improved", "regressed", "same", "worse"]
    assert front == [("front", "passed", "worse")]  # within its -1%
    # html: a coloured cell per design and the baseline's front on the plot
    page = (folder / "r.html").read_text()
    assert "regressed: LUT +5.0% (tolerance +2%)" in page and "background:salmon" in page
    assert "improved: LUT -10.0%" in page and "baseline front (g)" in page

    # the best design (900 fps) leaves the blueprint: its front regresses, it is gone
    project(folder, changed, sweep="[2, 3, 4]")
    gone = run_in(folder, "--junitxml=j.xml")
    got = outcomes(folder / "j.xml")
    assert got["front"] == "failed" and got["gone[target_fps=1]"] == "failed"
    assert "lost from the front: target_fps=1 (LUT 35,000, estimated_throughput_fps 900)" in (
        gone.stdout
    )
    assert "design target_fps=1 of the baseline" in gone.stdout
    project(folder, changed, sweep="[2, 3, 4]", more="  gone: allow\n")
    allowed = run_in(folder, "--junitxml=j.xml")
    assert outcomes(folder / "j.xml")["gone[target_fps=1]"] == "skipped"
    assert "allowed by regress: {gone: allow}" in allowed.stdout

    # meant it: the update writes the baseline again, and the next run passes
    assert run_in(folder, "--brainsmith-baseline-update").returncode == 0
    again = run_in(folder, "--junitxml=j.xml")
    assert again.returncode == 0, again.stdout
    assert "baseline: 3 same" in again.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no baseline of blueprint 'g' (the file is missing)"),
        ('{"format": "pytest-brainsmith-baseline", "version": 2}', "baseline format version 2"),
        ('{"format": "pytest-brainsmith-baseline", "version": 1, "designs": [', "invalid JSON"),
        (
            '{"format": "pytest-brainsmith-baseline", "version": 1, "blueprint": "cnv", '
            '"designs": [], "front": {"metrics": ["LUT"]}}',
            "the baseline of blueprint 'cnv', not of 'g'",
        ),
    ],
)
def test_a_bad_baseline_file_is_a_collection_error_naming_it(tmp_path: Path, content, message):
    folder = project(tmp_path)
    if content is not None:
        (folder / "g.baseline.json").write_text(content)
    result = run_in(folder, "--collect-only", "-q")
    assert result.returncode == 2
    assert f"{folder / 'g.baseline.json'}: " in result.stdout
    assert message in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert "INTERNALERROR" not in result.stdout + result.stderr


def test_a_baseline_from_a_results_store_run(tmp_path: Path):
    folder = project(tmp_path)
    store = folder / "build" / "brainsmith" / "results.sqlite"
    first = run_in(folder, "--brainsmith-baseline", str(store))  # no store yet
    assert first.returncode == 2 and f"{store}: no results store there" in first.stdout
    # a first run (without regress:, so no baseline is required) fills the store
    blueprint = folder / "g.blueprint.yaml"
    blueprint.write_text(blueprint.read_text().split("regress:")[0])
    assert run_in(folder).returncode == 0
    project(folder, {**FIGURES, "3": {"LUT": 11000, "fps": 500}})
    result = run_in(folder, "--brainsmith-baseline", str(store), "--junitxml=j.xml")
    assert result.returncode == 1
    assert outcomes(folder / "j.xml")["target_fps[3]"] == "failed"
    assert re.search(
        r"design regressed against the baseline .*results\.sqlite#[0-9a-f]{12}", result.stdout
    )
    # a run named by its id's prefix; a store is never written as a baseline
    (run,) = [line.split()[0] for line in _runs(store)[:1]]
    named = run_in(folder, "--brainsmith-baseline", f"{store}#{run}", "-q")
    assert named.returncode == 1
    # the latest run (that one) as the baseline: target_fps 3 failed there by its regression
    # alone, so it is a design that passed, with its LUTs: nothing changed since
    latest = run_in(folder, "--brainsmith-baseline", str(store))
    assert latest.returncode == 0, latest.stdout
    assert "baseline: 4 same" in latest.stdout
    refused = run_in(folder, "--brainsmith-baseline", str(store), "--brainsmith-baseline-update")
    assert refused.returncode == 4 and "is a results store" in refused.stderr


def _runs(store: Path) -> list[str]:
    with sqlite3.connect(store) as db:
        return [row[0] for row in db.execute("SELECT run_id FROM runs ORDER BY rowid")]


def test_a_baseline_on_s3_gates_a_second_runner(tmp_path: Path):
    from seaweedfs import BUCKET, Unavailable
    from seaweedfs import seaweedfs as start

    try:
        context = start(tmp_path / "s3")
        server = context.__enter__()
    except Unavailable as exc:
        pytest.skip(str(exc))
    try:
        url = f"s3://{BUCKET}/baselines/main"
        env = server.env()
        missing = run_in(project(tmp_path / "pr0"), "--brainsmith-baseline", url, env=env)
        assert missing.returncode == 2
        assert f"{url}/g.baseline.json holds no baseline of blueprint 'g'" in missing.stdout
        # main's CI writes the baseline; a pull request's runner (its own cache) reads it
        main = run_in(
            project(tmp_path / "main"), "--brainsmith-baseline", url,
            "--brainsmith-baseline-update", env=env,
        )  # fmt: skip
        assert main.returncode == 0, main.stdout
        assert f"baseline written: {url}/g.baseline.json" in main.stdout
        assert server.fs().exists(f"{BUCKET}/baselines/main/g.baseline.json")
        changed = {**FIGURES, "4": {"LUT": 25000, "fps": 700}}
        pr = run_in(project(tmp_path / "pr", changed), "--brainsmith-baseline", url, env=env)
        assert pr.returncode == 1
        assert "regressed: estimated_throughput_fps 800 -> 700 (-12.5%, tolerance -0%)" in pr.stdout
        denied = run_in(
            tmp_path / "pr", "--brainsmith-baseline", url, env=server.env(secret="wrong")
        )
        assert denied.returncode == 2 and f"{url}/g.baseline.json: cannot read" in denied.stdout
        assert "Traceback" not in denied.stdout
    finally:
        context.__exit__(None, None, None)


# -- end to end on real FINN ---------------------------------------------------------------
#: a step that makes the folding of one layer worse: the network's last layer, where it is
#: an HLS MVAU, fully parallel in its output channels (PE = MH), which costs LUTs and gains
#: no throughput (it is not the slowest layer). With MVAU: rtl the last layer is RTL (the
#: first three fall back to HLS) and nothing changes.
WORSEN = """
def worsen(model, cfg):
    from qonnx.custom_op.registry import getCustomOp

    last = [n for n in model.graph.node if n.op_type.startswith("MVAU")][-1:]
    for node in last:
        if node.op_type == "MVAU_hls":
            op = getCustomOp(node)
            op.set_nodeattr("PE", op.get_nodeattr("MH"))
    return model

def pytest_brainsmith_register(registry):
    registry.register_step(worsen, reads=())
"""

TFC_REGRESS = TFC_BLUEPRINT + (
    "regress:\n  LUT: {lut}\n  estimated_throughput_fps: -0%\n  front: hypervolume -0%\n{more}"
)
WORSENED = "  steps:\n    - {before: generate_estimate_reports, insert: worsen}\n"


def test_on_finn_a_worse_folding_fails_exactly_the_designs_it_touches(tmp_path: Path):
    folder = tmp_path / "tfc"
    folder.mkdir()
    shutil.copyfile(MODEL, folder / "tfc.onnx")
    (folder / "conftest.py").write_text(WORSEN)
    (folder / "pytest.ini").write_text("[pytest]\n")
    blueprint = folder / "tfc.blueprint.yaml"

    def write(lut: str = "+0%", worse: bool = False, sweep: str = "[100000, 400000]", more=""):
        text = TFC_REGRESS.format(lut=lut, more=more)
        text = text.replace("[100000, 400000]", sweep)
        if worse:
            text = text.replace("design_space:\n", "design_space:\n" + WORSENED)
        blueprint.write_text(text)

    def lut_of(junit: Path) -> dict[str, float]:
        return {
            name: float(properties(junit, name)["brainsmith.LUT"])
            for name, outcome in outcomes(junit).items()
            if "target_fps" in name and not name.startswith("gone")
        }

    write()
    made = run_in(folder, "--brainsmith-baseline-update", "--junitxml=before.xml", timeout=900)
    assert made.returncode == 0, made.stdout
    before = lut_of(folder / "before.xml")

    write(worse=True)
    result = run_in(folder, "--junitxml=after.xml", timeout=900)
    after = lut_of(folder / "after.xml")
    got = outcomes(folder / "after.xml")
    touched = {name for name in after if after[name] > before[name]}
    failed = {name for name, outcome in got.items() if outcome == "failed" and name != "front"}
    assert touched and failed == touched  # exactly the designs whose LUTs rose ...
    nodes = re.findall(r"FAILED (\S+target_fps\[\d+\])", result.stdout)
    assert nodes and all("MVAU[hls]" in n for n in nodes)  # ... the HLS ones; RTL passed
    rise = max((after[n] - before[n]) / before[n] * 100 for n in touched)
    for name in touched:  # the failure names metric, baseline, value and tolerance
        assert (
            f"regressed: LUT {before[name]:,.0f} -> {after[name]:,.0f} "
            f"({(after[name] - before[name]) / before[name] * 100:+.1f}%, tolerance +0%)"
        ) in result.stdout
    assert "baseline: 2 regressed, 2 same" in result.stdout

    # a change within the tolerance passes (the front is another test: left out here)
    write(lut=f"+{rise + 1:.0f}%", worse=True)
    within = run_in(folder, "--deselect", "tfc.blueprint.yaml::baseline::front")
    assert within.returncode == 0, within.stdout
    assert "baseline: 2 changed within tolerance, 2 same" in within.stdout  # LUT up, latency down

    # meant it: the baseline is written again, and the same run then passes
    write(worse=True)
    assert run_in(folder, "--brainsmith-baseline-update").returncode == 0
    assert run_in(folder).returncode == 0

    # the fastest designs leave the blueprint: the front test fails, naming what it lost
    write(worse=True, sweep="[100000]", more="  gone: allow\n")
    shrunk = run_in(folder, "--junitxml=gone.xml")
    got = outcomes(folder / "gone.xml")
    assert got["front"] == "failed", shrunk.stdout
    assert [o for n, o in got.items() if n.startswith("gone[")] == ["skipped", "skipped"]
    assert all(o == "passed" for n, o in got.items() if n.startswith("MVAU"))
    assert re.search(r"lost from the front: MVAU=\w+, target_fps=400000", shrunk.stdout)


def test_on_finn_folding_trials_are_shown_against_the_baseline_not_gated(tmp_path: Path):
    """Trial N of a folding search is another folding once anything before it changed: it
    is compared, not gated; the designs with FINN's folding are gated as any design."""
    pytest.importorskip("optuna")
    folder = tmp_path / "search"
    folder.mkdir()
    shutil.copyfile(MODEL, folder / "tfc.onnx")
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "tfc.blueprint.yaml").write_text(
        "model: tfc.onnx\nfpga_part: xc7z020clg400-1\nclock_ns: 10\n"
        "design_space:\n  finn_config:\n    target_fps: [10000, 100000]\n"
        "  folding:\n    trials: 3\n    batch: 3\n    seed: 7\n"
        "regress:\n  LUT: +0%\n  front: hypervolume -100%\n"
    )
    made = run_in(folder, "--brainsmith-baseline-update", timeout=900)
    assert made.returncode == 0, made.stdout
    path = folder / "tfc.baseline.json"
    doc = json.loads(path.read_text())
    trials = [d for d in doc["designs"] if "folding" in d["choices"]]
    assert sorted(d["choices"]["folding"] for d in trials) == ["trial-0", "trial-1", "trial-2"]
    # a baseline in which every design was 100 LUTs cheaper than this run's
    for entry in doc["designs"]:
        entry["estimates"]["LUT"] -= 100
    path.write_text(json.dumps(doc))
    result = run_in(folder, "--junitxml=j.xml", timeout=900)
    got = outcomes(folder / "j.xml")
    assert {n: o for n, o in got.items() if n.startswith("target_fps")} == {
        "target_fps[10000]": "failed",
        "target_fps[100000]": "failed",
    }
    assert [o for n, o in got.items() if n.startswith("folding[")] == ["passed"] * 3
    assert properties(folder / "j.xml", "folding[trial-1]")["brainsmith.baseline"] == "worse"
    assert got["front"] == "passed" and not any(n.startswith("gone[") for n in got)
    assert "baseline: 2 regressed, 3 worse within tolerance" in result.stdout
