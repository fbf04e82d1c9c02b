"""FINN's own folding (a ``target_fps`` sweep) against the exact folding search
(``design_space.folding``, ``search: exact``), on real FINN. Prints markdown.

    flock /tmp/finn.lock .venv/bin/python bench/folding.py [--model tfc|cnv|mobilenet]
        [--targets N] [--trials N] [--optuna]

``--model cnv``: CNV-w2a2 on the xc7z020 at 10 ns; ``--model mobilenet``: MobileNet-v1
w4a4 on the ZCU104's part at 5 ns with the project's MobileNet steps (the estimate
pipeline of bench/mobilenet.py, registered from a conftest.py in each arm's folder).

(A) FINN's folding: the estimate pipeline with ``target_fps`` swept over N values spaced
    evenly in log scale (FINN's ``target_fps_parallelization``), on an empty cache.
(E) The exact search: the same sweep and, below the same shared steps, the exact search
    (its first designs: the cheapest at each throughput FINN's foldings reached and at
    the network's named targets), on its own empty cache; min LUT (corrected for FINN's
    known estimate gaps) within the part. Its wall time includes the sweep.
(B) with ``--optuna``: the Optuna search alone (NSGA-II, warm-started from the sweep
    designs in the same blueprint) given (A)'s time again.

For each target throughput of the sweep and each named target: the lowest LUT among the
designs of each arm that reach it (FINN's estimate; the exact arm also corrected) with
its BRAM_18K / URAM / DSP; the fastest design that fits the part; the solver's time; the
cost model's agreement with FINN on every design it built. For MobileNet also the
fastest design the model allows with per-layer MVAU backends (HLS or RTL per layer):
a what-if of the model only (a folding cannot change a backend after specialize_layers).
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from explore import CORES, model_file, run_pytest  # noqa: E402

from pytest_brainsmith.core.metrics import RESOURCES  # noqa: E402

#: target_fps range per model (from about all-folded to about fully unfolded)
RANGE = {"tfc": (2_000, 2_000_000), "cnv": (20, 20_000), "mobilenet": (100, 10_000)}
#: named targets (frames/s) whose cheapest design the issue asks for
NAMED = {"tfc": [], "cnv": [868], "mobilenet": [500, 1800]}
PART = {"tfc": "xc7z020clg400-1", "cnv": "xc7z020clg400-1", "mobilenet": "xczu7ev-ffvc1156-2-e"}
CLOCK = {"tfc": 10.0, "cnv": 10.0, "mobilenet": 5.0}


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
            f"fpga_part: {PART[model]}\nclock_ns: {CLOCK[model]}\n"
            "finn_config:\n  standalone_thresholds: true\n"
            f"design_space:\n  steps:\n{STEPS}{sweep}{search}"
        )
        return
    (folder / "fold.blueprint.yaml").write_text(
        f"name: {model}-folding\nmodel: {model_file(model)}\nfpga_part: {PART[model]}\n"
        f"clock_ns: {CLOCK[model]}\ndesign_space:\n{sweep}{search}"  # FINN's estimate pipeline
    )


def designs(store: Path) -> list[dict]:
    """Every design with estimates (passed or an infeasible proposal), with its figures."""
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT design, outcome, estimates, folding FROM designs").fetchall()
    found = []
    for design, outcome, estimates, folding in rows:
        values = json.loads(estimates or "{}")
        if not all(isinstance(values.get(k), int | float) for k in RESOURCES):
            continue
        model = (json.loads(folding) if folding else {}).get("model")
        point = {k: values[k] for k in RESOURCES}
        point["corrected"] = (
            values["LUT"] + model["corrected"]["LUT"] - model["finn"]["LUT"] if model else None
        )
        agrees = None
        if model:
            agrees = all(model["finn"][k] == values[k] for k in RESOURCES) and (
                model["max_cycles"] == values["max_cycles"]
            )
        point.update(
            design=design,
            trial=folding is not None,
            passed=outcome == "passed",
            fps=values["estimated_throughput_fps"],
            agrees=agrees,
        )
        found.append(point)
    return found


def fits(point: dict, capacity: dict) -> bool:
    return all(point[k] <= capacity[k] for k in RESOURCES)


def cheapest(points: list[dict], fps: float, capacity: dict) -> dict | None:
    reaching = [p for p in points if p["fps"] >= fps and fits(p, capacity)]
    return min(reaching, key=lambda p: (p["LUT"], p["BRAM_18K"])) if reaching else None


def cell(point: dict | None, corrected: bool = False) -> str:
    if point is None:
        return "-"
    lut = f"{point['LUT']:,.0f}"
    if corrected and point.get("corrected") is not None:
        lut += f" ({point['corrected']:,.0f})"
    return f"{lut} / {point['BRAM_18K']:,.0f} / {point['URAM']:,.0f} / {point['DSP']:,.0f}"


def arm(tmp: Path, name: str, model: str, fps: list[int], search: str, *extra: str):
    folder = tmp / name
    folder.mkdir()
    blueprint(folder, model, fps, search)
    store = folder / "results.sqlite"
    seconds, out = run_pytest(
        folder, folder / "cache", "--brainsmith-results", str(store), *extra, allow_failed=True
    )
    return seconds, designs(store), out, folder


def backends_what_if(folder: Path, model: str) -> str:
    """The fastest design the cost model allows with per-layer MVAU backends (in this
    process: FINN imported here), against the same model without them."""
    from pytest_brainsmith.core.search.parts import capacity
    from pytest_brainsmith.core.search.solver import Problem, solve_front
    from pytest_brainsmith.finn.cost_model import cost_table
    from pytest_brainsmith.finn.runner import import_finn

    import_finn()
    prefix = next((folder / "cache").rglob("step_specialize_layers.onnx"))
    found = []
    for backends in (False, True):
        table = cost_table(prefix, PART[model], {}, ultra=True, backends=backends)
        solution = solve_front(Problem(table, "LUT", capacity(PART[model])))
        fastest = solution.fastest
        fps = fastest.fps(CLOCK[model]) if fastest else 0.0
        options = sum(len(u["options"]) for u in table["units"])
        found.append(
            f"{'with' if backends else 'without'} per-layer backends: {fps:,.0f} fps "
            f"({options:,} settings, solved in {solution.seconds:.1f} s)"
        )
    return "; ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(RANGE), default="tfc")
    parser.add_argument("--targets", type=int, default=16, help="target_fps values in (A)")
    parser.add_argument("--trials", type=int, default=24, help="designs (E) builds")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--optuna", action="store_true", help="also (B), the Optuna search")
    args = parser.parse_args()
    fps = targets(args.model, args.targets)
    named = NAMED[args.model]
    from pytest_brainsmith.core.search.parts import capacity as part_capacity

    capacity = part_capacity(PART[args.model])
    assert capacity is not None
    exact = (
        f"  folding:\n    trials: {args.trials}\n    batch: {args.batch}\n"
        + (f"    targets: [{', '.join(map(str, named))}]\n" if named else "")
        + "    objectives: [min LUT, max estimated_throughput_fps]\n"
    )
    rows = []
    what_if = ""
    with tempfile.TemporaryDirectory(prefix="bs-folding-") as tmp:
        base = Path(tmp)
        seconds, finn, out_a, _ = arm(base, "finn", args.model, fps, "")
        rows.append(("(A) FINN's folding, target_fps sweep", seconds, finn, out_a))
        seconds_e, found, out_e, folder_e = arm(base, "exact", args.model, fps, exact)
        rows.append(("(E) sweep + exact search", seconds_e, found, out_e))
        if args.optuna:
            search = (
                "  folding:\n    search: optuna\n    trials: 3000\n    batch: 16\n"
                "    seed: 0\n    objectives: [min LUT, max estimated_throughput_fps]\n"
            )
            budget = f"{math.ceil(2 * seconds)}s"
            seconds_b, sampled, out_b, _ = arm(
                base, "optuna", args.model, fps, search, "--brainsmith-budget", budget
            )
            rows.append((f"(B) sweep + Optuna search, budget {budget}", seconds_b, sampled, out_b))
        if args.model == "mobilenet":
            what_if = backends_what_if(folder_e, args.model)
    print(f"\n{args.model.upper()} on {PART[args.model]}, {CLOCK[args.model]} ns, {CORES} cores\n")
    print("| arm | wall s | designs with estimates | trials | fastest that fits the part (fps) |")
    print("|---|---|---|---|---|")
    for name, seconds, points, _ in rows:
        fitting = [p for p in points if fits(p, capacity)]
        fastest = max((p["fps"] for p in fitting), default=0)
        trials = sum(p["trial"] for p in points)
        print(f"| {name} | {seconds:.1f} | {len(points)} | {trials} | {fastest:,.0f} |")
    for line in out_e.splitlines():
        if "exact search:" in line or "cost model and FINN agree" in line:
            print(f"\n(E) {line.strip()}")
    agree = [p["agrees"] for p in found if p["agrees"] is not None]
    print(
        f"\n(E) designs built by the exact search whose FINN estimates equal the model's: "
        f"{sum(agree)} of {len(agree)}"
    )
    names = [r[0].split(")")[0] + ")" for r in rows]
    print(
        "\nLowest LUT (exact arm: FINN's estimate (corrected)) / BRAM_18K / URAM / DSP among "
        "the designs that fit the part and reach each throughput:\n"
    )
    print("| target fps | " + " | ".join(names) + " | LUT vs (A) |")
    print("|---|" + "---|" * (len(rows) + 1))
    worse = 0
    for target in sorted(set(fps) | set(named)):
        points = [cheapest(p, target, capacity) for _, _, p, _ in rows]
        cells = [cell(p, corrected=i > 0) for i, p in enumerate(points)]
        ratios = []
        for p in points[1:]:
            if p and points[0]:
                ratios.append(f"{(p['LUT'] / points[0]['LUT'] - 1) * 100:+.1f}%")
                worse += p["LUT"] > points[0]["LUT"] and target in fps and p is points[1]
            else:
                ratios.append("-")
        mark = " (named)" if target in named else ""
        print(f"| {target:,}{mark} | " + " | ".join(cells) + f" | {' / '.join(ratios)} |")
    print(f"\n(E) worse than (A) in FINN's LUT at {worse} of {len(fps)} sweep targets")
    if what_if:
        print(f"\nMobileNet, the fastest design that fits the part (cost model): {what_if}")


if __name__ == "__main__":
    main()
