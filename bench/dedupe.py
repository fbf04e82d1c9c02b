"""What content dedupe saves on real FINN: sweeps whose choices sometimes change nothing.

- ``tfc``: the bundled TFC sweep (blueprints/tfc_sweep.blueprint.yaml: MVAU hls|rtl x
  target_fps 50k|100k|400k x mvau_wwidth_max 36|72, 12 designs) on TFC w2a2, where the
  rtl MVAU is used for one layer: only leaf designs coincide (two mvau_wwidth_max at
  50k fps fold alike);
- ``tfc_w1a1``: the same sweep on TFC with 1-bit weights and activations, where FINN
  builds MVAU_hls whatever backend is asked: every rtl subtree is the hls one;
- ``lfc``: the newcomer's case (issue 29), LFC w1a1 (784-1024-1024-1024-10) with
  MVAU hls|rtl x VVAU hls|rtl (it has no VVAU) x target_fps 10k|50k|200k: 12 designs,
  3 different ones.

Each is run with pytest on an empty cache (the engine's default pool), then again warm;
with ``--baseline SRC`` (a checkout of pytest-brainsmith before content dedupe, e.g. the
commit before it) the cold run is repeated with that code on another empty cache.
Prints a markdown table: designs, designs equal to an earlier one, segments built
(and by the baseline), FINN seconds (recorded per build), wall seconds.

    .venv/bin/python bench/dedupe.py [--case tfc tfc_w1a1 lfc] [--baseline SRC]

Models other than the bundled TFC are exported by scripts/make_models.py into
build/models on first use.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SWEEP = """extends: base.yaml
name: {name}
model: {model}
design_space:
  kernels:
{kernels}
  finn_config:
{sweeps}
"""
CASES = {
    "tfc": ("tfc", "    - MVAU: [hls, rtl]\n    - Thresholding", None),
    "tfc_w1a1": ("tfc_w1a1", "    - MVAU: [hls, rtl]\n    - Thresholding", None),
    "lfc": (
        "lfc",
        "    - MVAU: [hls, rtl]\n    - VVAU: [hls, rtl]\n    - Thresholding",
        "    target_fps: [10000, 50000, 200000]",
    ),
}
TFC_SWEEPS = "    target_fps: [50000, 100000, 400000]\n    mvau_wwidth_max: [36, 72]"


def model_file(name: str) -> Path:
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_models import MODELS

    if name == "tfc":
        return ROOT / "models" / MODELS[name][2]
    target = ROOT / "build" / "models" / MODELS[name][2]
    if not target.is_file():  # a process of its own: torch beside FINN is kept apart
        script = ROOT / "scripts" / "make_models.py"
        cmd = [sys.executable, str(script), "--model", name, str(target.parent)]
        subprocess.run(cmd, check=True, capture_output=True)
    return target


def project(folder: Path, case: str) -> Path:
    model, kernels, sweeps = CASES[case]
    folder.mkdir(parents=True)
    shutil.copyfile(ROOT / "blueprints" / "base.yaml", folder / "base.yaml")
    shutil.copyfile(model_file(model), folder / "model.onnx")
    models = folder.parent / "models"  # the model base.yaml names (each file is checked)
    if not models.exists():
        models.symlink_to(ROOT / "models")
    blueprint = folder / f"{case}.blueprint.yaml"
    blueprint.write_text(
        SWEEP.format(name=case, model="model.onnx", kernels=kernels, sweeps=sweeps or TFC_SWEEPS)
    )
    return blueprint


def run(blueprint: Path, cache: Path, source: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            blueprint.name,
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::UserWarning",
            "--brainsmith-cache",
            str(cache),
            "--brainsmith-results",
            "none",
        ],
        cwd=blueprint.parent,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(source)},
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pytest failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


def figures(stdout: str) -> dict[str, float]:
    built = re.search(r"this run built (\d+) segments, \d+ failed \(([\d.]+) s of FINN\)", stdout)
    designs = re.search(r"designs: (\d+) passed", stdout)
    equal = re.search(r"equivalent designs: (\d+) equal", stdout)
    assert built and designs, stdout
    return {
        "designs": int(designs[1]),
        "equal": int(equal[1]) if equal else 0,
        "built": int(built[1]),
        "finn": float(built[2]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--baseline", type=Path, help="a checkout without content dedupe")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-dedupe-") as tmp:
        for case in args.case:
            blueprint = project(Path(tmp) / case, case)
            cold, out = run(blueprint, Path(tmp) / f"{case}-cache", ROOT)
            found = figures(out)
            line = next((x for x in out.splitlines() if x.startswith("equivalent designs")), "")
            warm, again = run(blueprint, Path(tmp) / f"{case}-cache", ROOT)
            assert figures(again)["built"] == 0, again
            row = [case, found["designs"], found["equal"], found["built"]]
            base = None
            if args.baseline is not None:
                seconds, out = run(blueprint, Path(tmp) / f"{case}-base", args.baseline)
                base = (figures(out), seconds)
                row.append(base[0]["built"])
            row += [f"{found['finn']:.1f}"]
            if base is not None:
                row.append(f"{base[0]['finn']:.1f}")
            row += [f"{cold:.1f}", f"{warm:.2f}"]
            if base is not None:
                row.append(f"{base[1]:.1f}")
            rows.append(row)
            print(f"{case}: {line}", file=sys.stderr)
    head = ["case", "designs", "equal to an earlier one", "segments built"]
    if args.baseline is not None:
        head.append("built without dedupe")
    head.append("FINN s")
    if args.baseline is not None:
        head.append("FINN s without")
    head += ["wall s (cold)", "wall s (warm)"]
    if args.baseline is not None:
        head.append("wall s without")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


if __name__ == "__main__":
    main()
