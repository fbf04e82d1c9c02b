"""Exploration on real FINN: the execution tree on the engine's worker pool against one
build per design, one worker, pytest-xdist, and a cached re-run. Prints a markdown table.

    .venv/bin/python bench/explore.py [--model tfc|cnv] [--fps N] [BLUEPRINT_DIR]

Without BLUEPRINT_DIR it explores a sweep of the model (MVAU hls|rtl x
standalone_thresholds x --fps target_fps values x mvau_wwidth_max 36|72; 48 designs
with the default --fps 6): the bundled TFC, or with ``--model cnv`` FINN's CNV
(built by scripts/make_models.py into build/models on first use; its shared prefix is
about 2.7 s of FINN work against the TFC's 0.5 s). Each pytest run is a new process on
an empty cache unless said otherwise:

(a) every design built from scratch by FINN's builder, one after another, in one
    process (FINN imported before the clock starts);
(b) the tree on the engine's default pool (`pytest DIR`: one worker per core);
(b1) the same with one worker (`--brainsmith-workers 1`);
(c) the tree with `-n 2` (pytest-xdist: a pool of one worker in each);
(d) (b) again, fully cached;
(e) the floor: max(unique FINN work / cores, critical path) + one FINN import + pytest's
    start-up, each measured in this run (the unique work is the segments' build times in
    (b), the import a fresh process importing FINN, the start-up `pytest --collect-only`);
(f) the tree on a warm Dask cluster on loopback (`--brainsmith-scheduler`): a scheduler
    and 2 single-threaded workers with FINN preloaded, started before the clock (skipped
    without Dask distributed); its floor is (e)'s without the FINN import;
(g) the tree with the warm engine server (`--brainsmith-server`, core/launchers/engine_server.py),
    started and warm before the clock, on an empty cache: the target is its FINN work
    (the segments' build times in (g)) + 2 s.

``--cases`` picks the runs (default all: ab1cdefg, 1 for (b1); (e) needs (b)), e.g. ``--cases bdg``
with ``blueprints/`` measures the bundled blueprints cold, fully cached and on the server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_brainsmith.core.blueprint import load_design_space  # noqa: E402
from pytest_brainsmith.core.toolchain import finn_registry  # noqa: E402
from pytest_brainsmith.core.tree import build_execution_tree  # noqa: E402
from pytest_brainsmith.finn import runner as finn_runner  # noqa: E402


def cores_used() -> int:
    """The cores a run here builds on: the engine's default pool has one worker per core
    this process may use (its CPU affinity), as ``workers.available_cores`` counts them."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


#: the floors divide the unique work by these cores, the ones the runs actually use
CORES = cores_used()


#: the sweep's target_fps values per model: the CNV is slower, its values double
FPS = {"tfc": lambda i: 25_000 * (i + 1), "cnv": lambda i: 250 * 2**i}


def model_file(name: str) -> Path:
    """The bundled TFC, or the CNV built once into build/models."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_models import MODELS, make_model

    if name == "tfc":
        return ROOT / "models" / MODELS[name][2]
    target = ROOT / "build" / "models" / MODELS[name][2]
    if not target.is_file():
        make_model(name, target.parent)
    return target


def sweep_blueprint(
    folder: Path,
    fps_values: int,
    model: str = "tfc",
    *,
    name: str = "parallel",
    steps: str = "",
    extra: str = "",
) -> None:
    """The benchmark sweep (48 designs with 6 fps values); ``steps`` goes under
    ``design_space`` (e.g. step operations), ``extra`` at the end (e.g. ``explore:``)."""
    fps = ", ".join(str(FPS[model](i)) for i in range(fps_values))
    (folder / "sweep.blueprint.yaml").write_text(
        f"""
name: {model}-{name}
model: {model_file(model)}
fpga_part: xc7z020clg400-1
clock_ns: 10
design_space:
{steps}  kernels:
    - MVAU: [hls, rtl]
  finn_config:
    standalone_thresholds: [false, true]
    target_fps: [{fps}]
    mvau_wwidth_max: [36, 72]
"""
        + extra
    )


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


def run_pytest(
    folder: Path,
    cache: Path,
    *extra: str,
    allow_failed: bool = False,
    env: dict[str, str] | None = None,
) -> tuple[float, str]:
    """Run pytest on a folder of blueprints; ``allow_failed``: designs may fail (exit 1)."""
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
            "--brainsmith-results",
            "none",
            *extra,
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    seconds = time.perf_counter() - start
    if done.returncode not in ((0, 1) if allow_failed else (0,)):
        raise SystemExit(f"pytest failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


def finn_import_seconds() -> float:
    """What importing FINN costs a fresh process (the engine pays it once per run)."""
    code = (
        "import time; t = time.perf_counter(); "
        "from pytest_brainsmith.finn.runner import import_finn; import_finn(); "
        "print(time.perf_counter() - t)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def warm_cluster(folder: Path) -> Iterator[str | None]:
    """A scheduler and CORES workers with FINN preloaded, ready before the clock starts
    (None without Dask distributed); every process is stopped at the end."""
    try:
        import distributed
    except ImportError:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    ]  # fmt: skip
    try:
        for i in range(CORES):
            work = folder / f"worker{i}"
            work.mkdir()
            procs.append(
                subprocess.Popen(
                    [*dask, "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                     "--no-dashboard", "--preload", "pytest_brainsmith.finn.dask_preload"],
                    cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(CORES, timeout=120)
            client.run(lambda: __import__("finn.builder.build_dataflow"))  # preloaded: no-op
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@contextlib.contextmanager
def warm_server(folder: Path) -> Iterator[dict[str, str] | None]:
    """The engine server started and warm (FINN imported by its workers) before the clock,
    its address file in a folder of its own; the environment a session needs to use it
    (None without Dask distributed). Stopped at the end."""
    try:
        import distributed
    except ImportError:
        yield None
        return
    from pytest_brainsmith.core.launchers import engine_server

    env = {"XDG_CACHE_HOME": str(folder / "xdg"), "XDG_RUNTIME_DIR": "", "BRAINSMITH_SERVER": "1"}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    directory = engine_server.server_dir()
    try:
        address = engine_server.ensure_server(directory, workers=CORES)
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(CORES, timeout=300)
            client.run(lambda: __import__("finn.builder.build_dataflow"))  # preloaded: no-op
        yield env
    finally:
        engine_server.stop_servers(directory)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def summary_number(pattern: str, out: str) -> float:
    match = re.search(pattern, out)
    return float(match.group(1)) if match else 0.0


def manifests(cache: Path) -> list[dict]:
    found = []
    for path in (cache / "v1" / "entries").glob("*/*/manifest.json"):
        manifest = json.loads(path.read_text())
        inodes = {f.stat().st_ino: f.stat().st_size for f in path.parent.rglob("*") if f.is_file()}
        manifest["bytes"] = sum(inodes.values())  # output.onnx is a hard link: count it once
        found.append(manifest)
    return found


def critical_path(found: list[dict]) -> float:
    seconds = {m["segment"]: m["seconds"] for m in found}
    longest = 0.0
    for label in seconds:
        parts = label.split("::")
        chain = ["::".join(parts[:n]) for n in range(2, len(parts) + 1)]
        longest = max(longest, sum(seconds.get(c, 0.0) for c in chain))
    return longest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", nargs="?", type=Path)
    parser.add_argument("--model", choices=sorted(FPS), default="tfc")
    parser.add_argument("--fps", type=int, default=6, help="target_fps values in the sweep")
    parser.add_argument(
        "--cases", default="ab1cdefg", help="the runs to make (default all; 1 is (b1))"
    )
    args = parser.parse_args()
    cases = set(args.cases)
    if "e" in cases:
        cases.add("b")
    skipped = (0.0, "")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        folder = args.folder.resolve() if args.folder else tmp_path / "blueprints"
        if args.folder is None:
            folder.mkdir()
            sweep_blueprint(folder, args.fps, args.model)
        all_trees = trees(folder)
        designs = sum(t.stats().designs for t in all_trees)
        segments = sum(1 for t in all_trees for s in t.segments() if s.steps)
        executed = sum(t.stats().steps_executed for t in all_trees)
        naive = sum(t.stats().steps_naive for t in all_trees)

        scratch_s = from_scratch(all_trees, tmp_path / "scratch")[0] if "a" in cases else 0.0
        seq_s, seq_out = run_pytest(folder, tmp_path / "pool") if "b" in cases else skipped
        warm_s, warm_out = run_pytest(folder, tmp_path / "pool") if "d" in cases else skipped
        one_s, one_out = (
            run_pytest(folder, tmp_path / "one", "--brainsmith-workers", "1")
            if "1" in cases
            else skipped
        )
        par_s, par_out = (
            run_pytest(folder, tmp_path / "par", "-n", str(CORES)) if "c" in cases else skipped
        )
        dask_s, dask_out = skipped
        if "f" in cases:
            with warm_cluster(tmp_path) as address:
                if address:
                    dask_s, dask_out = run_pytest(
                        folder, tmp_path / "dask", "--brainsmith-scheduler", address
                    )
        server_s, server_out = skipped
        if "g" in cases:
            with warm_server(tmp_path) as server_env:
                if server_env:
                    server_s, server_out = run_pytest(folder, tmp_path / "server", env=server_env)
        server_work = sum(m["seconds"] for m in manifests(tmp_path / "server"))
        start_s, _ = run_pytest(folder, tmp_path / "none", "--collect-only")
        import_s = finn_import_seconds()
        found = manifests(tmp_path / "pool")
        unique = sum(m["seconds"] for m in found)
        path_s = critical_path(found)
        floor = max(unique / CORES, path_s) + import_s + start_s
        dask_floor = floor - import_s
        by_depth: dict[int, list[int]] = {}
        for m in found:
            by_depth.setdefault(m["segment"].count("::") - 1, []).append(m["bytes"])

    def built(out: str) -> int:
        return int(summary_number(r"this run built (\d+) segments", out))

    def imports(out: str) -> int:
        return int(summary_number(r"FINN imported by (\d+) process", out))

    def processes(out: str) -> int:
        return int(summary_number(r"(\d+) worker process\(es\) started", out))

    def waited(out: str) -> float:
        return summary_number(r"; ([\d.]+) s waited", out)

    rows = [
        ("designs / segments with steps", f"{designs} / {segments}"),
        (
            "FINN steps: tree / one build per design",
            f"{executed} / {naive} ({100 * (1 - executed / naive):.0f}% saved)",
        ),
        ("(a) every design from scratch, one process [s]", f"{scratch_s:.1f}"),
        (f"(b) tree, default pool ({CORES} workers), cold [s]", f"{seq_s:.1f}"),
        ("(b1) tree, one worker, cold [s]", f"{one_s:.1f}"),
        (f"(c) tree, -n {CORES}, cold [s]", f"{par_s:.1f}"),
        ("(d) fully cached re-run [s]", f"{warm_s:.2f}"),
        (
            f"(e) floor: max(unique work / {CORES}, critical path) + FINN import + pytest start-up [s]",
            f"{floor:.1f} (unique {unique:.1f}, critical path {path_s:.1f}, "
            f"import {import_s:.1f}, start-up {start_s:.1f})",
        ),
        ("(b)/(e) (target: CNV <= 1.25x, TFC <= 1.5x)", ratio(seq_s, floor)),
        (
            f"(f) tree, warm Dask cluster ({CORES} workers, FINN preloaded), cold cache [s]",
            f"{dask_s:.1f}"
            if dask_out
            else ("skipped (no Dask distributed)" if "f" in cases else "not run"),
        ),
        ("(f)/((e) - FINN import) (target: CNV <= 1.15x)", ratio(dask_s, dask_floor)),
        ("(a)/(b) (target: CNV >= 12x)", ratio(scratch_s, seq_s)),
        ("(b1)/(b) (target: CNV >= 1.6x)", ratio(one_s, seq_s)),
        ("(b)/(c)", ratio(seq_s, par_s)),
        (
            "segments built: (b) / (b1) / (c) / (d)",
            f"{built(seq_out)} / {built(one_out)} / {built(par_out)} / {built(warm_out)}",
        ),
        (
            "FINN imports: (b) / (c) / (d)",
            f"{imports(seq_out)} / {imports(par_out)} / {imports(warm_out)}",
        ),
        ("worker processes: (b) / (d)", f"{processes(seq_out)} / {processes(warm_out)}"),
        ("FINN imports in the session: (f)", f"{imports(dask_out)}"),
        (
            "(g) tree, warm engine server (--brainsmith-server), cold cache [s]",
            f"{server_s:.1f} (FINN work {server_work:.1f}, FINN imports {imports(server_out)})"
            if server_out
            else "not run",
        ),
        ("(g) - FINN work (target: <= 2 s)", f"{server_s - server_work:.1f}"),
        ("waited on another process's segment: (c) [s]", f"{waited(par_out):.1f}"),
    ]
    for depth, sizes in sorted(by_depth.items()):
        rows.append(
            (
                f"disk per segment at depth {depth} ({len(sizes)} segments)",
                f"{sum(sizes) / len(sizes) / 1e6:.2f} MB avg, {sum(sizes) / 1e6:.1f} MB total",
            )
        )
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    cold = [built(out) for out in (seq_out, one_out, par_out, dask_out, server_out) if out]
    # every segment once (a folding search's trials are segments the trees do not list)
    assert len(set(cold)) <= 1 and all(n >= segments for n in cold), (
        "a segment was built twice or not at all"
    )
    assert not warm_out or built(warm_out) == imports(warm_out) == processes(warm_out) == 0
    assert imports(dask_out) == imports(server_out) == 0


if __name__ == "__main__":
    main()
