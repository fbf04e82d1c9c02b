from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "tfc_w2a2.onnx"

#: The top of a valid blueprint; tests append to it.
HEAD = """
model: model.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10
finn_config:
  target_fps: 1000
"""

#: A small real-FINN design space of the bundled model: 4 designs, 7 segments
#: (front end, 2 MVAU backends, 4 target_fps leaves).
TFC_BLUEPRINT = """
model: tfc.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10
design_space:
  kernels:
    - MVAU: [hls, rtl]
  finn_config:
    target_fps: [100000, 400000]
"""

#: Conftest text registering two user steps: one that always fails, one that does nothing.
FAILING_STEPS = """
def explode(model, cfg):
    raise ValueError("explode was asked to fail")

def pass_through(model, cfg):
    return model

def pytest_brainsmith_register(registry):
    registry.register_step(explode, reads=())
    registry.register_step(pass_through, reads=())
"""


#: A blueprint of the bundled model whose pipeline is the registered steps that follow.
STEPS_HEAD = """
model: tfc.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10
finn_config:
  target_fps: 1000
design_space:
  steps:
"""


def on_ci() -> bool:
    """The suite runs on CI (``CI=true``, as GitHub Actions, GitLab and most CIs set it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def need(condition: object, reason: str, *, module: bool = False) -> None:
    """A test's need of the machine (Slurm, Chromium, mount or unshare rights, a server
    binary): skipped here when ``condition`` is false, but failed on CI, which must never
    go green without having run it (``.ci/run`` installs what these tests need).
    ``module``: called at a module's top, for all of its tests."""
    if condition:
        return
    if on_ci():
        pytest.fail(f"needed on CI (CI={os.environ.get('CI')}): {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


def need_module(name: str) -> Any:
    """``pytest.importorskip`` that fails on CI instead (see ``need``)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        need(False, f"needs the package {name} ({exc})", module=True)


def pytest_sessionstart(session: pytest.Session) -> None:
    """FINN imported once, before any in-process (pytester inline) run: an inline run
    forgets the modules it imported when it ends, and a C extension among them (numpy's)
    or FINN's custom-op registry imported a second time breaks every later in-process
    build (``explore()`` in test_remote_cache failed at convert_to_hw in a full run)."""
    from pytest_brainsmith.finn.runner import FinnUnavailable, import_finn

    try:
        import_finn()
    except FinnUnavailable:
        pass  # the tests that need FINN say so themselves


def export_model(name: str, folder: Path) -> Path:
    """``scripts/make_models.py --model NAME FOLDER`` in a process of its own: torch and
    brevitas exporting in the test process (beside FINN's execution in earlier tests)
    crashed it, and took the session down with it."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_models.py"), "--model", name, str(folder)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return Path(done.stdout.split("wrote ", 1)[1].split(" (", 1)[0])


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest run in a subprocess sizes its output to ``COLUMNS`` (80 without a
    terminal) and drops a short summary line's message that does not fit after the
    long node ids: give every test's subprocesses room for what they assert."""
    monkeypatch.setenv("COLUMNS", "1000")


def step_project(folder: Path, conftest: str, steps: str) -> Path:
    """A project in ``folder``: the bundled model, ``conftest`` registering its steps, and
    ``e.blueprint.yaml`` running ``steps`` (YAML list lines under STEPS_HEAD)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MODEL, folder / "tfc.onnx")
    (folder / "conftest.py").write_text(conftest)
    (folder / "e.blueprint.yaml").write_text(STEPS_HEAD + steps)
    return folder


def take_builds(folder: Path) -> list[dict]:
    """The rows a project's conftest logged to ``builds.jsonl`` (one per segment build)
    since the last call; the log is consumed."""
    log = folder / "builds.jsonl"
    if not log.exists():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    log.unlink()
    return rows


def run_in(
    folder: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    report: str = "-rfs",
) -> subprocess.CompletedProcess[str]:
    """pytest in ``folder`` as a user runs it (a fresh process, CI=1 for untrimmed
    summaries), with ``report``'s outcomes (failures and skips) in the short summary."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", report, *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "CI": "1", **(env or {})},
    )


@pytest.fixture
def write(tmp_path: Path):
    """write("name.yaml", '''yaml''') -> path; dedents the text."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return _write


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """A stand-in model file for tests that never build (only its existence matters)."""
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not built in this test")
    return path
