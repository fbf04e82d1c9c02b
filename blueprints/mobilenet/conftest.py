"""MobileNet-v1's blueprints: its build steps registered, its model generated on first use.

This folder is explored only when asked for by path (``pytest blueprints/mobilenet``):
``pytest blueprints/`` stays the quick example run. The model (17 MB of QONNX, made by
``scripts/make_models.py --model mobilenet`` from brevitas_examples' MobileNet-v1 with
fixed-seed random weights) is written to ``build/models/`` the first time a blueprint
here is collected, in a process of its own (torch's export), under a file lock so that
xdist's workers make it once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from pytest_brainsmith.finn.mobilenet_steps import register

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MODELS = ROOT / "build" / "models"
#: blueprint file -> the make_models.py model it needs
NEEDS = {
    "mobilenet.blueprint.yaml": ("mobilenet", "mobilenet_v1_w4a4.onnx"),
}


def pytest_brainsmith_register(registry):
    register(registry)


def _asked_for(config: pytest.Config) -> bool:
    """Whether a command-line argument names this folder or something in it."""
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.parent == HERE and not _asked_for(config):
        return True  # the long MobileNet runs only when its folder is named
    return None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> None:
    if file_path.parent == HERE and file_path.name in NEEDS:
        ensure_model(*NEEDS[file_path.name])


def ensure_model(name: str, file_name: str) -> Path:
    target = MODELS / file_name
    MODELS.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.exists():
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "scripts" / "make_models.py"),
                    "--model",
                    name,
                    str(MODELS),
                ],
                check=True,
                capture_output=True,
            )
    return target
