"""Gates: expect bounds checked on estimates, the Pareto gate, best-first order and
the time budget. Registered pure-Python steps on the bundled model: ``estimate``
writes FINN-shaped estimate reports whose figures the test sets (per ``target_fps``),
``codegen`` stands for the expensive steps after the estimates."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import MODEL, run_in, take_builds

from pytest_brainsmith.core.blueprint import load_design_space
from pytest_brainsmith.core.errors import BlueprintError
from pytest_brainsmith.core.expectations import parse_expectation
from pytest_brainsmith.core.gates import dominated, dominates, miss_text
from pytest_brainsmith.core.toolchain import finn_registry
from pytest_brainsmith.core.tree import build_execution_tree

STEPS = """
import json, os, time

HERE = os.path.dirname(__file__)

def front(model, cfg):
    return model

def estimate(model, cfg):
    figures = json.load(open(os.path.join(HERE, "figures.json")))[str(cfg.target_fps)]
    report = os.path.join(cfg.output_dir, "report")
    os.makedirs(report, exist_ok=True)
    with open(os.path.join(report, "estimate_network_performance.json"), "w") as f:
        json.dump({"estimated_throughput_fps": figures["fps"], "estimated_latency_ns": 1000.0,
                   "critical_path_cycles": 10, "max_cycles": 10}, f)
    with open(os.path.join(report, "estimate_layer_resources.json"), "w") as f:
        json.dump({"MVAU_0": {"LUT": figures["LUT"]},
                   "total": {"LUT": figures["LUT"], "BRAM_18K": 0, "DSP": 0}}, f)
    # a model of its own per target, as FINN's folding makes one: equal models would
    # share the work below them (content dedupe), which is not what these tests are about
    model.set_metadata_prop("target_fps", str(cfg.target_fps))
    return model

def codegen(model, cfg):
    time.sleep(float(os.environ.get("CODEGEN_SECONDS", "0")))
    return model

def tail_a(model, cfg):
    return model

def tail_b(model, cfg):
    return model

def pytest_brainsmith_register(registry):
    registry.register_step(front, reads=())
    registry.register_step(estimate, reads=("target_fps",), estimates=True)
    for step in (codegen, tail_a, tail_b):
        registry.register_step(step, reads=())

def pytest_brainsmith_segment_finish(segment, result):
    with open(os.path.join(HERE, "builds.jsonl"), "a") as log:
        log.write(json.dumps({"segment": result.segment, "status": result.status}) + "\\n")
"""

HEAD = """
model: tfc.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10
design_space:
  steps: [front, estimate, codegen]
  finn_config:
    target_fps: [1, 2, 3, 4]
"""

#: target_fps -> (LUT, fps). 1 misses LUT <= 30000; 2 is dominated by 3 (more LUT,
#: less fps); 3 and 4 are on the front.
FIGURES = {
    "1": {"LUT": 35012, "fps": 900},
    "2": {"LUT": 20000, "fps": 300},
    "3": {"LUT": 10000, "fps": 500},
    "4": {"LUT": 25000, "fps": 800},
}


def project(folder: Path, blueprint: str, figures: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MODEL, folder / "tfc.onnx")
    (folder / "conftest.py").write_text(STEPS)
    (folder / "figures.json").write_text(json.dumps(figures or FIGURES))
    (folder / "g.blueprint.yaml").write_text(HEAD + blueprint)
    return folder


def run(folder: Path, *args: str, env: dict[str, str] | None = None):
    return run_in(folder, *args, env=env)


def built(folder: Path) -> list[str]:
    """The segments built since the last call, below the blueprint, in build order."""
    rows = take_builds(folder)
    return [row["segment"].split("::", 1)[1] for row in rows if row["status"] == "built"]


def outcomes(folder: Path) -> dict[str, tuple[str, str | None, int, str | None]]:
    """design -> (outcome, error, segments pruned, gate), from the results store."""
    with sqlite3.connect(folder / "build" / "brainsmith" / "results.sqlite") as db:
        rows = db.execute(
            "SELECT design, outcome, error, segments_pruned, gate FROM designs "
            "WHERE run_id = (SELECT run_id FROM runs ORDER BY started DESC, rowid DESC LIMIT 1)"
        ).fetchall()
    return {row[0].split("::")[-2]: tuple(row[1:]) for row in rows}


# -- the decisions, without building anything ---------------------------------------------
def test_dominance_names_a_front_design_and_ties_dominate_nobody():
    metrics = ("LUT", "estimated_throughput_fps")
    a = {"LUT": 10, "estimated_throughput_fps": 500}
    b = {"LUT": 20, "estimated_throughput_fps": 300}  # dominated by a and c
    c = {"LUT": 15, "estimated_throughput_fps": 400}  # dominated by a
    twin = dict(a)
    assert dominates(a, b, metrics) and not dominates(b, a, metrics)
    assert not dominates(a, twin, metrics) and not dominates(twin, a, metrics)
    verdict = dominated([("c", c), ("b", b), ("a", a), ("twin", twin)], metrics)
    # b is dominated by c too, but c is not on the front: the named one is
    assert verdict == {"c": "a", "b": "a"}
    lut = parse_expectation("LUT", "<= 30000")
    assert miss_text(lut, 35012.0) == "LUT 35,012 > 30,000"


def test_explore_section_errors_name_file_line_and_key(tmp_path: Path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    registry = finn_registry()
    head = "model: model.onnx\nfpga_part: xc7z020clg400-1\nclock_ns: 10\n"
    # text -> (line, key, message); the explore section starts on line 6
    cases = {
        "explore:\n  paretto: [LUT]\n": (7, "explore.paretto", "did you mean 'pareto'"),
        "explore:\n  pareto: [LUT, fps]\n  before: hw_codegen\n": (
            7,
            "explore.pareto[1]",
            "expected an estimate metric, got 'fps'",
        ),
        "explore:\n  pareto: [LUT]\n": (6, "explore", "needs 'before: STEP'"),
        "explore:\n  pareto: [LUT]\n  before: hw_codgen\n": (
            8,
            "explore.before",
            "did you mean 'hw_codegen'",
        ),
        "explore:\n  pareto: [LUT]\n  before: streamline\n": (
            8,
            "explore.before",
            "no step before streamline writes FINN's estimate reports",
        ),
        "explore:\n  before: hw_codegen\n": (7, "explore.before", "add 'pareto'"),
        "explore:\n  order: pareto\n": (7, "explore.order", "needs explore.pareto"),
        "explore: [LUT]\n": (6, "explore", "expected a mapping of pareto, before, order"),
    }
    steps = "design_space:\n  steps: [streamline, generate_estimate_reports, hw_codegen]\n"
    for text, (line, key, message) in cases.items():
        path = tmp_path / "e.blueprint.yaml"
        path.write_text(head + steps + text)
        with pytest.raises(BlueprintError) as info:
            load_design_space(path, registry)
        shown = str(info.value)
        assert f"e.blueprint.yaml:{line}: {key}: " in shown and message in shown, (text, shown)


def test_a_gate_ends_a_segment_after_the_estimates_and_before_the_gated_step(tmp_path: Path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    path = tmp_path / "e.blueprint.yaml"
    path.write_text(
        "model: model.onnx\nfpga_part: xc7z020clg400-1\nclock_ns: 10\n"
        "design_space:\n  steps: [streamline, generate_estimate_reports, minimize_bit_width,"
        " hw_codegen]\n"
        "explore:\n  pareto: [LUT]\n  before: hw_codegen\n"
    )
    tree = build_execution_tree(load_design_space(path, finn_registry()))
    assert [[s.name for s in seg.steps] for seg in tree.segments()] == [
        ["streamline", "generate_estimate_reports"],
        ["minimize_bit_width"],
        ["hw_codegen"],
    ]
    # without a gate the pipeline is one segment, as before
    path.write_text(path.read_text().split("explore:")[0])
    assert len(list(build_execution_tree(load_design_space(path, finn_registry())).segments())) == 1


# -- end to end on registered steps -------------------------------------------------------
def test_a_design_missing_a_bound_on_its_estimates_builds_nothing_further(tmp_path: Path):
    folder = project(tmp_path / "p", 'expect:\n  LUT: "<= 30000"\n')
    done = run(folder, "--brainsmith-tree")
    out = done.stdout
    assert "3 passed, 1 failed" in out, out + done.stderr
    assert "LUT 35,012 > 30,000 on estimates; stopped before codegen" in out
    builds = built(folder)
    assert "front::target_fps[1]" in builds  # the estimates were built...
    assert "front::target_fps[1]::codegen" not in builds  # ...and nothing after them
    assert sum(b.endswith("::codegen") for b in builds) == 3
    assert "segments: 8 built, 0 reused, 0 failed, 0 failed-before, 1 pruned" in out
    assert "gates saved: expect stopped 1 design, 1 segments not built" in out
    stored = outcomes(folder)
    assert stored["target_fps[1]"][0] == "failed" and stored["target_fps[1]"][2:] == (1, "expect")
    assert stored["target_fps[3]"][2:] == (0, None)
    tree = json.loads(
        (folder / "build" / "brainsmith" / "trees" / "g.blueprint.tree.json").read_text()
    )
    first = tree["root"]["children"][0]
    assert first["name"] == "target_fps[1]" and first["children"][0]["status"] == "pruned"
    # a later run decides the same from the cache, builds nothing
    again = run(folder)
    assert "3 passed, 1 failed" in again.stdout and built(folder) == []


def test_a_segment_shared_with_a_design_still_passing_is_built(tmp_path: Path):
    folder = project(tmp_path / "p", "")
    shared = HEAD.replace(
        "[front, estimate, codegen]", "[front, estimate, codegen, [tail_a, tail_b]]"
    )
    bounds = """expect:
  LUT: "<= 40000"
  when:
    - choices: {tail_a|tail_b: tail_a}
      LUT: "<= 30000"
"""
    (folder / "g.blueprint.yaml").write_text(shared + bounds)
    done = run(folder, "-k", "target_fps[1]")
    assert "1 passed, 1 failed" in done.stdout, done.stdout + done.stderr
    builds = built(folder)
    # tail_a's design misses on the estimates; codegen is shared with tail_b's: built
    assert "front::target_fps[1]::codegen" in builds
    assert "front::target_fps[1]::codegen::tail_b" in builds
    assert "front::target_fps[1]::codegen::tail_a" not in builds
    assert "stopped before codegen" in done.stdout
    assert "gates saved: expect stopped 1 design, 1 segments not built" in done.stdout


PARETO = """explore:
  pareto: [LUT, estimated_throughput_fps]
  before: codegen
"""


def pareto_verdicts(out: str) -> dict[str, str]:
    """design -> skip reason, from pytest's short summary."""
    verdicts = {}
    for line in out.splitlines():
        if line.startswith("SKIPPED") and "dominated by" in line:
            fps = line.split("target_fps=", 1)[1].split(")")[0] if "target_fps=" in line else ""
            verdicts[line.split("dominated by", 1)[1].strip()] = fps
    return verdicts


def test_the_pareto_gate_skips_dominated_designs_the_same_with_the_pool_inline_and_xdist(
    tmp_path: Path,
):
    folder = project(tmp_path / "p", PARETO)
    done = run(folder)
    out = done.stdout
    assert "3 passed, 1 skipped" in out, out + done.stderr
    reason = (
        "dominated by target_fps=3 (LUT 10,000 vs 20,000; estimated_throughput_fps 500 vs 300);"
        " stopped before codegen"
    )
    assert reason in out
    builds = built(folder)
    assert sorted(b for b in builds if b.endswith("codegen")) == [
        f"front::target_fps[{n}]::codegen" for n in (1, 3, 4)
    ]
    assert "gates saved: pareto skipped 1 design, 1 segments not built" in out
    assert outcomes(folder)["target_fps[2]"] == ("skipped", reason, 1, "pareto")

    for args in (("--brainsmith-workers", "0"), ("-n", "2", "--brainsmith-workers", "1")):
        fresh = project(tmp_path / f"p{len(args)}", PARETO)
        other = run(fresh, *args)
        assert "3 passed, 1 skipped" in other.stdout, (args, other.stdout + other.stderr)
        assert reason in other.stdout, args
        assert sorted(b for b in built(fresh) if b.endswith("codegen")) == sorted(
            b for b in builds if b.endswith("codegen")
        )


def test_only_the_selected_designs_compete(tmp_path: Path):
    folder = project(tmp_path / "p", PARETO)
    done = run(folder, "-k", "not target_fps[3]")
    # without 3, 2 is dominated by nobody (4 has more LUT): it passes
    assert "3 passed, 1 deselected" in done.stdout, done.stdout + done.stderr
    assert "front::target_fps[2]::codegen" in built(folder)


def test_expect_and_pareto_together_a_missing_design_does_not_compete(tmp_path: Path):
    figures = {**FIGURES, "1": {"LUT": 35012, "fps": 100000}}  # would dominate 4
    folder = project(tmp_path / "p", PARETO + 'expect:\n  LUT: "<= 30000"\n', figures)
    done = run(folder)
    assert "2 passed, 1 failed, 1 skipped" in done.stdout, done.stdout + done.stderr
    assert sum(b.endswith("codegen") for b in built(folder)) == 2
    assert "gates saved: expect stopped 1 design, 1 segments not built (" in done.stdout
    assert "pareto skipped 1 design, 1 segments not built" in done.stdout


def test_best_first_builds_the_most_promising_designs_expensive_steps_first(tmp_path: Path):
    folder = project(tmp_path / "p", "explore:\n  order: estimated_throughput_fps\n")
    done = run(folder, "--brainsmith-workers", "1")
    assert "4 passed" in done.stdout, done.stdout + done.stderr
    builds = built(folder)
    codegen = [b.split("::")[1] for b in builds if b.endswith("codegen")]
    assert codegen == ["target_fps[1]", "target_fps[4]", "target_fps[3]", "target_fps[2]"]
    # estimates first: every estimate segment before the first codegen
    first = builds.index(next(b for b in builds if b.endswith("codegen")))
    assert sum(1 for b in builds[:first] if b.count("::") == 1) == 4


def test_a_time_budget_starts_nothing_new_and_a_later_run_continues(tmp_path: Path):
    folder = project(tmp_path / "p", "explore:\n  order: estimated_throughput_fps\n")
    blueprint = (folder / "g.blueprint.yaml").read_text()
    # the estimates first (the same cache entries: a segment ends after them), so that
    # the budget below runs out while the first codegen runs, whatever the machine's load
    (folder / "g.blueprint.yaml").write_text(blueprint.replace(", codegen]", "]"))
    assert "4 passed" in run(folder).stdout
    (folder / "g.blueprint.yaml").write_text(blueprint)
    built(folder)
    slow = {"CODEGEN_SECONDS": "8"}
    done = run(folder, "--brainsmith-workers", "1", "--brainsmith-budget", "6s", env=slow)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # the best design's codegen was running when the budget ran out: it finished; the
    # other three never started (what was cached was reused all the same)
    assert "1 passed, 3 skipped" in out, out
    assert "time budget (6 s, --brainsmith-budget) ran out before it started" in out
    assert built(folder) == ["front::target_fps[1]::codegen"]
    assert "gates saved: budget did not reach 3 designs, 3 segments not built" in out
    stored = outcomes(folder)
    assert stored["target_fps[1]"][0] == "passed"
    assert stored["target_fps[4]"][:1] == ("skipped",) and stored["target_fps[4]"][3] == "budget"
    again = run(folder, "--brainsmith-workers", "1")
    assert "4 passed" in again.stdout
    assert sorted(built(folder)) == [f"front::target_fps[{n}]::codegen" for n in (2, 3, 4)]


# -- end to end on FINN ---------------------------------------------------------------------
#: The bundled TFC through FINN's estimates and on to hw_codegen (HLS and RTL code
#: generation; no Vivado needed, unlike hw_ipgen and everything after it). Its designs'
#: estimates: LUT hls 3,528 / 7,019 and rtl 3,211 / 6,662 at 100k / 400k fps target,
#: the same throughput for both backends.
FINN_TFC = """
model: tfc.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10
design_space:
  steps: [qonnx_to_finn, tidy_up, streamline, convert_to_hw, minimize_bit_width_initial,
          create_dataflow_partition, specialize_layers, target_fps_parallelization,
          apply_folding_config, minimize_bit_width, generate_estimate_reports, hw_codegen]
  kernels:
    - MVAU: [hls, rtl]
  finn_config:
    target_fps: [100000, 400000]
"""
FINN_GATES = """expect:
  LUT: "<= 5000"
explore:
  pareto: [LUT, estimated_throughput_fps]
  before: hw_codegen
"""
CODEGEN_LOG = """
import json, os

def pytest_brainsmith_segment_finish(segment, result):
    with open(os.path.join(os.path.dirname(__file__), "builds.jsonl"), "a") as log:
        log.write(json.dumps({"steps": [s.name for s in segment.steps],
                              "status": result.status}) + "\\n")
"""


def test_finn_tfc_with_hw_codegen_builds_codegen_only_for_designs_that_can_matter(
    tmp_path: Path,
):
    codegen = {}
    for name, gates in (("without", ""), ("with", FINN_GATES)):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copyfile(MODEL, folder / "tfc.onnx")
        (folder / "conftest.py").write_text(CODEGEN_LOG)
        (folder / "tfc.blueprint.yaml").write_text(FINN_TFC + gates)
        done = run(folder)
        rows = [json.loads(line) for line in (folder / "builds.jsonl").read_text().splitlines()]
        assert all(row["status"] == "built" for row in rows), rows
        codegen[name] = sum("hw_codegen" in row["steps"] for row in rows)
        codegen[name + " out"] = done.stdout
    assert codegen["without"] == 4, codegen["without out"]
    assert codegen["with"] == 1, codegen["with out"]
    out = codegen["with out"]
    assert "1 passed, 2 failed, 1 skipped" in out, out
    assert "LUT 7,019 > 5,000 on estimates; stopped before hw_codegen" in out
    assert "LUT 6,662 > 5,000 on estimates; stopped before hw_codegen" in out
    assert "dominated by MVAU=rtl, target_fps=100000 (LUT 3,211 vs 3,528;" in out
    assert "gates saved: expect stopped 2 designs, 2 segments not built" in out
    assert "pareto skipped 1 design, 1 segments not built" in out
