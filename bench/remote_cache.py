"""The remote cache between CI runners: the CNV sweep of bench/explore.py (48 designs, 55
segments) on a runner whose local cache is empty but whose remote cache (a SeaweedFS S3
server on loopback) was filled by another runner, against a cold run and against a
warm local cache. Prints a markdown table: wall times and bytes moved.

    flock -s /tmp/finn.lock .venv/bin/python bench/remote_cache.py [--model cnv|tfc] [--repeat N]

Each run is `pytest DIR` in a new process (the engine's default pool, 2 workers):

(cold)     an empty local cache, no remote: everything built;
(runner 1) an empty local cache, the remote empty: everything built and uploaded;
(warm)     runner 1's local cache again: everything reused;
(runner 2) an empty local cache, the remote warm: everything fetched (median of N).

Targets: runner 2 within 2x of the warm local cache's wall time, >= 10x faster than cold.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from explore import FPS, run_pytest, sweep_blueprint  # noqa: E402
from seaweedfs import BUCKET, seaweedfs  # noqa: E402


def moved(out: str) -> dict[str, float]:
    """What the summary's remote cache line says was moved."""
    found = re.search(
        r"fetched (\d+) entries \(([\d.]+) MB\) and (\d+) checkpoints \(([\d.]+) MB\).*?"
        r"uploaded (\d+) \(([\d.]+) MB",
        out,
    )
    if found is None:
        return {}
    names = ["entries", "entry_mb", "checkpoints", "checkpoint_mb", "uploaded", "uploaded_mb"]
    return {n: float(v) for n, v in zip(names, found.groups(), strict=True)}


def built(out: str) -> int:
    found = re.search(r"this run built (\d+) segments", out)
    return int(found.group(1)) if found else -1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(FPS), default="cnv")
    parser.add_argument("--fps", type=int, default=6, help="target_fps values in the sweep")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the short measurements")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        folder = tmp_path / "blueprints"
        folder.mkdir()
        sweep_blueprint(folder, args.fps, args.model)
        with seaweedfs(tmp_path / "server") as server:
            os.environ.update(server.env())
            remote = ("--brainsmith-remote-cache", f"s3://{BUCKET}/bench")
            cold_s, cold_out = run_pytest(folder, tmp_path / "cold")
            one_s, one_out = run_pytest(folder, tmp_path / "one", *remote)
            warm = [run_pytest(folder, tmp_path / "one")[0] for _ in range(args.repeat)]
            two = []
            for i in range(args.repeat):
                started = time.perf_counter()
                _, two_out = run_pytest(folder, tmp_path / f"two{i}", *remote)
                two.append(time.perf_counter() - started)
                assert built(two_out) == 0, two_out
            stored = sum(size for _, size in server.fs().du(f"{BUCKET}/bench", total=False).items())
    warm_s, two_s = statistics.median(warm), statistics.median(two)
    up, down = moved(one_out), moved(two_out)
    rows = [
        ("(cold) empty cache, no remote [s]", f"{cold_s:.1f} ({built(cold_out)} segments built)"),
        (
            "(runner 1) empty cache, empty remote: build + upload [s]",
            f"{one_s:.1f} ({built(one_out)} built, {up.get('uploaded', 0):.0f} uploaded, "
            f"{up.get('uploaded_mb', 0):.1f} MB)",
        ),
        (f"(warm) runner 1's local cache again, median of {args.repeat} [s]", f"{warm_s:.2f}"),
        (
            f"(runner 2) empty cache, warm remote, median of {args.repeat} [s]",
            f"{two_s:.2f} ({down.get('entries', 0):.0f} entries, {down.get('entry_mb', 0):.1f} MB;"
            f" {down.get('checkpoints', 0):.0f} checkpoints, "
            f"{down.get('checkpoint_mb', 0):.1f} MB)",
        ),
        ("remote cache size after runner 1 [MB]", f"{stored / 1e6:.1f}"),
        ("runner 2 / warm local (target <= 2x)", f"{two_s / warm_s:.2f}x"),
        ("cold / runner 2 (target >= 10x)", f"{cold_s / two_s:.1f}x"),
        ("runner 1 / cold (the cost of uploading)", f"{one_s / cold_s:.2f}x"),
    ]
    print(f"{args.model}: {len(warm)} warm and {len(two)} runner-2 runs; walls {warm} / {two}")
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
