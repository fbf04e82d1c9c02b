"""MobileNet-v1 (4-bit, 224x224, fixed-seed random weights) explored on real FINN:
the execution tree against one FINN build per design. Prints markdown.

    flock -x /tmp/finn.lock .venv/bin/python bench/mobilenet.py [--scratch N]

The sweep: MVAU hls|rtl x target_fps 500|2000|8000 x mvau_wwidth_max 36|144 on a
ZCU104-class part (xczu7ev) at 200 MHz: 12 designs through the estimates, with the
project's MobileNet steps (pytest_brainsmith/finn/mobilenet_steps.py) registered from
the sweep's conftest.py. Each run on an empty cache:

(a) each design from scratch with FINN's ``build_dataflow_cfg`` (every step, one
    process, FINN imported before the clock), every design by default: the headline
    (a)/(b) is measured. With ``--scratch N`` only N designs are built (one takes
    minutes) and (a) is extrapolated to the sweep by their mean: labelled as an
    estimate and never compared with the target;
(b) the tree on the engine's default pool (`pytest DIR`);
(b1) the same with one worker (`--brainsmith-workers 1`).

Also: the peak memory each worker added to what it shared with the engine's process
(the engine's ``memory.json``) and the workers the budget would allow at once on this
machine; disk per cache entry by depth and per design (its path's entries); the time
to the first design's result; collection time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from explore import (  # noqa: E402
    CORES,
    ROOT,
    critical_path,
    finn_import_seconds,
    manifests,
    run_pytest,
)

from pytest_brainsmith.core.memory_budget import MEMORY_FILE, MemoryBudget  # noqa: E402
from pytest_brainsmith.finn import mobilenet_steps  # noqa: E402

STEPS = """    - qonnx_to_finn
    - tidy_up
    - mobilenet_streamline
    - mobilenet_lower_convs
    - mobilenet_convert_to_hw
    - create_dataflow_partition
    - specialize_layers
    - target_fps_parallelization
    - apply_folding_config
    - mobilenet_weights_to_uram
    - minimize_bit_width
    - generate_estimate_reports
"""
CONFTEST = """
from pytest_brainsmith.finn.mobilenet_steps import register

def pytest_brainsmith_register(registry):
    register(registry)
"""


def model_file(name: str) -> Path:
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_models import ensure_model

    return ensure_model(name, ROOT / "build" / "models")


def sweep(folder: Path, model: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "conftest.py").write_text(CONFTEST)
    path = folder / "mobilenet_sweep.blueprint.yaml"
    path.write_text(
        f"""name: mobilenet-sweep
model: {model}
fpga_part: xczu7ev-ffvc1156-2-e
clock_ns: 5.0
finn_config:
  standalone_thresholds: true
design_space:
  steps:
{STEPS}  kernels:
    - MVAU: [hls, rtl]
  finn_config:
    target_fps: [500, 2000, 8000]
    mvau_wwidth_max: [36, 144]
"""
    )
    return path


def from_scratch(blueprint: Path, scratch: Path, count: int | None) -> tuple[float, int, int]:
    """``count`` designs (all: None), each with FINN's build_dataflow_cfg from the model:
    (seconds, designs in the sweep, designs built)."""
    from pytest_brainsmith.core.blueprint import load_design_space
    from pytest_brainsmith.core.toolchain import finn_registry
    from pytest_brainsmith.core.tree import build_execution_tree
    from pytest_brainsmith.finn import runner as finn_runner

    finn_runner.import_finn()
    registry = finn_registry()
    mobilenet_steps.register(registry)
    space = load_design_space(blueprint, registry)
    leaves = list(build_execution_tree(space).designs())
    started = time.perf_counter()
    chosen = leaves if count is None else leaves[:count]
    for i, leaf in enumerate(chosen):  # FINN's builder from the model, every step
        outcome = finn_runner.run_segment(
            path_steps=leaf.path_steps(),
            first=0,
            input_model=space.model,
            config=leaf.config(),
            generate_outputs=space.generate_outputs,
            out_dir=scratch / f"d{i}" / "build",
            work_dir=scratch / f"d{i}" / "work",
        )
        assert outcome.ok, outcome.failure
    return time.perf_counter() - started, len(leaves), len(chosen)


def first_result_seconds(store: Path) -> float:
    """The first design's result: the wall time of the first item reported (it waits
    from the first item's start, right after collection, for its design)."""
    with sqlite3.connect(store) as db:
        (seconds,) = db.execute(
            "SELECT wall_seconds FROM designs ORDER BY recorded, rowid LIMIT 1"
        ).fetchone()
    return float(seconds)


def disk(cache: Path) -> tuple[dict[int, list[int]], float]:
    """Entry bytes by depth, and the mean bytes of a design's path (its entries)."""
    found = manifests(cache)
    by_depth: dict[int, list[int]] = {}
    sizes = {}
    for m in found:
        by_depth.setdefault(m["segment"].count("::") - 1, []).append(m["bytes"])
        sizes[m["segment"]] = m["bytes"]
    leaves = [s for s in sizes if not any(o != s and o.startswith(s + "::") for o in sizes)]
    per_design = [
        sum(b for seg, b in sizes.items() if leaf == seg or leaf.startswith(seg + "::"))
        for leaf in leaves
    ]
    return by_depth, sum(per_design) / max(1, len(per_design))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--scratch",
        type=int,
        default=None,
        help="designs built in (a) (default: all; fewer makes (a) an extrapolated estimate)",
    )
    parser.add_argument(
        "--model",
        default="mobilenet",
        choices=["mobilenet", "mobilenet_tiny"],
        help="mobilenet_tiny: the reduced network, to try the script quickly",
    )
    args = parser.parse_args()
    model = model_file(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        blueprint = sweep(tmp_path / "bp", model)
        collect_s, collect_out = run_pytest(blueprint.parent, tmp_path / "none", "--collect-only")
        store = tmp_path / "pool.sqlite"
        pool_s, pool_out = run_pytest(
            blueprint.parent, tmp_path / "pool", "--brainsmith-results", str(store)
        )
        first_s = first_result_seconds(store)
        one_s, one_out = run_pytest(blueprint.parent, tmp_path / "one", "--brainsmith-workers", "1")
        scratch_s, designs, built = from_scratch(blueprint, tmp_path / "scratch", args.scratch)
        by_depth, per_design = disk(tmp_path / "pool")
        found = manifests(tmp_path / "pool")
        unique, path_s = sum(m["seconds"] for m in found), critical_path(found)
        import_s = finn_import_seconds()
        floor = max(unique / CORES, path_s) + import_s + collect_s
        peaks = json.loads((tmp_path / "pool" / "v1" / MEMORY_FILE).read_text())
        budget = MemoryBudget(tmp_path / "pool" / "v1")
        durations = json.loads((tmp_path / "pool" / "v1" / "durations.json").read_text())
        shutil.rmtree(tmp_path / "scratch", ignore_errors=True)

    scratch_all = scratch_s / built * designs
    estimated = built < designs
    print("| measure | value |\n|---|---|")
    rows = [
        ("designs", str(designs)),
        ("collection (`pytest --collect-only`, fresh process) [s]", f"{collect_s:.1f}"),
        (
            "(a) each design from scratch, build_dataflow_cfg [s]",
            f"ESTIMATE {scratch_all:.0f} (not measured: extrapolated from {built} of "
            f"{designs} designs, {scratch_s:.1f} s)"
            if estimated
            else f"{scratch_all:.0f} (all {designs} designs built)",
        ),
        (f"(b) tree, default pool ({CORES} cores) [s]", f"{pool_s:.1f}"),
        ("(b1) tree, one worker [s]", f"{one_s:.1f}"),
        (
            "(a)/(b) (target >= 6x)",
            f"not measured (--scratch {built} of {designs} designs); the extrapolated "
            f"{scratch_all / pool_s:.2f}x is an estimate, not compared with the target"
            if estimated
            else f"{scratch_all / pool_s:.2f}x ({'met' if scratch_all / pool_s >= 6 else 'missed'})",
        ),
        ("(b1)/(b) (target >= 1.7x)", f"{one_s / pool_s:.2f}x"),
        (
            f"(e) floor: max(unique work / {CORES}, critical path) + FINN import + pytest start-up [s]",
            f"{floor:.1f} (unique {unique:.1f}, critical path {path_s:.1f}, "
            f"import {import_s:.1f}, start-up {collect_s:.1f}); (b)/(e) {pool_s / floor:.2f}x, "
            f"best possible (b1)/(b) {(unique + import_s + collect_s) / floor:.2f}x",
        ),
        (
            "peak memory a worker added, by step (largest) [MB]",
            ", ".join(
                f"{k} {v / 2**20:.0f}" for k, v in sorted(peaks.items(), key=lambda kv: -kv[1])[:4]
            ),
        ),
        (
            "workers the memory budget allows at the largest peak",
            f"{budget.workers(64)} (usable {budget.usable / 2**30:.1f} GiB)"
            if budget.usable
            else "n/a",
        ),
        (
            "FINN seconds by step (last build)",
            ", ".join(
                f"{k} {v:.1f}" for k, v in sorted(durations.items(), key=lambda kv: -kv[1])[:6]
            ),
        ),
        ("disk per design (its path's entries) [MB]", f"{per_design / 1e6:.1f}"),
    ]
    for depth, sizes in sorted(by_depth.items()):
        rows.append(
            (
                f"disk per entry at depth {depth} ({len(sizes)} entries)",
                f"{sum(sizes) / len(sizes) / 1e6:.1f} MB avg, {sum(sizes) / 1e6:.0f} MB total",
            )
        )
    rows.append(("(b): first design's result after the session started [s]", f"{first_s:.1f}"))
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
