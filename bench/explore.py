"""Wall time of exploring the bundled blueprints, against building every design
from scratch.

    .venv/bin/python bench/explore.py [BLUEPRINT_DIR]

(a) every design built from scratch by FINN's builder, one after another in one
    process (FINN imported once, not counted);
(b) `pytest blueprints/` on an empty cache (a new process: includes FINN's import);
(c) the same with `-n 2` (pytest-xdist, two workers sharing the cache);
(d) `pytest blueprints/` again, everything cached.
Also counts designs, segments built and FINN steps run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_brainsmith import finn_runner  # noqa: E402
from pytest_brainsmith.blueprint import load_design_space  # noqa: E402
from pytest_brainsmith.registry import finn_registry  # noqa: E402
from pytest_brainsmith.tree import build_execution_tree  # noqa: E402


def trees(folder: Path) -> list:
    result = []
    for path in sorted(folder.glob("*.blueprint.yaml")):
        space = load_design_space(path, finn_registry())
        if space is not None:
            result.append(build_execution_tree(space))
    return result


def from_scratch(all_trees: list, scratch: Path) -> tuple[float, int]:
    finn_runner.import_finn()
    start = time.perf_counter()
    count = 0
    for tree in all_trees:
        for leaf in tree.designs():
            out = scratch / f"d{count}"
            outcome = finn_runner.run_segment(
                path_steps=leaf.path_steps(),
                first=0,
                input_model=tree.space.model,
                config=leaf.config(),
                generate_outputs=tree.space.generate_outputs,
                out_dir=out / "build",
                work_dir=out / "work",
            )
            assert outcome.ok, outcome.failure
            count += 1
    return time.perf_counter() - start, count


def run_pytest(folder: Path, cache: Path, *extra: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(folder),
            "-q",
            "-p",
            "no:cacheprovider",
            "--brainsmith-cache",
            str(cache),
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"pytest failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


def built_count(out: str) -> str:
    match = re.search(r"this run built (\d+) segments", out)
    return match.group(1) if match else "0"


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "blueprints"
    all_trees = trees(folder)
    designs = sum(t.stats().designs for t in all_trees)
    segments = sum(1 for t in all_trees for s in t.segments() if s.steps)
    executed = sum(t.stats().steps_executed for t in all_trees)
    naive = sum(t.stats().steps_naive for t in all_trees)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        scratch_s, _ = from_scratch(all_trees, tmp_path / "scratch")
        cold_s, cold_out = run_pytest(folder, tmp_path / "cache")
        warm_s, warm_out = run_pytest(folder, tmp_path / "cache")
        par_s, par_out = run_pytest(folder, tmp_path / "cache-n2", "-n", "2")
    rows = [
        ("designs", designs),
        ("segments with steps (built once each)", segments),
        (
            "FINN steps run: tree / one build per design",
            f"{executed} / {naive} ({100 * (1 - executed / naive):.0f}% saved)",
        ),
        ("(a) every design from scratch, FINN builder, one process [s]", f"{scratch_s:.1f}"),
        ("(b) pytest blueprints/, empty cache [s] (incl. FINN import)", f"{cold_s:.1f}"),
        ("    segments built in (b)", built_count(cold_out)),
        ("(c) pytest blueprints/ -n 2, empty cache [s]", f"{par_s:.1f}"),
        ("(d) pytest blueprints/, fully cached [s]", f"{warm_s:.2f}"),
        ("    segments built in (d)", built_count(warm_out)),
        ("(a) / (b)", f"{scratch_s / cold_s:.2f}x"),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
