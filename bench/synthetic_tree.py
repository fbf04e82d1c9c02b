"""How wall time grows with the size of the tree and the engine's worker processes, on a
synthetic design space: LEVELS branch points of BRANCHES alternative steps each,
every step a registered pure-Python step that burns COST_MS of CPU (through
FINN's builder like any step, on the bundled model). Prints a markdown table.

    .venv/bin/python bench/synthetic_tree.py [--levels 3] [--branches 10] [--cost-ms 20]

Workers are the engine's (`--brainsmith-workers N`): every segment is built in a process
of its own, forked ahead from the zygote (core/launchers/worker_pool.py). Targets (issue 28): at
most 25 ms past the step per segment on one worker (wall time less the steps' burn over
the workers, per segment, start-up included), and two workers at least 1.7x faster than
one. The speed-up is against the first row of the level.
The floor is the CPU time the run measured (every process of it: pytest, the engine,
its workers; ``floor_seconds``) over the cores this process may use: no schedule
finishes sooner. Besides the steps' burn it holds what each segment really costs (FINN's builder
loading and saving the model, a fork) and the run's start-up.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
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

def burn(model, cfg, name):
    end = time.process_time() + COST_S
    while time.process_time() < end:
        pass
    # each step leaves its mark: a model equal to a sibling's would be built once
    # (content keys), and the tree would no longer be the one measured
    model.set_metadata_prop("synthetic_" + name.split("_")[0], name)
    return model

def pytest_brainsmith_register(registry):
    for level in range({levels}):
        for branch in range({branches}):
            name = f"l{{level}}_{{branch}}"
            step = lambda model, cfg, name=name: burn(model, cfg, name)
            step.__name__ = name
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


def cpu_seconds() -> float:
    """User and system CPU of this process's finished children, theirs included."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def floor_seconds(cpu: float) -> float:
    """The least wall time a run that measured ``cpu`` seconds of CPU could take: spread
    over every core this process may use (the engine's process and its workers run at
    once whatever the worker count, so all of them)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return cpu / max(1, cores)


def run(folder: Path, workers: int) -> tuple[float, str, float]:
    """(wall seconds, pytest's output, CPU seconds of every process of the run)."""
    extra = ["--brainsmith-workers", str(workers)]
    cpu = cpu_seconds()
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
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    return seconds, done.stdout, cpu_seconds() - cpu


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
        "| floor: CPU / cores [s] | past the floor per segment [ms] "
        "| past the step per segment [ms] | CPU per segment [ms] |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for levels in args.only_levels or range(1, args.levels + 1):
        designs = args.branches**levels
        segments = sum(args.branches**n for n in range(1, levels + 1))
        first = None
        for workers in args.workers:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / "p"
                project(folder, levels, args.branches, args.cost_ms)
                seconds, out, cpu = run(folder, workers)
            first = first or seconds
            built = re.search(r"this run built (\d+) segments", out)
            forks = re.search(r"(\d+) worker process\(es\) started", out)
            floor = floor_seconds(cpu)
            # wall time past the CPU floor, per segment (start-up included)
            past_floor = (seconds - floor) / segments * 1000
            # wall time past the steps' burn over the workers, per segment and worker
            past_step = (seconds - segments * args.cost_ms / 1000 / workers) * workers / segments
            print(
                f"| {levels} | {designs} | {segments} | {workers} | "
                f"{forks.group(1) if forks else '?'} | {seconds:.1f} | "
                f"{built.group(1) if built else '?'} | {first / seconds:.2f}x | {floor:.1f} | "
                f"{past_floor:.0f} | {past_step * 1000:.0f} | {cpu / segments * 1000:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
