"""The engine's isolation: steps that raise, exit, crash, hang, eat memory or skip each
end their own design with the cause named, their siblings pass and the session ends
normally; Ctrl-C and SIGTERM leave nothing behind. Real FINN builder, registered
pure-Python steps on the bundled model (each step is a fraction of a second)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import run_in, step_project, take_builds

from pytest_brainsmith.core import interrupts

ROOT = Path(__file__).resolve().parent.parent

#: Steps that misbehave on purpose; each writes its pid where the test can see it.
MISBEHAVING = """
import ctypes, json, os, time
import pytest

HERE = os.path.dirname(__file__)

def _pid(name):
    with open(os.path.join(HERE, name + ".pid"), "w") as f:
        f.write(str(os.getpid()))

def _mark(model, name):
    # a model of its own: two steps that returned the same model would share the work
    # below them (content dedupe), which is not what these tests are about
    model.set_metadata_prop("made_by", name)
    return model

def pass_through(model, cfg):
    return model

def fine(model, cfg):
    return _mark(model, "fine")

def raises(model, cfg):
    raise ValueError("raises was asked to fail")

def exits(model, cfg):
    os._exit(3)

def segfaults(model, cfg):
    ctypes.string_at(0)

def hangs(model, cfg):
    _pid("hangs")
    time.sleep(600)

def hogs(model, cfg):
    hog = bytearray(8 << 30)  # 8 GiB, past the 1 GiB limit
    return model

def skips(model, cfg):
    pytest.skip("skips needs a board that is not here")

def slow(model, cfg):
    _pid("slow")
    open(os.path.join(HERE, "slow.started"), "w").close()
    time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
    return _mark(model, "slow")

def raises_once_slow_runs(model, cfg):
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(HERE, "slow.started")) and time.time() < deadline:
        time.sleep(0.05)
    raise ValueError("raises_once_slow_runs was asked to fail")

def tail_a(model, cfg):
    return _mark(model, "tail_a")

def tail_b(model, cfg):
    return _mark(model, "tail_b")

def pytest_brainsmith_register(registry):
    steps = (pass_through, fine, raises, exits, segfaults, hangs, hogs, skips, slow, tail_a, tail_b,
             raises_once_slow_runs)
    for step in steps:
        registry.register_step(step, reads=())

def pytest_brainsmith_segment_finish(segment, result):
    with open(os.path.join(HERE, "builds.jsonl"), "a") as log:
        log.write(json.dumps({"segment": result.segment, "status": result.status,
                              "kind": result.kind}) + "\\n")
"""


def make_project(folder: Path, steps: str) -> Path:
    return step_project(folder, MISBEHAVING, steps)


def run(folder: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300):
    return run_in(folder, *args, env=env, timeout=timeout)


def builds(folder: Path, full: bool = False) -> dict[str, dict]:
    """The segments built since the last call, by name (``full``: path below the file)."""
    rows = take_builds(folder)
    cut = (lambda s: s.split("::", 1)[1]) if full else (lambda s: s.rsplit("::", 1)[-1])
    return {cut(row["segment"]): row for row in rows}


def start_until_slow_runs(folder: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """pytest in ``folder`` in a process group of its own (as a shell's foreground job),
    its ``slow`` step sleeping 600 s; returns once that step runs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "SLOW_SECONDS": "600", **(env or {})},
        start_new_session=True,
    )
    deadline = time.time() + 120
    while not (folder / "slow.started").exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline, "the slow step never started"
        time.sleep(0.02)
    return proc


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def assert_ended(pids: list[int], why: str, within: float = 10.0) -> None:
    """The processes end within ``within`` seconds (a killed one may take a moment)."""
    deadline = time.time() + within
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids), why


def cache_state(cache: Path) -> dict[str, list[str]]:
    base = cache / "v1"
    listing = {}
    for sub in ("tmp", "failures", "running"):
        folder = base / sub
        listing[sub] = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    for entry in (base / "entries").glob("*/*"):
        assert (entry / "COMPLETE").is_file(), f"torn entry {entry}"
    return listing


ISOLATION = """    - pass_through
    - [fine, raises, exits, segfaults, hangs, hogs, skips]
"""


def test_each_misbehaving_step_fails_only_its_design_and_the_session_ends_normally(
    tmp_path: Path,
):
    folder = make_project(tmp_path / "p", ISOLATION)
    limits = ("--brainsmith-timeout", "3", "--brainsmith-max-memory", "1G")
    done = run(folder, *limits)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr  # pytest's "tests failed", not a crash
    assert "1 passed, 5 failed, 1 skipped" in out, out
    assert "designs: 1 passed, 5 failed, 1 skipped, 0 errors" in out
    expected = {
        "raises": "ValueError: raises was asked to fail",
        "exits": "the worker process exited with code 3",
        "segfaults": "the worker process crashed (SIGSEGV)",
        "hangs": "timed out after 3 s (its timeout)",
        "hogs": "exceeded the memory limit of 1G (MemoryError",
    }
    for step, cause in expected.items():
        lines = [
            line for line in out.splitlines() if line.startswith("FAILED ") and f"::{step} " in line
        ]
        assert len(lines) == 1 and cause in lines[0], (step, lines)
    assert "SKIPPED" in out and "skips needs a board that is not here" in out
    # the crash left its traceback where the cause shows it (faulthandler in the worker)
    assert "Fatal Python error: Segmentation fault" in out
    first = builds(folder)
    assert first["pass_through"]["status"] == "built" and first["fine"]["status"] == "built"
    assert {first[s]["kind"] for s in expected} == {"exception", "crash", "timeout", "memory"}
    assert not alive(int((folder / "hangs.pid").read_text()))  # killed at its deadline
    state = cache_state(folder / "build" / "brainsmith" / "cache")
    assert len(state["failures"]) == 5  # the skip is not recorded
    assert state["tmp"] == [] and state["running"] == []
    with sqlite3.connect(folder / "build" / "brainsmith" / "results.sqlite") as db:
        outcomes = dict(db.execute("SELECT design, outcome FROM designs").fetchall())
    assert sorted(outcomes.values()) == ["failed"] * 5 + ["passed", "skipped"]

    # next run: recorded failures are reported without building; the skip runs again
    again = run(folder, *limits)
    assert "1 passed, 5 failed, 1 skipped" in again.stdout
    assert set(builds(folder)) == set()  # skips is not a build: pytest.skip ends it
    summary = [line for line in again.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(summary) == 5 and all("failed in an earlier run" in line for line in summary)
    # a raised timeout is not held against the segment: it is built again
    longer = run(
        folder, "--brainsmith-timeout", "4", "--brainsmith-max-memory", "1G", "-k", "hangs"
    )
    assert "timed out after 4 s" in longer.stdout
    assert list(builds(folder)) == ["hangs"]


def test_segment_resources_merge_tools_the_ini_and_the_blueprint_per_step(tmp_path: Path):
    from pytest_brainsmith.core.blueprint import load_design_space
    from pytest_brainsmith.core.cache import SegmentCache
    from pytest_brainsmith.core.engine import Engine
    from pytest_brainsmith.core.toolchain import finn_registry
    from pytest_brainsmith.core.tree import build_execution_tree

    registry = finn_registry().copy()
    for name, needs in (("prep", ()), ("synth", ("vivado",)), ("light", ()), ("tail", ())):
        registry.register_step(lambda model, cfg: model, name=name, reads=(), needs=needs)
    (tmp_path / "model.onnx").write_bytes(b"not built in this test")
    path = tmp_path / "r.blueprint.yaml"
    path.write_text(
        "model: model.onnx\nfpga_part: xc7z020clg400-1\nclock_ns: 10\n"
        "design_space:\n  steps: [prep, [synth, light], tail]\n"
        "step_resources:\n"
        "  synth: {memory: 2G, licences: 1}\n"
        "  tail: {memory: 1G}\n"
        "  prep: {cpus: 0}\n"  # 0 drops what the ini asks
    )
    space = load_design_space(path, registry)
    segments = {s.steps[0].name: s for s in build_execution_tree(space).segments()}
    assert [s.name for s in segments["synth"].steps] == ["synth", "tail"]
    ini = {"synth": {"vivado": 2.0, "memory": 8e9}, "prep": {"cpus": 4.0, "gpus": 1.0}}
    engine = Engine(SegmentCache(tmp_path / "cache"), step_resources=ini, max_memory=512 << 20)
    assert engine.limits.segment_resources(segments["prep"]) == {"gpus": 1.0}
    # tools, then the ini, then the blueprint; for each resource the most any step asks
    assert engine.limits.segment_resources(segments["synth"]) == {
        "vivado": 2.0,
        "memory": float(2 << 30),
        "licences": 1.0,
    }
    assert engine.limits.segment_resources(segments["light"]) == {"memory": float(1 << 30)}
    # the memory limit: the largest of the steps', a step without one counting max_memory
    assert engine.limits.segment_max_memory(segments["prep"]) == 512 << 20
    assert engine.limits.segment_max_memory(segments["synth"]) == 2 << 30
    assert engine.limits.segment_max_memory(segments["light"]) == 1 << 30
    engine.limits.max_memory = 4 << 30  # light asks nothing: the default is larger than tail's
    assert engine.limits.segment_max_memory(segments["light"]) == 4 << 30
    unbounded = Engine(SegmentCache(tmp_path / "cache"))
    assert unbounded.limits.segment_max_memory(segments["prep"]) is None
    assert unbounded.limits.segment_max_memory(segments["light"]) == 1 << 30


def test_a_steps_memory_is_its_segments_limit_and_the_blueprint_beats_the_ini(tmp_path: Path):
    folder = make_project(tmp_path / "p", "    - pass_through\n    - [hogs, fine]\n")
    with open(folder / "e.blueprint.yaml", "a") as blueprint:
        blueprint.write("step_resources:\n  hogs: {memory: 1G}\n")
    (folder / "pytest.ini").write_text(
        "[pytest]\nbrainsmith_resources =\n    hogs: memory=64G\n    pass_through: cpus=1\n"
    )
    done = run(folder)  # no --brainsmith-max-memory: fine and pass_through are unbounded
    out = done.stdout
    assert "1 passed, 1 failed" in out, out + done.stderr
    (failed,) = [line for line in out.splitlines() if line.startswith("FAILED ")]
    assert "::hogs " in failed and "exceeded the memory limit of 1G (MemoryError" in failed
    built = builds(folder)
    assert built["hogs"]["kind"] == "memory"
    assert built["fine"]["status"] == "built" and built["pass_through"]["status"] == "built"


def test_inline_builds_give_the_same_outcomes_without_worker_processes(tmp_path: Path):
    folder = make_project(tmp_path / "p", "    - pass_through\n    - [fine, raises, skips]\n")
    done = run(folder, "--brainsmith-workers", "0")
    assert "1 passed, 1 failed, 1 skipped" in done.stdout, done.stdout
    assert "raises was asked to fail" in done.stdout
    assert "0 worker process(es) started" in done.stdout


def test_k_builds_only_what_the_selected_designs_need(tmp_path: Path):
    folder = make_project(
        tmp_path / "p", "    - pass_through\n    - [fine, slow]\n    - [tail_a, tail_b]\n"
    )
    done = run(folder, "-k", "slow")
    assert "2 passed, 2 deselected" in done.stdout, done.stdout
    assert sorted(builds(folder, full=True)) == [
        "pass_through",
        "pass_through::slow",
        "pass_through::slow::tail_a",
        "pass_through::slow::tail_b",
    ]
    done = run(folder)
    assert "4 passed" in done.stdout
    assert sorted(builds(folder, full=True)) == [
        "pass_through::fine",
        "pass_through::fine::tail_a",
        "pass_through::fine::tail_b",
    ]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_a_build_leaves_nothing_behind_and_the_rerun_builds_it(
    tmp_path: Path, sig: signal.Signals
):
    folder = make_project(tmp_path / "p", "    - pass_through\n    - [slow, fine]\n")
    proc = start_until_slow_runs(folder)
    os.killpg(proc.pid, sig)  # what a terminal does on Ctrl-C: the whole foreground group
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out  # pytest's "interrupted"
    assert "brainsmith" in out  # the summary was printed
    # recorded as an interrupted run, with what it finished; the numbers agree
    assert re.search(r"designs: \d+ passed.*; interrupted: \d+ started and not reported", out), out
    built = int(re.search(r"this run built (\d+) segments", out)[1])
    shown = int(re.search(r"segments: (\d+) built", out)[1])
    more = re.search(r"segments: (\d+) more built for designs not reported", out)
    assert shown + (int(more[1]) if more else 0) == built, out
    with sqlite3.connect(folder / "build" / "brainsmith" / "results.sqlite") as db:
        assert db.execute("SELECT exitstatus FROM runs").fetchall() == [(2,)]
    assert_ended([int((folder / "slow.pid").read_text())], "the worker outlived the session")
    state = cache_state(folder / "build" / "brainsmith" / "cache")
    assert state["failures"] == []  # an interrupt is nobody's failure
    assert state["tmp"] == [] and state["running"] == []
    assert all(row["status"] == "built" for row in builds(folder).values())

    (folder / "slow.started").unlink()
    done = run(folder)
    assert "2 passed" in done.stdout, done.stdout
    assert "slow" in builds(folder)  # built now, never "failed in an earlier run"


#: SIGTERM sent from where Python drops the handler's KeyboardInterrupt ("Exception
#: ignored in ..."): an after-fork callback while the next worker is forked (what CI
#: hit: logging's lock release in ``os.fork()``) or a finalizer. Once ``fine`` is built
#: and ``slow`` runs beside it.
SIGTERM_IN_A_CALLBACK = """

import signal

FINE_BUILT = []

def _sigterm_here():
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(HERE, "slow.started")) and time.time() < deadline:
        time.sleep(0.05)
    open(os.path.join(HERE, "sent"), "w").close()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs in here (unless deferred)
        for _ in range(1_000_000):
            pass
    except KeyboardInterrupt:
        open(os.path.join(HERE, "swallowed"), "w").close()
        raise  # ... and Python drops it: an exception cannot leave the callback

class _Swallows:
    def __del__(self):
        _sigterm_here()

def _after_fork():
    if FINE_BUILT and not os.path.exists(os.path.join(HERE, "sent")):
        _sigterm_here()

os.register_at_fork(after_in_parent=_after_fork)

def pytest_brainsmith_segment_finish(segment, result):
    if result.segment.endswith("fine"):
        FINE_BUILT.append(True)
        if os.environ["SIGTERM_IN"] == "finalizer":
            _Swallows()
"""


FINN_IN_PYTEST = """

def pytest_configure(config):
    from pytest_brainsmith.finn.runner import import_finn

    import_finn()
"""


@pytest.mark.parametrize("where", ["fork", "finalizer"])
def test_a_sigterm_python_would_swallow_still_stops_the_run(tmp_path: Path, where: str):
    folder = make_project(
        tmp_path / "p", "    - pass_through\n    - [slow, fine]\n    - [tail_a, hangs]\n"
    )
    conftest = folder / "conftest.py"
    conftest.write_text(conftest.read_text() + SIGTERM_IN_A_CALLBACK)
    env = {"SLOW_SECONDS": "600", "SIGTERM_IN": where}
    # "fork": the signal comes as a worker is forked for a build after ``fine``, in the
    # pytest process: FINN imported there, the builds are forked from it, not from a zygote
    if where == "fork":
        conftest.write_text(conftest.read_text() + FINN_IN_PYTEST)
    done = run(folder, "--brainsmith-workers", "2", env=env, timeout=120)
    assert (folder / "sent").exists()
    if where == "finalizer":  # the first KeyboardInterrupt was dropped
        assert (folder / "swallowed").exists()
    assert done.returncode == 2, done.stdout  # and the run was interrupted all the same
    assert "brainsmith" in done.stdout
    workers = [
        int((folder / f"{n}.pid").read_text())
        for n in ("slow", "hangs")
        if (folder / f"{n}.pid").exists()
    ]
    assert_ended(workers, "a build outlived the session")
    state = cache_state(folder / "build" / "brainsmith" / "cache")
    assert state["failures"] == [] and state["tmp"] == [] and state["running"] == []


@pytest.mark.parametrize("other_thread", [False, True])
def test_signals_wait_while_a_worker_is_started_and_registered(other_thread: bool):
    """What ``deferred`` guarantees the engine: the block runs to its end, the signal is
    raised right after it; also when the kernel hands the signal to another thread (the
    status line's, execnet's, Dask's), which no signal mask of the main thread stops."""
    stop = threading.Event()
    ticking = threading.Thread(target=lambda: [stop.wait(0.01) for _ in range(1000)])
    if other_thread:
        ticking.start()
    reached = []
    before = signal.getsignal(signal.SIGTERM)
    try:
        with interrupts.installed():
            with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
                with interrupts.deferred():
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.2)  # would be interrupted here without the block
                    reached.append("end of the block")
                interrupts.raise_pending()
    finally:
        stop.set()
    assert reached == ["end of the block"]
    assert signal.getsignal(signal.SIGTERM) is before  # restored


def test_a_signal_swallowed_after_the_last_turn_ends_explore_all_the_same():
    """``installed(raise_at_exit=True)`` (explore): a signal still pending at the end is
    raised; a nested block without it shares the signal and raises nothing of its own."""
    reached = []
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with interrupts.installed(raise_at_exit=True):
            with interrupts.installed():
                with interrupts.deferred():  # stands for a finalizer that swallowed it
                    os.kill(os.getpid(), signal.SIGTERM)
            reached.append("after the nested block")
    assert reached == ["after the nested block"]
    with interrupts.installed(raise_at_exit=True):
        pass  # nothing pending any more


def test_an_interrupt_before_the_worker_is_registered_leaves_no_lock(tmp_path: Path):
    """A Ctrl-C between taking a key's lock and registering its worker (a user hook,
    FINN's first import) releases the lock: a later engine in the same process (a
    notebook) builds the key instead of waiting for it forever."""
    from pytest_brainsmith.core.cache import SegmentCache
    from pytest_brainsmith.core.engine import Engine

    class Interrupting:
        def segment_start(self, segment, config, build_dir):
            raise KeyboardInterrupt("Ctrl-C")

        def segment_finish(self, segment, result):
            pass

    folder = make_project(tmp_path / "p", "    - pass_through\n")
    cache = SegmentCache(tmp_path / "cache")
    from pytest_brainsmith.core.blueprint import load_design_space
    from pytest_brainsmith.core.toolchain import finn_registry
    from pytest_brainsmith.core.tree import build_execution_tree

    registry = finn_registry()
    registry.register_step(lambda model, cfg: model, name="pass_through", reads=())
    tree = build_execution_tree(load_design_space(folder / "e.blueprint.yaml", registry))
    (leaf,) = tree.designs()
    engine = Engine(cache, workers=1, events=Interrupting())
    with pytest.raises(KeyboardInterrupt):
        engine.design(leaf)
    engine.shutdown(cancel=True)
    key = engine.key(leaf)
    other = SegmentCache(tmp_path / "cache")
    other.lock(key).acquire(timeout=0).release()  # free: a Timeout here is the leak
    assert list((cache.base / "tmp").glob(f"{key}.*")) == []  # no staging left behind


def test_explore_api_example_from_the_manual_runs(tmp_path: Path):
    text = (ROOT / "docs" / "python-api.md").read_text()
    start = text.index("<!-- example: explore -->")
    code = text.index("```python", start) + len("```python")
    block = text[code : text.index("```", code)]
    for name in ("blueprints", "models"):
        shutil.copytree(ROOT / name, tmp_path / name)
    script = tmp_path / "example.py"
    script.write_text(block)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("4 designs, 4 passed")
    luts = [float(line.rsplit("LUT ", 1)[1].split()[0]) for line in lines[1:]]
    assert len(luts) == 3 and luts == sorted(luts)
    assert (tmp_path / "build" / "brainsmith" / "cache" / "v1" / "entries").is_dir()


def test_x_stops_the_workers_and_records_nothing_for_what_it_stopped(tmp_path: Path):
    folder = make_project(
        tmp_path / "p", "    - pass_through\n    - [raises_once_slow_runs, slow]\n"
    )
    started = time.monotonic()
    done = run(folder, "-x", env={"SLOW_SECONDS": "600"})
    assert time.monotonic() - started < 120
    assert done.returncode == 1, done.stdout
    assert "1 failed" in done.stdout and "stopping after 1 failures" in done.stdout
    worker = int((folder / "slow.pid").read_text())  # it had started, eagerly
    assert not alive(worker)
    state = cache_state(folder / "build" / "brainsmith" / "cache")
    assert len(state["failures"]) == 1  # raises; the stopped build is nobody's failure
    assert state["tmp"] == [] and state["running"] == []
