"""What ``verify:`` costs on real FINN: bench/explore.py's sweep (48 designs with the
default --fps 6) explored without and with ``verify: {inputs: N}`` on an empty cache,
then each fully cached, then the verified one again with other inputs (``seed: 1``:
verified again, nothing rebuilt), in one run. Prints a markdown table: wall time, FINN
seconds, the seconds spent verifying (from the records), designs verified.

    .venv/bin/python bench/verification.py [--model tfc|cnv] [--fps N] [--inputs N]
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


def verify_seconds(cache: Path) -> tuple[int, float]:
    """Verification records in the cache and the seconds their verification took."""
    records = [json.loads(p.read_text()) for p in (cache / "v1" / "verify").glob("*/*.json")]
    return len(records), sum(r.get("seconds", 0.0) for r in records)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(FPS), default="tfc")
    parser.add_argument("--fps", type=int, default=6, help="target_fps values in the sweep")
    parser.add_argument("--inputs", type=int, default=8, help="random inputs verified")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bs-verify-") as tmp:
        for verify in (False, True):
            folder = Path(tmp) / ("verify" if verify else "none")
            folder.mkdir()
            extra = f"verify:\n  inputs: {args.inputs}\n" if verify else ""
            sweep_blueprint(folder, args.fps, args.model, name="verify", extra=extra)
            cache = folder / "cache"
            runs = ["empty cache", "fully cached"] + (["other inputs (seed: 1)"] if verify else [])
            before = (0, 0.0)
            for what in runs:
                if what.startswith("other inputs"):
                    blueprint = folder / "sweep.blueprint.yaml"
                    blueprint.write_text(blueprint.read_text() + "  seed: 1\n")
                seconds, out = run_pytest(folder, cache)
                finn = re.search(r"this run built (\d+) segments.*\(([\d.]+) s of FINN\)", out)
                verified = re.search(r"verification: (\d+) verified", out)
                now = verify_seconds(cache) if verify else (0, 0.0)
                rows.append(
                    (
                        ("with verify" if verify else "without") + f", {what}",
                        seconds,
                        finn.group(1) if finn else "?",
                        finn.group(2) if finn else "?",
                        now[1] - before[1],  # this run's verification seconds
                        verified.group(1) if verified else "-",
                        now[0] - before[0],  # records this run wrote
                    )
                )
                before = now
    print(
        f"\n{args.model.upper()} sweep, verify inputs {args.inputs}, default pool, {CORES} cores\n"
    )
    print(
        "| run | wall s | segments built | FINN s (incl. verify) | verify s (this run) "
        "| designs verified | records written |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, seconds, built, finn, spent, verified, records in rows:
        print(
            f"| {name} | {seconds:.1f} | {built} | {finn} | {spent:.1f} | {verified} | {records} |"
        )
    print(f"\nwall time with / without verify, empty cache: {rows[2][1] / rows[0][1]:.2f}x")


if __name__ == "__main__":
    main()
