"""The remote cache between CI runners: the CNV sweep of bench/explore.py (48 designs, 55
segments) on a runner whose local cache is empty but whose remote cache (a SeaweedFS S3
server on loopback) was filled by another runner, against a cold run and against a
warm local cache. Prints a markdown table: wall times, bytes moved, what each run
reports verified, and what signing cost.

    flock -s /tmp/finn.lock .venv/bin/python bench/remote_cache.py [--model cnv|tfc] [--repeat N]

The sweep verifies (``verify: {inputs: N}``, ``--verify-inputs``; 0 turns it off) and the
runners share a signing key (BRAINSMITH_REMOTE_CACHE_KEY) unless ``--no-sign``. Each run
is `pytest DIR` in a new process (the engine's default pool, one worker per core):

(cold)     an empty local cache, no remote: everything built (and verified);
(runner 1) an empty local cache, the remote empty: everything built, verified, signed and
           uploaded with its verification records;
(warm)     runner 1's local cache again: everything reused (median of N);
(runner 2) an empty local cache, the remote warm: everything fetched with its records and
           signatures checked, nothing executed (median of N);
(runner 2, no key) the same without the key: signatures neither checked nor needed.

Targets: runner 2 within 2x of the warm local cache's wall time, >= 10x faster than cold;
signature checks < 5 % of runner 2's wall time (the time spent signing and checking, as
the summary reports it).
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


def verified(out: str) -> str:
    """The summary's verification counts, e.g. ``48 verified``."""
    found = re.search(r"verification: (.*?) designs", out)
    return found.group(1) if found else "not reported"


def signatures(out: str) -> tuple[int, float]:
    """(documents signed or checked, seconds spent) from the remote cache's line."""
    found = re.search(r"(\d+) signatures made or checked \((\d+) ms\)", out)
    return (int(found.group(1)), int(found.group(2)) / 1000) if found else (0, 0.0)


def built(out: str) -> int:
    found = re.search(r"this run built (\d+) segments", out)
    return int(found.group(1)) if found else -1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(FPS), default="cnv")
    parser.add_argument("--fps", type=int, default=6, help="target_fps values in the sweep")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the short measurements")
    parser.add_argument("--verify-inputs", type=int, default=2, help="verify: inputs (0: off)")
    parser.add_argument("--no-sign", action="store_true", help="no BRAINSMITH_REMOTE_CACHE_KEY")
    args = parser.parse_args()
    verify = f"verify:\n  inputs: {args.verify_inputs}\n" if args.verify_inputs else ""
    key = {} if args.no_sign else {"BRAINSMITH_REMOTE_CACHE_KEY": "bench-signing-key"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        folder = tmp_path / "blueprints"
        folder.mkdir()
        sweep_blueprint(folder, args.fps, args.model, extra=verify)
        with seaweedfs(tmp_path / "server") as server:
            os.environ.update(server.env())
            remote = ("--brainsmith-remote-cache", f"s3://{BUCKET}/bench")
            cold_s, cold_out = run_pytest(folder, tmp_path / "cold")
            one_s, one_out = run_pytest(folder, tmp_path / "one", *remote, env=key)
            warm, two, keyless = [], [], []
            for i in range(args.repeat):  # interleaved: the machine's load shifts
                warm_i, warm_out = run_pytest(folder, tmp_path / "one")
                warm.append(warm_i)
                started = time.perf_counter()
                _, two_out = run_pytest(folder, tmp_path / f"two{i}", *remote, env=key)
                two.append(time.perf_counter() - started)
                assert built(two_out) == 0, two_out
                keyless.append(run_pytest(folder, tmp_path / f"nokey{i}", *remote)[0])
            stored = sum(size for _, size in server.fs().du(f"{BUCKET}/bench", total=False).items())
    warm_s, two_s = statistics.median(warm), statistics.median(two)
    keyless_s = statistics.median(keyless)
    up, down = moved(one_out), moved(two_out)
    signed, signing_s = signatures(two_out)
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
        (
            f"(runner 2, no key) the same without BRAINSMITH_REMOTE_CACHE_KEY, median of "
            f"{args.repeat} [s]",
            f"{keyless_s:.2f}",
        ),
        ("remote cache size after runner 1 [MB]", f"{stored / 1e6:.1f}"),
        (
            "verification reported: cold / runner 1 / warm / runner 2",
            f"{verified(cold_out)} / {verified(one_out)} / {verified(warm_out)} / "
            f"{verified(two_out)}",
        ),
        ("runner 2 / warm local (target <= 2x)", f"{two_s / warm_s:.2f}x"),
        ("cold / runner 2 (target >= 10x)", f"{cold_s / two_s:.1f}x"),
        ("runner 1 / cold (the cost of uploading)", f"{one_s / cold_s:.2f}x"),
        (
            "runner 2's signature checks (target < 5% of its wall time)",
            f"{signed} documents in {1000 * signing_s:.0f} ms = "
            f"{100 * signing_s / two_s:.2f}% of {two_s:.2f} s"
            if signed
            else "not signed (--no-sign)",
        ),
        ("runner 2 with the key / without", f"{two_s / keyless_s:.2f}x"),
    ]
    print(
        f"{args.model}: {len(warm)} warm, runner-2 and keyless runs; walls "
        f"{[round(w, 2) for w in warm]} / {[round(t, 2) for t in two]} / "
        f"{[round(k, 2) for k in keyless]}"
    )
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
