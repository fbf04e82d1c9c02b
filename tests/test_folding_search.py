"""The folding search (``design_space.folding``): its validation, and end to end on real
FINN with the bundled TFC: trials are foldings FINN accepts and applies, a re-run with
the same seed rebuilds nothing (with or without the stored study), another process
(xdist) asks the same trials, the time budget stops it and a later run continues, and a
written folding JSON reproduces its trial's estimates as ``folding_config_file``."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MODEL, run_in

#: FINN's estimate pipeline (the default without ``steps:``); the search starts at its
#: target_fps_parallelization, after specialize_layers.
PIPELINE = """
model: tfc.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10
design_space:
"""

SEARCH = """
  finn_config:
    target_fps: [10000, 100000]
  folding:
    search: optuna
    trials: 6
    batch: 3
    seed: 7
expect:
  LUT: "<= 2000000"
"""


#: ``explore()`` on the project: its stats and each trial's folding, as JSON.
EXPLORE_SCRIPT = """
import json
from pytest_brainsmith import explore

result = explore("tfc.blueprint.yaml")
records = [d.record() for d in result.designs]
trials = {r["folding"]["trial"]: r["folding"]["nodes"] for r in records if r.get("folding")}
one = explore("tfc.blueprint.yaml", where={"folding": "trial-4"}).designs
none = explore("tfc.blueprint.yaml", where={"folding": "trial-6"})  # there are 6: 0 to 5
print(json.dumps({"stats": result.stats, "trials": trials, "passed": len(result.passed),
                  "one": [d.record()["folding"]["trial"] for d in one],
                  "none": [len(none.designs), none.stats.get("folding_searches")]}))
"""


def run(folder: Path, *args: str):
    return run_in(folder, *args, timeout=400, report="-rA")


def trials(folder: Path, store: str = "build/brainsmith/results.sqlite") -> dict[int, dict]:
    """trial number -> (outcome, folding, estimates) of the newest run in the store."""
    with sqlite3.connect(folder / store) as db:
        run_id = db.execute("SELECT run_id FROM runs ORDER BY started DESC LIMIT 1").fetchone()[0]
        rows = db.execute(
            "SELECT outcome, folding, estimates, error, cache_key FROM designs "
            "WHERE run_id = ? AND folding IS NOT NULL",
            (run_id,),
        ).fetchall()
    found = {}
    for outcome, folding, estimates, error, key in rows:
        data = json.loads(folding)
        found[data["trial"]] = {
            "cache_key": key,
            "outcome": outcome,
            "folding": data,
            "estimates": json.loads(estimates),
            "error": error,
        }
    return found


# -- validation: collection errors naming the key ------------------------------------------
@pytest.mark.parametrize(
    ("folding", "message"),
    [
        ("{trails: 5}", "design_space.folding.trails: unknown key"),
        ("{trials: 0}", "design_space.folding.trials: expected an integer from 1"),
        ("{search: optuna, objectives: [min LUTS]}", "folding.objectives[0]: 'LUTS' is not an"),
        ("{objectives: [min LUTS]}", "objectives[0]: the exact search minimises a cost at"),
        ("{objectives: [lowest LUT]}", "expected 'min METRIC' or 'max METRIC'"),
        ("{sampler: cmaes}", "design_space.folding.sampler: expected one of nsga2, tpe, random"),
        ("{attributes: {ram_styles: [block]}}", "design_space.folding.attributes.ram_styles"),
        ("{search: grid}", "design_space.folding.search: expected one of exact, optuna"),
        (
            "{objectives: [min estimated_latency_ns, max estimated_throughput_fps]}",
            "objectives[0]: the exact search minimises a cost at each throughput",
        ),
        ("{objectives: [min LUT, min DSP]}", "needs one cost to minimise and 'max estim"),
        ("{targets: [0]}", "design_space.folding.targets: expected a list of throughputs"),
        ("{estimates: raw}", "design_space.folding.estimates: expected one of corrected, fi"),
        ("{search: optuna, targets: [5]}", "folding.targets: only the exact search"),
        ("{search: optuna, objectives: [min part]}", "'part' is not an estimate metric"),
        ("[1, 2]", "design_space.folding: expected a mapping"),
    ],
)
def test_an_invalid_search_is_a_collection_error_naming_the_key(
    pytester: pytest.Pytester, folding: str, message: str
):
    shutil.copyfile(MODEL, pytester.path / "tfc.onnx")
    pytester.makefile(".blueprint.yaml", s=PIPELINE + f"  folding: {folding}\n")
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    where = [line for line in result.stdout.lines if "s.blueprint.yaml:" in line]
    assert where and message in where[0], result.stdout.str()  # file:line: key: what
    assert "Traceback" not in result.stdout.str()


def test_a_search_without_a_folding_step_is_a_collection_error(pytester: pytest.Pytester):
    shutil.copyfile(MODEL, pytester.path / "tfc.onnx")
    steps = PIPELINE + "  steps:\n    - remove: apply_folding_config\n"
    pytester.makefile(".blueprint.yaml", s=steps + "  folding: {trials: 3}\n")
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*no apply_folding_config step to apply a trial's folding*"])


def test_a_choice_only_the_trials_would_see_is_a_collection_error(pytester: pytest.Pytester):
    shutil.copyfile(MODEL, pytester.path / "tfc.onnx")
    sweep = "  finn_config:\n    synth_clk_period_ns: [10, 5]\n  folding: {trials: 3}\n"
    pytester.makefile(".blueprint.yaml", s=PIPELINE + sweep)
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    out = result.stdout.str()
    assert "design_space.finn_config.synth_clk_period_ns: varies where the folding" in out, out
    # target_fps varies there too, but a trial has none: allowed (see SEARCH)


def test_without_optuna_a_search_is_a_collection_error_naming_the_package(
    pytester: pytest.Pytester,
):
    shutil.copyfile(MODEL, pytester.path / "tfc.onnx")
    # hides the installed package from this session as an uninstalled one would be
    pytester.makeconftest("import sys\nsys.modules['optuna'] = None\n")
    pytester.makefile(".blueprint.yaml", s=PIPELINE + "  folding: {search: optuna, trials: 3}\n")
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*design_space.folding.search: the folding search needs Optuna, which is not installed*"]
    )
    assert "pip install 'pytest-brainsmith[search]'" in result.stdout.str()


def test_collection_has_one_item_per_trial_below_the_shared_steps(pytester: pytest.Pytester):
    shutil.copyfile(MODEL, pytester.path / "tfc.onnx")
    pytester.makefile(".blueprint.yaml", s=PIPELINE + SEARCH)
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret == 0, result.stdout.str()
    ids = [line for line in result.stdout.lines if "::" in line]
    prefix = "s.blueprint.yaml::qonnx_to_finn..specialize_layers::"
    assert ids == [
        prefix + "target_fps[10000]",
        prefix + "target_fps[100000]",
        *[prefix + f"folding[trial-{n}]" for n in range(6)],
    ]


# -- end to end on real FINN -----------------------------------------------------------------
def test_folding_search_on_finn_tfc(tmp_path: Path):
    folder = tmp_path / "search"
    folder.mkdir()
    shutil.copyfile(MODEL, folder / "tfc.onnx")
    (folder / "tfc.blueprint.yaml").write_text(PIPELINE + SEARCH)

    # a budget that runs out while the shared steps build: no trial is asked
    done = run(folder, "--brainsmith-budget", "1s")
    assert done.returncode == 0, done.stdout
    assert "SKIPPED [6] tfc.blueprint.yaml:1: the time budget" in done.stdout, done.stdout
    assert "ran out before this trial was asked; a later run continues" in done.stdout

    # a later run continues: 6 trials, each a folding FINN applied as it was asked
    done = run(folder, "--html", "report.html")
    assert done.returncode == 0, done.stdout + done.stderr
    html = (folder / "report.html").read_text()
    assert "Folding search: tfc.blueprint.yaml::qonnx_to_finn..specialize_layers" in html
    assert "FINN&#x27;s folding (target_fps)" in html or "FINN's folding (target_fps)" in html
    first = trials(folder)
    assert sorted(first) == list(range(6)), done.stdout
    for number, trial in first.items():
        assert trial["outcome"] == "passed", (number, trial["error"])
        folding = trial["folding"]
        asked = json.loads(Path(folding["file"]).read_text())
        assert asked.pop("Defaults") == {}
        assert asked == folding["nodes"]
        # FINN's own account of what it applied (apply_folding_config writes it)
        key = trial["cache_key"]
        entry = folder / "build" / "brainsmith" / "cache" / "v1" / "entries" / key[:2] / key
        applied = json.loads(
            (entry / "build" / "report" / "applied_folding_config.json").read_text()
        )
        for node, attrs in asked.items():
            assert {a: applied[node][a] for a in attrs} == attrs, (number, node)
    assert len({json.dumps(t["folding"]["nodes"], sort_keys=True) for t in first.values()}) > 1
    assert "folding search tfc.blueprint.yaml::qonnx_to_finn..specialize_layers: 6 trials" in (
        done.stdout
    )
    # what Optuna was told is what each trial measured, on the objectives' metrics and
    # directions (a flipped objective or another metric fed back would differ)
    import optuna

    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(
            str(folder / "build" / "brainsmith" / "folding-studies.journal")
        )
    )
    (summary,) = optuna.get_all_study_summaries(journal)
    study = optuna.load_study(study_name=summary.study_name, storage=journal)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    by_file = {Path(t["folding"]["file"]).name: t["estimates"] for t in first.values()}
    told = [t for t in study.trials if "folding_file" in t.user_attrs]
    assert len(told) == 6
    for trial in told:
        measured = by_file[trial.user_attrs["folding_file"]]
        assert trial.values == [measured["LUT"], measured["estimated_throughput_fps"]]

    # the same seed again: nothing rebuilt, with the stored study and without it
    done = run(folder)
    assert "this run built 0 segments" in done.stdout, done.stdout
    assert {n: t["folding"]["nodes"] for n, t in trials(folder).items()} == {
        n: t["folding"]["nodes"] for n, t in first.items()
    }
    (folder / "build" / "brainsmith" / "folding-studies.journal").unlink()
    done = run(folder)
    assert "this run built 0 segments" in done.stdout, done.stdout

    # the Python API runs the same search: the same trials, nothing rebuilt
    (folder / "explore_it.py").write_text(EXPLORE_SCRIPT)
    done = subprocess.run(
        [sys.executable, "explore_it.py"], cwd=folder, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stdout + done.stderr
    explored = json.loads(done.stdout.strip().splitlines()[-1])
    assert explored["stats"]["segments_built"] == 0, explored["stats"]
    assert explored["stats"]["folding_searches"] == {
        "tfc.blueprint.yaml::qonnx_to_finn..specialize_layers": {"trials": 6, "error": None}
    }
    assert explored["trials"] == {str(n): t["folding"]["nodes"] for n, t in first.items()}
    assert explored["passed"] == 2 + 6  # the target_fps sweep and the trials
    assert explored["one"] == [4]
    assert explored["none"] == [0, None]  # no such trial: no search run

    # another process asks the same trials: two xdist workers on an empty cache
    done = run(folder, "-n", "2", "--brainsmith-cache", str(tmp_path / "other-cache"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert {n: t["folding"]["nodes"] for n, t in trials(folder).items()} == {
        n: t["folding"]["nodes"] for n, t in first.items()
    }

    # a front trial's folding JSON, used as folding_config_file, gives its estimates
    written = sorted((folder / "build" / "brainsmith" / "foldings").rglob("trial-*.json"))
    assert written, done.stdout
    chosen = written[0]
    number = int(chosen.stem.split("-")[1])
    replay = tmp_path / "replay"
    replay.mkdir()
    shutil.copyfile(MODEL, replay / "tfc.onnx")
    shutil.copyfile(chosen, replay / "folding.json")
    (replay / "tfc.blueprint.yaml").write_text(
        PIPELINE + "finn_config:\n  folding_config_file: folding.json\n"
    )
    cache = folder / "build" / "brainsmith" / "cache"
    store = replay / "results.sqlite"
    done = run(replay, "--brainsmith-cache", str(cache), "--brainsmith-results", str(store))
    assert done.returncode == 0, done.stdout
    assert "this run built 1 segments" in done.stdout, done.stdout  # its own key: rebuilt
    with sqlite3.connect(store) as db:
        (estimates,) = db.execute("SELECT estimates FROM designs").fetchone()
    estimates = json.loads(estimates)
    for metric in ("LUT", "BRAM_18K", "estimated_throughput_fps"):
        assert estimates[metric] == first[number]["estimates"][metric], metric


def test_trials_past_the_estimates_are_gated_like_every_design(tmp_path: Path):
    """A pipeline going on after the estimates (hw_codegen): a trial that misses an
    ``expect`` bound on its estimates stops there, like every design (the expect gate),
    and is an infeasible proposal (skipped with the reason, not a failed test: the run
    passes); the others generate code. The search goes on with the estimates."""
    folder = tmp_path / "codegen"
    folder.mkdir()
    shutil.copyfile(MODEL, folder / "tfc.onnx")
    blueprint = PIPELINE + "  steps:\n    - at_end: {insert: hw_codegen}\n"
    blueprint += "  folding: {search: optuna, trials: 3, batch: 3, seed: 1}\n"
    blueprint += 'expect:\n  LUT: "<= 6000"\n'
    (folder / "tfc.blueprint.yaml").write_text(blueprint)
    done = run(folder)
    assert done.returncode == 0, done.stdout
    found = trials(folder)
    assert sorted(found) == [0, 1, 2], done.stdout
    stopped = [n for n, t in found.items() if t["outcome"] == "skipped"]
    passed = [n for n, t in found.items() if t["outcome"] == "passed"]
    assert stopped and passed, done.stdout
    for number in stopped:
        assert found[number]["error"].startswith("infeasible proposal: LUT <= 6000 (got ")
        assert found[number]["estimates"]["LUT"] > 6000
    assert "infeasible proposal: LUT <= 6000 (got " in done.stdout, done.stdout
    for number in passed:
        assert found[number]["estimates"]["LUT"] <= 6000
    with sqlite3.connect(folder / "build" / "brainsmith" / "results.sqlite") as db:
        pruned = dict(
            db.execute(
                "SELECT json_extract(folding, '$.trial'), segments_pruned FROM designs "
                "WHERE folding IS NOT NULL"
            ).fetchall()
        )
    assert all(pruned[n] == 1 for n in stopped) and all(pruned[n] == 0 for n in passed)


def test_a_search_with_no_feasible_trial_fails_its_last(tmp_path: Path):
    """Infeasible proposals are skipped; the search's last trial fails when none of its
    trials was feasible (the run's verdict is the search's best). The exact search finds
    nothing within an impossible bound: no design built, the same verdict."""
    folder = tmp_path / "none"
    folder.mkdir()
    shutil.copyfile(MODEL, folder / "tfc.onnx")
    for search in ("optuna", "exact"):
        (folder / "tfc.blueprint.yaml").write_text(
            PIPELINE
            + f"  folding: {{search: {search}, trials: 2, batch: 2}}\n"
            + 'expect:\n  LUT: "<= 100"\n'
        )
        done = run(folder)
        assert done.returncode == 1, done.stdout
        assert "SKIPPED [1] tfc.blueprint.yaml:1: " in done.stdout, done.stdout  # trial-0
        assert "FAILED tfc.blueprint.yaml::qonnx_to_finn..specialize_layers::folding[trial-1]" in (
            done.stdout
        ), done.stdout
        assert "none of its" in done.stdout and "met every expectation" in done.stdout
        if search == "exact":
            assert "the exact search found no design to build" in done.stdout, done.stdout


#: The exact search (the default) below FINN's target_fps foldings, minimising FINN's own
#: LUT figure (``estimates: finn``), so that "never worse than FINN" is on one scale.
EXACT = """
  finn_config:
    target_fps: [3000, 30000, 300000]
  folding:
    trials: 8
    batch: 4
    targets: [100000]
    estimates: finn
expect:
  BRAM_18K: "<= 40"
"""

#: Run in a process of its own (FINN imported there): the cost table of the search's
#: model, cut to 3 options per unit so that every design can be enumerated, solved and
#: enumerated; prints JSON.
BRUTE_FORCE = """
import itertools, json, sys
from pathlib import Path
from pytest_brainsmith.finn.runner import import_finn
from pytest_brainsmith.finn.cost_model import cost_table
from pytest_brainsmith.core.search.solver import Problem, solve_front

import_finn()
table = cost_table(Path(sys.argv[1]), "xc7z020clg400-1", {}, ultra=False)
for unit in table["units"]:  # per budget, the option of least LUT and of least DSP
    options, kept = unit["options"], []
    for budget in (64, 256, 1024):
        meeting = [o for o in options if o["cycles"] <= budget] or options
        for r in (0, 3):
            best = min(meeting, key=lambda o: (o["cost"][r], o["cost"][0], -o["cycles"]))
            if best not in kept:
                kept.append(best)
    unit["options"] = kept
capacity = {"DSP": 200}  # binds: the least-LUT options use DSPs
designs = []
combinations = list(itertools.product(*(u["options"] for u in table["units"])))
for combo in combinations:
    totals = [sum(o["cost"][i] for o in combo) for i in range(4)]
    if totals[3] <= capacity["DSP"]:
        designs.append((max(o["cycles"] for o in combo), totals[0]))
best, brute = float("inf"), []
for cycles, value in sorted(designs):
    if value < best:
        brute.append([cycles, value])
        best = value
solution = solve_front(Problem(table, "LUT", capacity))
print(json.dumps({
    "combinations": len(combinations),
    "brute": brute,
    "solved": [[d.max_cycles, d.value] for d in solution.front],
    "programs": solution.programs,
}))
"""


def pareto_set(points: dict[int, tuple[float, float]]) -> set[int]:
    """Trials no other beats on both (min LUT, max fps): written independently of the views."""
    return {
        n
        for n, (lut, fps) in points.items()
        if not any(
            (o_lut <= lut and o_fps >= fps) and (o_lut, o_fps) != (lut, fps)
            for o_lut, o_fps in points.values()
        )
    }


def test_exact_search_on_finn_tfc(tmp_path: Path):
    folder = tmp_path / "exact"
    folder.mkdir()
    shutil.copyfile(MODEL, folder / "tfc.onnx")
    (folder / "tfc.blueprint.yaml").write_text(PIPELINE + EXACT)
    done = run(folder)
    assert done.returncode == 0, done.stdout + done.stderr
    found = trials(folder)
    assert sorted(found) == list(range(8)), done.stdout
    # every built design is what the cost model said it would be (FINN's own estimates)
    for number, trial in found.items():
        model, estimates = trial["folding"]["model"], trial["estimates"]
        for metric in ("LUT", "BRAM_18K", "URAM", "DSP"):
            assert model["finn"][metric] == estimates[metric], (number, metric)
        assert model["max_cycles"] == estimates["max_cycles"], number
        assert estimates["BRAM_18K"] <= 40  # the expect bound is the solver's constraint
        assert trial["outcome"] == "passed", (number, trial["error"])
    assert "cost model and FINN agree on 8 of 8 built designs" in done.stdout, done.stdout
    # never worse than FINN's own folding at its throughputs (its cycles are targets)
    with sqlite3.connect(folder / "build" / "brainsmith" / "results.sqlite") as db:
        finn = [
            json.loads(e)
            for (e,) in db.execute("SELECT estimates FROM designs WHERE folding IS NULL")
        ]
    assert len(finn) == 3
    for design in finn:
        reaching = [
            t["estimates"]["LUT"]
            for t in found.values()
            if t["estimates"]["estimated_throughput_fps"] >= design["estimated_throughput_fps"]
        ]
        assert reaching and min(reaching) <= design["LUT"], (design, reaching)
    # the user's target: the cheapest design of the front at >= 100,000 fps is trial-0
    assert found[0]["estimates"]["estimated_throughput_fps"] >= 100_000
    # the written front is the Pareto set of what was built (and met every expectation)
    points = {
        n: (t["estimates"]["LUT"], t["estimates"]["estimated_throughput_fps"])
        for n, t in found.items()
    }
    written = (folder / "build" / "brainsmith" / "foldings").rglob("trial-*.json")
    assert {int(p.stem.split("-")[1]) for p in written} == pareto_set(points)

    # a warm run: the plan is in the cache, nothing is built, FINN is not imported
    again = run(folder)
    assert "this run built 0 segments" in again.stdout, again.stdout
    assert "FINN imported by" not in again.stdout or "FINN imported by 0" in again.stdout
    assert {n: t["folding"]["nodes"] for n, t in trials(folder).items()} == {
        n: t["folding"]["nodes"] for n, t in found.items()
    }

    # the solver against brute force on this model's own FINN figures, capacity binding
    model = next((folder / "build" / "brainsmith" / "cache").rglob("step_specialize_layers.onnx"))
    checked = subprocess.run(
        [sys.executable, "-c", BRUTE_FORCE, str(model)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert checked.returncode == 0, checked.stderr[-3000:]
    result = json.loads(checked.stdout.strip().splitlines()[-1])
    assert result["combinations"] > 1000 and len(result["brute"]) > 3, result
    assert result["programs"] > 0, result  # the capacity bound: integer programs solved
    assert result["solved"] == result["brute"], result
