"""What the Pareto gate saves on real FINN: a sweep whose pipeline goes on past the
estimates with ``hw_codegen`` (FINN's HLS/RTL code generation, no Vivado needed),
explored without and with ``explore: {pareto: [LUT, estimated_throughput_fps],
before: hw_codegen}``, each with the engine's default pool on an empty cache, in one
run. Prints a markdown table: wall time, segments built, hw_codegen runs, designs.

    .venv/bin/python bench/gates.py [--model tfc|cnv] [--fps N]

The sweep is bench/explore.py's (MVAU hls|rtl x standalone_thresholds x --fps
target_fps values x mvau_wwidth_max 36|72: 48 designs with the default --fps 6); CNV
is built by scripts/make_models.py into build/models on first use.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from explore import CORES, FPS, run_pytest, sweep_blueprint  # noqa: E402

GATE = """explore:
  pareto: [LUT, estimated_throughput_fps]
  before: hw_codegen
"""


def blueprint(folder: Path, model: str, fps_values: int, gate: bool) -> None:
    sweep_blueprint(
        folder,
        fps_values,
        model,
        name="codegen",
        steps="  steps:\n    - at_end: {insert: hw_codegen}\n",
        extra=GATE if gate else "",
    )


def codegen_runs(cache: Path) -> tuple[int, float]:
    """hw_codegen runs in the cache's entries, and their recorded seconds."""
    runs, seconds = 0, 0.0
    for path in (cache / "v1" / "entries").glob("*/*/manifest.json"):
        manifest = json.loads(path.read_text())
        if any(step.endswith(":hw_codegen") for step in manifest["steps"]):
            runs += 1
            seconds += sum(
                v for k, v in manifest.get("step_seconds", {}).items() if "hw_codegen" in k
            )
    return runs, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(FPS), default="tfc")
    parser.add_argument("--fps", type=int, default=6, help="target_fps values in the sweep")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bs-gates-") as tmp:
        for gate in (False, True):
            folder = Path(tmp) / ("gate" if gate else "none")
            folder.mkdir()
            blueprint(folder, args.model, args.fps, gate)
            cache = folder / "cache"
            # FINN's own folding can fail hw_codegen (e.g. SIMD >= MW / 1024 on CNV):
            # failed designs are part of the result
            seconds, out = run_pytest(folder, cache, "-rs", allow_failed=True)
            built = int(re.search(r"this run built (\d+) segments", out).group(1))
            outcome = re.search(r"designs: (\d+) passed, (\d+) failed, (\d+) skipped", out)
            runs, codegen_seconds = codegen_runs(cache)
            saved = re.search(r"gates saved: (.*)", out)
            rows.append(
                (
                    "with the Pareto gate" if gate else "without gates",
                    seconds,
                    built,
                    runs,
                    codegen_seconds,
                    outcome.groups() if outcome else ("?", "?", "?"),
                    saved.group(1) if saved else "",
                )
            )
    designs = sum(int(n) for n in rows[0][5])
    print(
        f"\n{args.model.upper()} sweep, {designs} designs + hw_codegen, default pool, {CORES} cores\n"
    )
    print("| | wall s | segments built | hw_codegen runs (s) | passed / failed / skipped |")
    print("|---|---|---|---|---|")
    for name, seconds, built, runs, codegen_seconds, (passed, failed, skipped), _ in rows:
        print(
            f"| {name} | {seconds:.1f} | {built} | {runs} ({codegen_seconds:.1f}) "
            f"| {passed} / {failed} / {skipped} |"
        )
    (_, base, *_), (_, gated, *_) = rows
    print(f"\nwall time without / with the gate: {base / gated:.2f}x")
    if rows[1][6]:
        print(f"summary: gates saved: {rows[1][6]}")


if __name__ == "__main__":
    main()
