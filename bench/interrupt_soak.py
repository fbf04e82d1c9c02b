"""Does Ctrl-C / SIGTERM always stop a session? A soak, not a test: each session builds
``pass_through`` then ``slow`` (sleeps 600 s) beside ``fine``, and gets the signal at a
random moment within ``--spread`` seconds of ``slow`` starting, sent to its process
group as a terminal or a batch scheduler does. A session still running ``--grace``
seconds later is a hang: its threads' stacks (faulthandler) are kept in
``<work>/hang-N.txt``. Prints one line per session and the count of hangs.

    .venv/bin/python bench/interrupt_soak.py [--sessions 75] [--parallel 3] [--signal TERM]

Before the fix in core/interrupts.py: about 1 hang in 70 SIGTERMs (the signal landed in
``os.fork()``'s after-fork callback, where Python drops the handler's exception).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_engine import make_project, start_until_slow_runs  # noqa: E402  (the suite's)


def session(work: Path, number: int, sig: signal.Signals, spread: float, grace: float) -> str:
    folder = make_project(work / f"p{number}", "    - pass_through\n    - [slow, fine]\n")
    env = {"PYTHONFAULTHANDLER": "1", "PYTHONPATH": str(ROOT)}
    try:
        proc = start_until_slow_runs(folder, env)
    except AssertionError as exc:
        return f"session {number}: ended before the slow build started: {exc}"
    time.sleep(random.random() * spread)
    os.killpg(proc.pid, sig)
    try:
        proc.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)  # faulthandler prints every thread's stack
        out, _ = proc.communicate()
        (work / f"hang-{number}.txt").write_text(out)
        killed = kill_group(proc.pid)
        return f"session {number}: {sig.name} HANG{killed}"
    shutil.rmtree(folder, ignore_errors=True)
    return f"session {number}: {sig.name} exit {proc.returncode}"


def kill_group(pgid: int) -> str:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return ""
    return " (its process group killed)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=75)
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--signal", choices=["INT", "TERM"], default="TERM")
    parser.add_argument("--spread", type=float, default=0.3)
    parser.add_argument("--grace", type=float, default=40.0)
    args = parser.parse_args()
    sig = signal.Signals[f"SIG{args.signal}"]
    work = Path(tempfile.mkdtemp(prefix="interrupt-soak-"))
    with ThreadPoolExecutor(args.parallel) as pool:
        lines = pool.map(
            lambda n: session(work, n, sig, args.spread, args.grace), range(args.sessions)
        )
        hangs = 0
        for line in lines:
            print(line, flush=True)
            hangs += "HANG" in line
    print(f"{hangs} hang(s) in {args.sessions} sessions; stacks of hangs in {work}")


if __name__ == "__main__":
    main()
