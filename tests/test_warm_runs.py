"""Warm runs on real FINN: a fully cached run of a sweep and of a folding search imports
no FINN (nor Optuna) and starts no worker, asks the same trials, and what the search
kept in the cache is only a shortcut: removed or damaged, it is derived again, the same."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from conftest import MODEL, TFC_BLUEPRINT, run_in

#: A folding search below a target_fps sweep of the same model (its warm start).
FOLDING_BLUEPRINT = """
model: tfc.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10
design_space:
  finn_config:
    target_fps: [10000, 100000]
  folding:
    search: optuna
    trials: 4
    batch: 2
    seed: 3
"""

#: Python checks over the sweep's designs, and what the session imported, at its end.
CHECKS = """
import pytest


@pytest.mark.brainsmith("sweep.blueprint.yaml", where={"MVAU": "rtl"})
def test_rtl_uses_dsp(design):
    assert design.estimates["DSP"] > 0
"""

CONFTEST = """
import json
import sys
from pathlib import Path


def pytest_sessionfinish(session):
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("finn", "optuna"))
    Path("imported.json").write_text(json.dumps(loaded))
"""


def run(folder: Path):
    done = run_in(folder, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    workers = re.search(r"(\d+) worker process\(es\) started", done.stdout)
    assert workers, done.stdout
    imported = json.loads((folder / "imported.json").read_text())
    trials = {
        path.name: json.loads(path.read_text())
        for path in (folder / "build" / "brainsmith" / "foldings").rglob("trial-*.json")
    }
    return done, int(workers[1]), imported, trials


def test_a_fully_cached_run_imports_no_finn_and_starts_no_worker(tmp_path: Path):
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copyfile(MODEL, folder / "tfc.onnx")
    (folder / "sweep.blueprint.yaml").write_text(TFC_BLUEPRINT)
    (folder / "folding.blueprint.yaml").write_text(FOLDING_BLUEPRINT)
    (folder / "test_checks.py").write_text(CHECKS)
    (folder / "conftest.py").write_text(CONFTEST)

    done, workers, imported, first = run(folder)  # cold: everything is built
    assert workers > 0 and "finn.builder.build_dataflow" in imported
    assert "this run built 0 segments" not in done.stdout
    assert "folding search folding.blueprint.yaml::" in done.stdout, done.stdout
    assert first, done.stdout  # the front's foldings, written as FINN folding JSON

    done, workers, imported, again = run(folder)  # warm: nothing built, nothing imported
    assert "this run built 0 segments" in done.stdout, done.stdout
    assert "12 passed" in done.stdout, done.stdout  # 4 + 2 designs, 4 trials, 2 checks
    assert workers == 0
    assert imported == [], imported
    assert again == first

    # what the search kept is a shortcut only: damaged or missing, it is derived again
    records = folder / "build" / "brainsmith" / "cache" / "v1" / "searches"
    derived = next(records.glob("derived-*.json"))
    record = json.loads(derived.read_text())
    record["value"]["proposals"] = []  # edited: its checksum no longer matches
    derived.write_text(json.dumps(record))
    for asked in records.glob("asked-*.json"):
        asked.unlink()
    (folder / "build" / "brainsmith" / "folding-studies.journal").unlink()
    done, workers, imported, again = run(folder)
    assert "this run built 0 segments" in done.stdout, done.stdout
    assert workers == 0 and "finn.builder.build_dataflow" in imported
    assert again == first
    assert (folder / "build" / "brainsmith" / "folding-studies.journal").stat().st_size > 0

    done, workers, imported, again = run(folder)  # warm again: from the records made
    assert (workers, imported, again) == (0, [], first), done.stdout
