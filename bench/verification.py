"""What ``verify:`` costs and catches on real FINN. Prints markdown tables.

    .venv/bin/python bench/verification.py [--model tfc|cnv] [--fps N] [--inputs N]
    .venv/bin/python bench/verification.py --blueprint blueprints/mobilenet/mobilenet.blueprint.yaml
    .venv/bin/python bench/verification.py --catch [--trials N]

Sweep (default): bench/explore.py's sweep (48 designs with the default --fps 6) explored
without and with ``verify: {inputs: N}`` on an empty cache, then each fully cached, then
the verified one again with other inputs (``seed: 1``: verified again from the entries'
last models, nothing rebuilt), in one run.

``--blueprint FILE``: the blueprint as it is (its own ``verify:``) against the same with
``verify: false``, each on an empty cache (a child blueprint in a scratch folder extends
it; the folder's conftest.py is copied beside it, so its steps are registered); designs
may fail their ``expect:`` bounds.

``--catch``: TFC built through the estimate pipeline; one weight of its first MVAU
(a nonzero one, drawn --trials times) negated; how many of 2,000 random inputs give
another output, and the chance that N random inputs miss it.

Each verified run reports: wall time, FINN's seconds (from the entries), the seconds
spent verifying (from the records: the golden, the models executed), how many models
were executed and how many answered from a model computing the same (another folding),
the vectors compared, and the steps "not executed" (skipped with a reason).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from explore import CORES, FPS, ROOT, manifests, run_pytest, sweep_blueprint  # noqa: E402


def records(cache: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (cache / "v1" / "verify").glob("*/*.json")]


def verify_facts(found: list[dict]) -> dict[str, float]:
    """What the verification records of one run say."""
    steps = [s for r in found for s in r.get("steps", [])]
    executed = [s for s in steps if "seconds" in s]
    shared = [s for s in executed if (s.get("execution") or {}).get("shared")]
    return {
        "records": len(found),
        "seconds": sum(r.get("seconds", 0.0) for r in found),
        "golden": sum(r.get("golden_seconds", 0.0) for r in found),
        "executed": len(executed) - len(shared),
        "shared": len(shared),
        "execute_seconds": sum(s["seconds"] for s in executed),
        "not_executed": sum(1 for s in steps if s["status"] == "skipped"),
        "failed": sum(1 for r in found if r.get("status") == "failed"),
        "vectors": max((r.get("vectors", 0) for r in found), default=0),
    }


def where_seconds_go(found: list[dict]) -> dict[str, list[float]]:
    """Verification seconds by the step whose model was executed."""
    by_step: dict[str, list[float]] = {}
    for record in found:
        for step in record.get("steps", []):
            if "seconds" in step:
                by_step.setdefault(step["step"], []).append(step["seconds"])
    return by_step


def finn_seconds_by_step(cache: Path) -> dict[str, float]:
    total: dict[str, float] = {}
    for manifest in manifests(cache):
        for name, seconds in (manifest.get("step_seconds") or {}).items():
            total[name] = total.get(name, 0.0) + float(seconds)
    return total


def sweep(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bs-verify-") as tmp:
        for verify in (False, True):
            folder = Path(tmp) / ("verify" if verify else "none")
            folder.mkdir()
            extra = f"verify:\n  inputs: {args.inputs}\n" if verify else ""
            sweep_blueprint(folder, args.fps, args.model, name="verify", extra=extra)
            cache = folder / "cache"
            runs = ["empty cache", "fully cached"] + (["other inputs (seed: 1)"] if verify else [])
            seen: set[Path] = set()
            for what in runs:
                if what.startswith("other inputs"):
                    blueprint = folder / "sweep.blueprint.yaml"
                    blueprint.write_text(blueprint.read_text() + "  seed: 1\n")
                seconds, out = run_pytest(folder, cache)
                finn = re.search(r"this run built (\d+) segments.*\(([\d.]+) s of FINN\)", out)
                verified = re.search(r"verification: (\d+) verified", out)
                now = set((cache / "v1" / "verify").glob("*/*.json"))
                facts = verify_facts([json.loads(p.read_text()) for p in now - seen])
                seen = now
                rows.append(
                    (
                        ("with verify" if verify else "without") + f", {what}",
                        seconds,
                        finn.group(1) if finn else "?",
                        finn.group(2) if finn else "?",
                        facts,
                        verified.group(1) if verified else "-",
                    )
                )
    print(
        f"\n{args.model.upper()} sweep, verify inputs {args.inputs}, default pool, {CORES} cores\n"
    )
    print(
        "| run | wall s | segments built | FINN s | verify s (golden) | models executed "
        "(shared) | steps not executed | designs verified |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, seconds, built, finn, f, verified in rows:
        print(
            f"| {name} | {seconds:.1f} | {built} | {finn} | {f['seconds']:.1f} ({f['golden']:.1f}) "
            f"| {f['executed']} ({f['shared']}) | {f['not_executed']} | {verified} |"
        )
    print(f"\nwall time with / without verify, empty cache: {rows[2][1] / rows[0][1]:.2f}x")


def blueprint_runs(args: argparse.Namespace) -> None:
    """The blueprint with its verify: against verify: false."""
    source = args.blueprint.resolve()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bs-verify-") as tmp:
        for verify in (False, True):
            folder = Path(tmp) / ("verify" if verify else "none")
            folder.mkdir()
            conftest = source.parent / "conftest.py"
            if conftest.is_file():
                shutil.copyfile(conftest, folder / "conftest.py")
            child = f"extends: {source}\n" + ("" if verify else "verify: false\n")
            (folder / "b.blueprint.yaml").write_text(child)
            cache = folder / "cache"
            seconds, out = run_pytest(folder, cache, allow_failed=True)
            summary = re.search(r"^=*\s*(\d+ (?:passed|failed|skipped).*?) in [\d.]+s", out, re.M)
            found = records(cache)
            results[verify] = (
                seconds,
                summary.group(1) if summary else "?",
                verify_facts(found),
                where_seconds_go(found),
                finn_seconds_by_step(cache),
            )
    (off, off_summary, _, _, off_steps), (on, on_summary, facts, where, on_steps) = (
        results[False],
        results[True],
    )
    print(f"\n{source.name}: its verify: against verify: false, each on an empty cache\n")
    print("| run | wall s | outcome | FINN s (sum of steps) |")
    print("|---|---|---|---|")
    print(f"| verify: false | {off:.1f} | {off_summary} | {sum(off_steps.values()):.1f} |")
    print(f"| its verify: | {on:.1f} | {on_summary} | {sum(on_steps.values()):.1f} |")
    print(f"\nwall time with / without: {on / off:.2f}x\n")
    print(
        f"verification: {facts['records']} records, {facts['seconds']:.1f} s in all "
        f"(golden {facts['golden']:.1f} s), {facts['executed']} models executed "
        f"({facts['execute_seconds']:.1f} s), {facts['shared']} answered by a model computing "
        f"the same, {facts['vectors']} vectors compared, {facts['not_executed']} steps not "
        f"executed, {facts['failed']} records failed\n"
    )
    print("| step | FINN s without | FINN s with | verify: models executed after it, s |")
    print("|---|---|---|---|")
    for name in sorted(set(off_steps) | set(on_steps), key=lambda n: -on_steps.get(n, 0.0)):
        ran = where.get(name, [])
        print(
            f"| {name} | {off_steps.get(name, 0.0):.1f} | {on_steps.get(name, 0.0):.1f} | "
            + (f"{len(ran)}: {sum(ran):.1f}" if ran else "")
            + " |"
        )


def catch(args: argparse.Namespace) -> None:
    """How often a flipped weight of TFC's first MVAU changes the output."""
    import numpy as np
    from qonnx.core.modelwrapper import ModelWrapper

    from pytest_brainsmith.core.toolchain import finn_registry
    from pytest_brainsmith.finn import execute, reference, runner

    steps = [
        "qonnx_to_finn", "tidy_up", "streamline", "convert_to_hw",
        "minimize_bit_width_initial", "create_dataflow_partition", "specialize_layers",
        "target_fps_parallelization", "apply_folding_config", "minimize_bit_width",
        "generate_estimate_reports",
    ]  # fmt: skip
    model = ROOT / "models" / "tfc_w2a2.onnx"
    registry = finn_registry()
    with tempfile.TemporaryDirectory(prefix="bs-catch-") as tmp:
        out = Path(tmp) / "build"
        done = runner.run_segment(
            path_steps=[registry.step(f"finn:{s}") for s in steps],
            first=0,
            input_model=model,
            config={"fpga_part": "xc7z020clg400-1", "synth_clk_period_ns": 10.0},
            generate_outputs=["estimate_reports"],
            out_dir=out,
            work_dir=Path(tmp) / "work",
        )
        assert done.ok, done.failure
        x = execute.random_inputs(model, 2000, 0)
        golden = reference.prepare(model).run(x).outputs
        path = out / "intermediate_models" / "step_convert_to_hw.onnx"
        rng = np.random.default_rng(0)
        fractions = []
        for _ in range(args.trials):
            wrapper = ModelWrapper(str(path))
            node = next(n for n in wrapper.graph.node if n.op_type.startswith("MVAU"))
            w = wrapper.get_initializer(node.input[1]).copy()
            index = int(rng.choice(np.flatnonzero(np.abs(w) == 1)))
            w.flat[index] = -w.flat[index]
            wrapper.set_initializer(node.input[1], w)
            got = reference.Prepared(wrapper).run(x).outputs
            fractions.append(float((np.abs(got - golden) > 1e-3).any(axis=1).mean()))
    f = np.array(fractions)
    print(
        f"\nTFC, one weight of the first MVAU negated ({args.trials} weights drawn), 2,000 inputs\n"
    )
    print(
        f"vectors whose output changes: min {f.min():.2%}, median {np.median(f):.2%}, "
        f"max {f.max():.2%}\n"
    )
    print("| random inputs | chance to miss (median weight) | chance to miss (worst weight) |")
    print("|---|---|---|")
    for n in (8, 64, 256, 1000):
        print(f"| {n} | {(1 - np.median(f)) ** n:.2e} | {(1 - f.min()) ** n:.2e} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(FPS), default="tfc")
    parser.add_argument("--fps", type=int, default=6, help="target_fps values in the sweep")
    parser.add_argument("--inputs", type=int, default=8, help="random inputs verified")
    parser.add_argument("--blueprint", type=Path, help="a blueprint: its verify: vs none")
    parser.add_argument("--catch", action="store_true", help="flipped weights caught")
    parser.add_argument("--trials", type=int, default=20, help="weights flipped (--catch)")
    args = parser.parse_args()
    if args.catch:
        catch(args)
    elif args.blueprint:
        blueprint_runs(args)
    else:
        sweep(args)


if __name__ == "__main__":
    main()
