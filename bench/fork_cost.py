"""What a clean process per build costs: the zygote's size, a fork of it, and a build's
first touches of the zygote's pages (copy-on-write faults), against a bare Python.

    .venv/bin/python bench/fork_cost.py [--repeat 30]

Rows:
- fork + exit + wait: ``os.fork()`` of this process, the child ``_exit``s at once, waited
  for (median); first with nothing imported, then with FINN's builder imported (the
  zygote's contents), ``gc.freeze()`` first as the pool does.
- pool round trip: a build that does nothing, sent to the engine's ``WorkerPool`` with its
  fork server (the zygote) and back, with ``spares=0`` (forked when asked) and ``spares=1``
  (forked ahead while the previous build ran, the default).
- a FINN step in the fork: minor page faults and seconds of ``tidy_up`` on the bundled TFC
  in a process forked from the zygote, against the same step run a second time in that
  process (its pages already its own).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "models" / "tfc_w2a2.onnx"


def fork_exit_wait(repeat: int) -> float:
    gc.freeze()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        times.append(time.perf_counter() - start)
    gc.unfreeze()
    return statistics.median(times) * 1000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def noop() -> dict:
    return {"status": "built", "pid": os.getpid()}


def tidy_twice(model: str) -> dict:
    """tidy_up's transforms on the TFC model, twice: the first run touches the zygote's
    pages (each write copies one), the second finds them copied already."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import GiveUniqueNodeNames, GiveUniqueParameterTensors
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    rows = []
    for _ in range(2):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        wrapped = ModelWrapper(model)
        for transform in (
            InferShapes(),
            InferDataTypes(),
            GiveUniqueNodeNames(),
            GiveUniqueParameterTensors(),
        ):
            wrapped = wrapped.transform(transform)
        rows.append(
            (
                time.perf_counter() - start,
                resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
            )
        )
    return {"status": "built", "rows": rows}


def pool_round_trip(spares: int, repeat: int) -> tuple[float, dict]:
    from functools import partial

    from pytest_brainsmith.core.launchers import WorkerPool

    pool = WorkerPool(share=[noop, tidy_twice], fork_server=True, spares=spares)
    try:
        assert pool.prepare() is None, "FINN cannot be imported"
        server = pool.server.process.pid
        zygote = 0.0
        for line in Path(f"/proc/{server}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                zygote = int(line.split()[1]) / 1024
        times = []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(repeat + 1):
                start = time.perf_counter()
                build = pool(noop, output=Path(tmp) / f"{i}.log")
                while not build.poll():
                    time.sleep(0.0005)
                build.reap()
                if i:  # the first pays the first fork in any case
                    times.append(time.perf_counter() - start)
                time.sleep(0.05)  # a build's length: the spare is forked meanwhile
            build = pool(partial(tidy_twice, str(MODEL)), output=Path(tmp) / "tidy.log")
            while not build.poll():
                time.sleep(0.001)
            tidy = build.result
        return statistics.median(times) * 1000, {"zygote_mb": zygote, "tidy": tidy}
    finally:
        pool.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    bare = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from bench.fork_cost import fork_exit_wait, rss_mb; "
            f"print(fork_exit_wait({args.repeat}), rss_mb())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    from pytest_brainsmith.finn.runner import import_finn

    import_finn()
    finn = fork_exit_wait(args.repeat)
    cold, info = pool_round_trip(0, args.repeat)
    warm, _ = pool_round_trip(1, args.repeat)
    print("| what | figure |\n|---|---|")
    print(
        f"| bare Python: RSS, fork + exit + wait | {float(bare[1]):.0f} MB, {float(bare[0]):.2f} ms |"
    )
    print(f"| FINN imported: RSS, fork + exit + wait | {rss_mb():.0f} MB, {finn:.2f} ms |")
    print(f"| zygote (fork server) RSS | {info['zygote_mb']:.0f} MB |")
    print(f"| pool round trip of a no-op build, forked when asked (spares=0) | {cold:.2f} ms |")
    print(f"| pool round trip of a no-op build, forked ahead (spares=1) | {warm:.2f} ms |")
    (first_s, first_faults), (second_s, second_faults) = info["tidy"]["rows"]
    print(
        f"| tidy_up transforms on TFC, first in a fresh fork | {first_s * 1000:.1f} ms, "
        f"{first_faults} minor faults |"
    )
    print(
        f"| the same, again in that process | {second_s * 1000:.1f} ms, "
        f"{second_faults} minor faults |"
    )


if __name__ == "__main__":
    main()
