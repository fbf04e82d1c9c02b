"""How wall time grows with the size of the tree and the engine's worker processes, on a
synthetic design space: LEVELS branch points of BRANCHES alternative steps each,
every step a registered pure-Python step that burns COST_MS of CPU (through
FINN's builder like any step, on the bundled model). Prints a markdown table.

    .venv/bin/python bench/synthetic_tree.py [--levels 3] [--branches 10] [--cost-ms 20]

Workers are the engine's (`--brainsmith-workers N`): every segment is built in a process
of its own, forked ahead from the zygote (core/worker_pool.py). Targets (issue 28): at
most 25 ms of overhead per segment past the step on one worker, and two workers at least
1.7x faster than one. The speed-up is against the first row of the level.
The floor is the step work over the workers: segments x cost / workers (each segment
also pays FINN's builder loading and saving the model, and a fork).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = """
import time

COST_S = {cost}

def burn(model, cfg):
    end = time.process_time() + COST_S
    while time.process_time() < end:
        pass
    return model

def pytest_brainsmith_register(registry):
    for level in range({levels}):
        for branch in range({branches}):
            step = lambda model, cfg: burn(model, cfg)
            step.__name__ = f"l{{level}}_{{branch}}"
            registry.register_step(step, reads=())
"""


def project(folder: Path, levels: int, branches: int, cost_ms: float) -> None:
    folder.mkdir(parents=True)
    shutil.copyfile(ROOT / "models" / "tfc_w2a2.onnx", folder / "tfc.onnx")
    (folder / "conftest.py").write_text(
        CONFTEST.format(cost=cost_ms / 1000, levels=levels, branches=branches)
    )
    alternatives = "\n".join(
        "    - [" + ", ".join(f"l{level}_{b}" for b in range(branches)) + "]"
        for level in range(levels)
    )
    (folder / "synthetic.blueprint.yaml").write_text(
        "model: tfc.onnx\nfpga_part: xc7z020clg400-1\nclock_ns: 10\n"
        "finn_config:\n  target_fps: 1000\n"
        f"design_space:\n  steps:\n{alternatives}\n"
    )


def run(folder: Path, workers: int) -> tuple[float, str]:
    extra = ["--brainsmith-workers", str(workers)]
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--brainsmith-results=none",
            *extra,
        ],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    return time.perf_counter() - start, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--branches", type=int, default=10)
    parser.add_argument("--cost-ms", type=float, default=20.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only-levels", type=int, nargs="*", help="run these levels only")
    args = parser.parse_args()
    print(
        f"steps burn {args.cost_ms:g} ms of CPU each; {args.branches} alternatives per branch point\n"
    )
    print(
        "| levels | designs | segments | workers | processes | wall [s] | built | speed-up "
        "| floor [s] | overhead per segment [ms] |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for levels in args.only_levels or range(1, args.levels + 1):
        designs = args.branches**levels
        segments = sum(args.branches**n for n in range(1, levels + 1))
        first = None
        for workers in args.workers:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / "p"
                project(folder, levels, args.branches, args.cost_ms)
                seconds, out = run(folder, workers)
            first = first or seconds
            built = re.search(r"this run built (\d+) segments", out)
            forks = re.search(r"(\d+) worker process\(es\) started", out)
            floor = segments * args.cost_ms / 1000 / workers
            # wall time past the floor, per segment and worker (start-up included)
            overhead = (seconds - floor) * workers / segments * 1000
            print(
                f"| {levels} | {designs} | {segments} | {workers} | "
                f"{forks.group(1) if forks else '?'} | {seconds:.1f} | "
                f"{built.group(1) if built else '?'} | {first / seconds:.2f}x | {floor:.1f} | "
                f"{overhead:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
