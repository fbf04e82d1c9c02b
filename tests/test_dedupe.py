"""Content dedupe on real FINN: a choice that changes nothing (``MVAU: rtl`` on TFC with
1-bit weights, where FINN builds MVAU_hls whatever backend is asked) builds the work
below it once, and its designs are reported as equal to the representative in every
view; a warm run imports no FINN. The key scheme's consequences are checked in
process: a child's key is its parent's output content, known once the parent is."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import ROOT, export_model, run_in

#: TFC w1a1 with a backend choice for MVAU (a no-op: every layer is 1-bit) and for VVAU
#: (a no-op: there is no depthwise convolution), 2 target_fps: 8 designs, 2 different.
BLUEPRINT = """
model: tfc.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10
design_space:
  kernels:
    - MVAU: [hls, rtl]
    - VVAU: [hls, rtl]
  finn_config:
    target_fps: [50000, 400000]
"""

CONFTEST = """
import json
import sys
from pathlib import Path


def pytest_sessionfinish(session):
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "finn")
    Path("imported.json").write_text(json.dumps(loaded))
"""


@pytest.fixture(scope="module")
def tfc_w1a1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model("tfc_w1a1", tmp_path_factory.mktemp("models"))


def test_a_choice_that_changes_nothing_is_built_once_and_reported_equal(
    tmp_path: Path, tfc_w1a1: Path
):
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copyfile(tfc_w1a1, folder / "tfc.onnx")
    (folder / "e.blueprint.yaml").write_text(BLUEPRINT)
    (folder / "conftest.py").write_text(CONFTEST)
    args = ("--junitxml", "junit.xml", "--brainsmith-results", "results.sqlite", "-W", "always")
    done = run_in(folder, *args, "--html", "report.html", timeout=600)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "8 passed" in out, out
    # the warnings at collection: both choices can change nothing on this model
    assert "MVAU: [hls, rtl] on tfc.onnx changes nothing: every layer of the model has 1-bit" in out
    assert "VVAU: [hls, rtl] on tfc.onnx changes nothing: the model has no depthwise" in out
    # root, 4 specialize_layers segments (2 MVAU x 2 VVAU, each keyed by its backends), then
    # the target_fps leaves once per output: 2 instead of 8
    assert "this run built 7 segments" in out, out
    assert re.search(r"segments: 7 built, 6 reused", out), out
    assert (
        "equivalent designs: 6 equal an earlier design (2 representatives); "
        "6 segments built once for them" in out
    ), out

    suite = ET.parse(folder / "junit.xml").getroot()
    same = {}
    for case in suite.iter("testcase"):  # a design by its choices
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        full = f"{case.get('classname')}.{case.get('name')}"
        where = re.findall(r"MVAU\[\w+\]|VVAU\[\w+\]|target_fps\[\d+\]", full)
        same["::".join(where)] = (
            props.get("brainsmith.equivalent_to"),
            props.get("brainsmith.equivalence"),
        )
    assert len(same) == 8, same
    representative = (
        "e.blueprint.yaml::qonnx_to_finn..create_dataflow_partition::"
        "MVAU[hls]::VVAU[hls]::target_fps[50000]"
    )
    assert same["MVAU[hls]::VVAU[hls]::target_fps[50000]"] == (None, None)
    assert same["MVAU[rtl]::VVAU[hls]::target_fps[50000]"] == (
        representative,
        "MVAU=rtl changed nothing after specialize_layers: same model as MVAU=hls",
    )
    assert same["MVAU[rtl]::VVAU[rtl]::target_fps[50000]"] == (
        representative,
        "MVAU=rtl changed nothing after specialize_layers: same model as MVAU=hls; "
        "VVAU=rtl changed nothing after specialize_layers: same model as VVAU=hls",
    )
    assert sum(1 for rep, _ in same.values() if rep) == 6

    with sqlite3.connect(folder / "results.sqlite") as db:
        rows = db.execute("SELECT design, equivalent_to FROM designs").fetchall()
    assert sum(1 for _, rep in rows if rep) == 6
    assert {rep for _, rep in rows if rep} == {
        d for d, rep in rows if rep is None
    }  # every representative is a design of the run, pointing nowhere
    page = (folder / "report.html").read_text()
    assert "representative design" in page and "(equals " in page

    done = run_in(folder, *args)  # warm: the keys come from the manifests, no FINN
    assert done.returncode == 0, done.stdout + done.stderr
    assert "this run built 0 segments" in done.stdout, done.stdout
    assert "equivalent designs: 6 equal an earlier design" in done.stdout, done.stdout
    assert json.loads((folder / "imported.json").read_text()) == []


def test_a_childs_key_is_its_parents_output_content(tmp_path: Path):
    """Two parents whose outputs are byte-identical give their children one key; the key
    of a segment below an unbuilt one is not known; the cache's manifests make it known
    to a later engine (no build)."""
    from pytest_brainsmith.core.blueprint import load_design_space
    from pytest_brainsmith.core.cache import SegmentCache
    from pytest_brainsmith.core.engine import Engine
    from pytest_brainsmith.core.toolchain import finn_registry
    from pytest_brainsmith.core.tree import build_execution_tree

    shutil.copyfile(ROOT / "models" / "tfc_w2a2.onnx", tmp_path / "tfc.onnx")
    (tmp_path / "e.blueprint.yaml").write_text(
        "model: tfc.onnx\nfpga_part: xc7z020clg400-1\nclock_ns: 10\n"
        "finn_config: {target_fps: 1000}\ndesign_space:\n  steps:\n"
        "    - qonnx_to_finn\n    - [tidy_up, same_as_tidy_up]\n    - [streamline, ~]\n"
    )

    def same_as_tidy_up(model, cfg):
        from finn.builder.build_dataflow_steps import step_tidy_up

        return step_tidy_up(model, cfg)

    registry = finn_registry()
    registry.register_step(same_as_tidy_up, reads=())
    tree = build_execution_tree(load_design_space(tmp_path / "e.blueprint.yaml", registry))
    designs = list(tree.designs())  # (tidy_up, streamline), (tidy_up, skip), then same_as_...
    engine = Engine(SegmentCache(tmp_path / "cache"), workers=0)
    assert engine.key(designs[0]) is None  # below an unbuilt segment: not known yet
    try:
        outcomes = [engine.design(leaf) for leaf in designs]
    finally:
        engine.shutdown()
    assert [o.status for o in outcomes] == ["passed"] * 4
    first, third = outcomes[0], outcomes[2]
    assert first.keys[1] != third.keys[1]  # the branches: other steps, other keys
    assert first.keys[2] == third.keys[2]  # streamline on the same model: one key, built once
    assert [o.status for o in third.segments] == ["built", "built", "reused"]
    assert [o.equivalent is None for o in outcomes] == [True, True, False, False]
    assert third.equivalent is not None and third.equivalent.design is designs[0]
    assert outcomes[3].equivalent is not None and outcomes[3].equivalent.design is designs[1]
    assert third.equivalent.reason == (
        "tidy_up|same_as_tidy_up=same_as_tidy_up changed nothing after same_as_tidy_up: "
        "same model as tidy_up|same_as_tidy_up=tidy_up"
    )
    later = Engine(SegmentCache(tmp_path / "cache"), workers=0)  # keys from the manifests
    assert later.key(designs[2]) == third.keys[2]
    later.shutdown()
