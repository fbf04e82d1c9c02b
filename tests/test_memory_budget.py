"""The engine's memory budget: each build's peak memory is recorded, and builds that
would not fit in the machine's memory together are not started side by side (real
worker processes and FINN's builder, registered pure-Python steps on the bundled model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import MODEL, STEPS_HEAD

from pytest_brainsmith import explore
from pytest_brainsmith.core import memory_budget
from pytest_brainsmith.core.memory_budget import MEMORY_FILE, MemoryBudget

MB = 1 << 20


def _hog(name: str, other: str):
    def hog(model, cfg):
        import os
        import time
        from pathlib import Path

        import numpy as np

        folder = Path(os.environ["HOG_DIR"])
        mine = folder / f"{name}.running"
        mine.touch()
        block = np.ones(300 * MB // 8)  # 300 MB, touched
        # did the other build run while this one did? (wait a while for it to start)
        deadline, saw = time.time() + float(os.environ["HOG_WAIT"]), False
        while not saw and time.time() < deadline:
            saw = (folder / f"{other}.running").exists()
            time.sleep(0.05)
        time.sleep(0.3)  # so that the other one sees this one too
        with open(folder / "hogs.jsonl", "a") as log:
            log.write(json.dumps([name, saw, float(block[-1])]) + "\n")
        mine.unlink()
        return model

    hog.__name__ = hog.__qualname__ = name
    return hog


def register(registry):
    registry.register_step(_hog("hog_a", "hog_b"), reads=())
    registry.register_step(_hog("hog_b", "hog_a"), reads=())


def _side_by_side(tmp_path: Path, cache: Path, monkeypatch, wait: float) -> bool:
    """Whether the two builds ran side by side (each waits ``wait`` s for the other)."""
    log = tmp_path / "hogs.jsonl"
    log.unlink(missing_ok=True)
    monkeypatch.setenv("HOG_DIR", str(tmp_path))
    monkeypatch.setenv("HOG_WAIT", str(wait))
    result = explore(
        tmp_path / "e.blueprint.yaml", cache=cache, workers=2, register=register, rebuild=True
    )
    assert len(result.passed) == 2, [d.reason for d in result.designs]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 2
    return any(saw for _, saw, _ in rows)


def test_builds_that_do_not_fit_together_run_one_after_the_other(tmp_path, monkeypatch):
    shutil.copyfile(MODEL, tmp_path / "tfc.onnx")
    (tmp_path / "e.blueprint.yaml").write_text(STEPS_HEAD + "    - tidy_up\n    - [hog_a, hog_b]\n")
    cache = tmp_path / "cache"

    # nothing recorded yet: both start at once, and each one's peak is recorded
    monkeypatch.setattr(memory_budget, "available_memory", lambda: 500 * MB)
    assert _side_by_side(tmp_path, cache, monkeypatch, wait=60)
    peaks = json.loads((cache / "v1" / MEMORY_FILE).read_text())
    assert 300 * MB <= peaks["user_hog_a"] < 600 * MB and 300 * MB <= peaks["user_hog_b"] < 600 * MB

    # now known to need 300 MB each: in 500 MB (425 usable) they take turns
    assert not _side_by_side(tmp_path, cache, monkeypatch, wait=3)
    # with room for both they run side by side again
    monkeypatch.setattr(memory_budget, "available_memory", lambda: 4000 * MB)
    assert _side_by_side(tmp_path, cache, monkeypatch, wait=60)


def test_the_users_cap_bounds_what_a_build_counts(tmp_path):
    (tmp_path / MEMORY_FILE).write_text(json.dumps({"step_a": 3000 * MB, "step_b": 100 * MB}))
    budget = MemoryBudget(tmp_path, available=1000 * MB)  # 850 MB usable
    assert budget.need(["step_a"]) == 3000 * MB
    assert budget.need(["step_new"]) == 3000 * MB  # never seen: the largest recorded
    assert budget.admits(["step_a"], running=[])  # alone, always
    assert not budget.admits(["step_b"], running=[["step_a"]])
    assert budget.admits(["step_b"], running=[["step_b"]])
    assert budget.workers(cores=8) == 1
    capped = MemoryBudget(tmp_path, max_memory=400 * MB, available=1000 * MB)
    assert capped.need(["step_a"]) == 400 * MB
    assert capped.admits(["step_a"], running=[["step_a"]])
    assert capped.workers(cores=8) == 2
