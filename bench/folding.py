"""FINN's own folding (a ``target_fps`` sweep) against the folding search
(``design_space.folding``) given the same wall-clock time, on real FINN. Prints markdown.

    .venv/bin/python bench/folding.py [--model tfc|cnv|mobilenet] [--targets N] [--warm]

``--model mobilenet``: MobileNet-v1 w4a4 on a ZCU104-class part at 200 MHz, with the
project's MobileNet steps (the estimate pipeline of bench/mobilenet.py, registered from a
conftest.py in each arm's folder).

(A) FINN's folding: the model's estimate pipeline with ``target_fps`` swept over N
    values spaced evenly in log scale (FINN's ``target_fps_parallelization`` picks one
    folding per value), on an empty cache, the engine's default pool: wall time T.
(B) The folding search: the same pipeline and model, Optuna's NSGA-II on
    [min LUT, max estimated_throughput_fps], on its own empty cache, with
    ``--brainsmith-budget T`` (it stops asking for trials when T has passed).
(C) with ``--warm``: the sweep and the search in one blueprint, the search's first
    generation being FINN's foldings of the sweep (``warm_start``); budget 2T, so the
    search gets about T after the sweep.

For each target throughput of the sweep: the lowest LUT (and BRAM) among the designs
of each arm that reach it; and the hypervolume of each arm's front (LUT against
frames/s, both normalised: LUT by the largest LUT on FINN's front, frames/s by the
largest frames/s of any design; the reference point is (1, 0)).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from explore import CORES, model_file, run_pytest  # noqa: E402

#: target_fps range per model at 100 MHz (from all-folded to about fully unfolded);
#: MobileNet-v1 at 200 MHz
RANGE = {"tfc": (2_000, 2_000_000), "cnv": (20, 20_000), "mobilenet": (100, 10_000)}


def targets(model: str, count: int) -> list[int]:
    low, high = RANGE[model]
    return [round(low * (high / low) ** (i / (count - 1))) for i in range(count)]


def blueprint(folder: Path, model: str, fps: list[int], search: str) -> None:
    sweep = f"  finn_config:\n    target_fps: [{', '.join(map(str, fps))}]\n" if fps else ""
    if model == "mobilenet":
        from mobilenet import CONFTEST, STEPS
        from mobilenet import model_file as mobilenet_file

        (folder / "conftest.py").write_text(CONFTEST)
        (folder / "fold.blueprint.yaml").write_text(
            f"name: mobilenet-folding\nmodel: {mobilenet_file('mobilenet')}\n"
            "fpga_part: xczu7ev-ffvc1156-2-e\nclock_ns: 5\n"
            "finn_config:\n  standalone_thresholds: true\n"
            f"design_space:\n  steps:\n{STEPS}{sweep}{search}"
        )
        return
    (folder / "fold.blueprint.yaml").write_text(
        f"name: {model}-folding\nmodel: {model_file(model)}\nfpga_part: xc7z020clg400-1\n"
        f"clock_ns: 10\ndesign_space:\n{sweep}{search}"  # FINN's estimate pipeline
    )


def designs(store: Path) -> list[dict]:
    with sqlite3.connect(store) as db:
        rows = db.execute(
            "SELECT design, estimates, folding FROM designs WHERE outcome = 'passed'"
        ).fetchall()
    found = []
    for design, estimates, folding in rows:
        values = json.loads(estimates)
        if all(isinstance(values.get(k), int | float) for k in ("LUT", "BRAM_18K")):
            found.append(
                {
                    "design": design,
                    "trial": folding is not None,
                    "LUT": values["LUT"],
                    "BRAM": values["BRAM_18K"],
                    "fps": values["estimated_throughput_fps"],
                }
            )
    return found


def front(points: list[dict]) -> list[dict]:
    best, result = -1.0, []
    for p in sorted(points, key=lambda p: (p["LUT"], -p["fps"])):
        if p["fps"] > best:
            result.append(p)
            best = p["fps"]
    return result


def hypervolume(points: list[dict], lut_ref: float, fps_max: float) -> float:
    """Area dominated by the front within (LUT <= lut_ref, fps >= 0), normalised."""
    area, previous = 0.0, 0.0
    for p in sorted(front(points), key=lambda p: p["fps"]):  # fps ascending, LUT ascending
        if p["LUT"] > lut_ref:
            continue
        area += (1 - p["LUT"] / lut_ref) * (p["fps"] - previous) / fps_max
        previous = p["fps"]
    return area


def cheapest(points: list[dict], fps: float, metric: str) -> float | None:
    reaching = [p[metric] for p in points if p["fps"] >= fps]
    return min(reaching) if reaching else None


def arm(tmp: Path, name: str, model: str, fps: list[int], search: str, *extra: str):
    folder = tmp / name
    folder.mkdir()
    blueprint(folder, model, fps, search)
    store = folder / "results.sqlite"
    seconds, out = run_pytest(
        folder,
        folder / "cache",
        "--brainsmith-results",
        str(store),
        *extra,
        allow_failed=True,
    )
    built = re.search(r"this run built (\d+) segments", out)
    return seconds, designs(store), int(built.group(1)) if built else 0, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(RANGE), default="tfc")
    parser.add_argument("--targets", type=int, default=16, help="target_fps values in (A)")
    parser.add_argument("--trials", type=int, default=3000, help="trial items (B runs until T)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warm", action="store_true", help="also (C): sweep + warm search")
    parser.add_argument("--sampler", choices=["nsga2", "tpe", "random"], default="nsga2")
    parser.add_argument("--cold", action="store_true", help="leave out (B), the cold search")
    args = parser.parse_args()
    fps = targets(args.model, args.targets)
    search = (
        f"  folding:\n    trials: {args.trials}\n    batch: {args.batch}\n    seed: 0\n"
        f"    sampler: {args.sampler}\n"
        "    objectives: [min LUT, max estimated_throughput_fps]\n"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bs-folding-") as tmp:
        base = Path(tmp)
        seconds, finn, built, _ = arm(base, "finn", args.model, fps, "")
        rows.append(("(A) FINN's folding, target_fps sweep", seconds, finn, built))
        budget = f"{math.ceil(seconds)}s"
        if not args.cold:
            seconds_b, found, built_b, _ = arm(
                base, "search", args.model, [], search, "--brainsmith-budget", budget
            )
            rows.append((f"(B) folding search, budget {budget}", seconds_b, found, built_b))
        if args.warm:
            warm = search + "    warm_start: true\n"
            budget_c = f"{math.ceil(2 * seconds)}s"
            seconds_c, both, built_c, _ = arm(
                base, "warm", args.model, fps, warm, "--brainsmith-budget", budget_c
            )
            rows.append((f"(C) sweep + warm search, budget {budget_c}", seconds_c, both, built_c))
    finn_front = front(finn)
    lut_ref = max(p["LUT"] for p in finn_front)
    fps_max = max(p["fps"] for _, _, points, _ in rows for p in points)
    print(f"\n{args.model.upper()}, {len(fps)} target_fps values, {CORES} cores, default pool\n")
    print("| arm | wall s | designs with estimates | segments built | front size | hypervolume |")
    print("|---|---|---|---|---|---|")
    for name, seconds, points, built in rows:
        print(
            f"| {name} | {seconds:.1f} | {len(points)} | {built} | {len(front(points))} "
            f"| {hypervolume(points, lut_ref, fps_max):.4f} |"
        )
    names = [r[0].split(")")[0] + ")" for r in rows]
    print("\nLowest LUT / BRAM_18K among designs reaching each target throughput:\n")
    print("| target fps | " + " | ".join(f"{n} LUT / BRAM" for n in names) + " | LUT vs (A) |")
    print("|---|" + "---|" * (len(rows) + 1))
    for target in fps:
        cells, luts = [], []
        for _, _, points, _ in rows:
            lut, bram = cheapest(points, target, "LUT"), cheapest(points, target, "BRAM")
            luts.append(lut)
            cells.append("-" if lut is None else f"{lut:,.0f} / {bram:,.0f}")
        ratios = [
            f"{(lut / luts[0] - 1) * 100:+.1f}%" if lut and luts[0] else "-" for lut in luts[1:]
        ]
        print(f"| {target:,} | " + " | ".join(cells) + f" | {' / '.join(ratios)} |")
    best = max((p for _, _, pts, _ in rows for p in pts), key=lambda p: p["fps"])
    print(f"\nfastest design of any arm: {best['fps']:,.0f} fps ({best['design']})")


if __name__ == "__main__":
    main()
