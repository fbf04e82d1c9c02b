"""The warm engine between runs (``--brainsmith-server``): a real local Dask scheduler and
worker with FINN preloaded, started by the first session that builds, found again by the
next one, and replaced silently when it was killed; a fully cached run never looks for it."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from conftest import need_module, run_in, step_project

from pytest_brainsmith.core.composition import decide
from pytest_brainsmith.core.launchers import IDLE_SECONDS, stop_servers

need_module("distributed")

PASS_THROUGH = """
def pass_through(model, cfg):
    return model

def pytest_brainsmith_register(registry):
    registry.register_step(pass_through, reads=())
"""


def test_the_server_setting_is_on_off_or_an_idle_time(tmp_path: Path):
    def server(value: object) -> float | None:
        return decide(tmp_path, {"server": value}, {}.get, env={}).server

    assert server("1") == server("on") == server(True) == IDLE_SECONDS
    assert server(None) is server("0") is server("off") is None
    assert server("30m") == 1800.0
    assert decide(tmp_path, {}, {}.get, env={"BRAINSMITH_SERVER": "yes"}).server == IDLE_SECONDS


def test_sessions_share_one_warm_server_and_a_killed_one_is_replaced(tmp_path: Path):
    project = step_project(tmp_path / "project", PASS_THROUGH, "    - pass_through\n")
    home = tmp_path / "xdg"
    home.mkdir()
    servers = home / "pytest-brainsmith" / "servers"
    env = {"XDG_CACHE_HOME": str(home), "XDG_RUNTIME_DIR": "", "BRAINSMITH_SERVER": "1"}

    def session(*args: str) -> dict:
        done = run_in(project, *args, env=env, timeout=400)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "this run built 1 segments" in done.stdout, done.stdout
        # built on the server: this session imported no FINN, and nothing warned
        assert "FINN imported by 0 process(es)" in done.stdout, done.stdout
        assert "ServerWarning" not in done.stdout, done.stdout
        (found,) = servers.glob("server-*.json")
        return json.loads(found.read_text())

    try:
        first = session()
        assert session("--brainsmith-rebuild") == first  # found again: the same server

        done = run_in(project, env=env)  # fully cached: the server is not even looked for
        assert "this run built 0 segments" in done.stdout, done.stdout

        for pid in first["pids"]:  # the server dies (killed, the machine rebooted...)
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in first["pids"]):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        replaced = session("--brainsmith-rebuild")  # replaced silently
        assert replaced["address"] != first["address"]
    finally:
        stop_servers(servers)
    # nothing of any server is left running (each session started exactly what it recorded)
    left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if str(servers).encode() in _read(p)]
    assert left == []


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
