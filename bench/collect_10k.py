"""Collection time of a 10,000-design blueprint (issue: under 2 s on this machine).

    .venv/bin/python bench/collect_10k.py

Writes a blueprint of 10,080 designs (a backend choice and six FINN sweeps), then
times `pytest --collect-only -q` on it in a fresh process (wall clock, best of 3),
and reports how much of that is pytest's own start-up.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLUEPRINT = """
model: {model}
fpga_part: xc7z020clg400-1
clock_ns: 10
design_space:
  kernels:
    - MVAU: [hls, rtl]
  finn_config:
    standalone_thresholds: [false, true]
    target_fps: [{fps}]
    mvau_wwidth_max: [{widths}]
    folding_two_pass_relaxation: [false, true]
    minimize_bit_width: [false, true]
    synth_clk_period_ns: [5.0, 10.0, 12.5]
"""


def timed(args: list[str], cwd: Path) -> tuple[float, str]:
    best, out = float("inf"), ""
    for _ in range(3):
        start = time.perf_counter()
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
        best = min(best, time.perf_counter() - start)
        out = done.stdout
    return best, out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fps = ", ".join(str(1000 * (i + 1)) for i in range(42))
        widths = ", ".join(str(36 + 12 * i) for i in range(5))
        text = BLUEPRINT.format(model=ROOT / "models" / "tfc_w2a2.onnx", fps=fps, widths=widths)
        (folder / "big.blueprint.yaml").write_text(text)
        (folder / "empty.blueprint.yaml").write_text("abstract: true\n")
        base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q"]
        seconds, out = timed([*base, "big.blueprint.yaml"], folder)
        summary = [line for line in out.splitlines() if "collected" in line]
        empty, _ = timed([*base, "empty.blueprint.yaml"], folder)
    print("| what | seconds |\n|---|---|")
    print(f"| pytest --collect-only, {summary[-1] if summary else '?'} | {seconds:.2f} |")
    print(f"| pytest --collect-only on an empty blueprint (start-up) | {empty:.2f} |")
    print(f"| collection of the designs alone | {seconds - empty:.2f} |")


if __name__ == "__main__":
    main()
