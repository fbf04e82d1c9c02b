"""One composition root (``core/composition.py``): pytest and ``explore()`` decide a run's
settings the same way (option > environment > ini > rootdir default) and find the same
cache for the same blueprint, wherever they are run from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_in, step_project

from pytest_brainsmith.core.composition import SettingError, decide, find_project
from pytest_brainsmith.plugin.run_context import run_settings

PASS_THROUGH = """
def pass_through(model, cfg):
    return model

def pytest_brainsmith_register(registry):
    registry.register_step(pass_through, reads=())
"""

EXPLORE = """
import json, sys
from pathlib import Path
from pytest_brainsmith import explore

sys.path.insert(0, sys.argv[1])
from conftest import pytest_brainsmith_register

result = explore(Path(sys.argv[1]) / "e.blueprint.yaml", register=pytest_brainsmith_register)
print(json.dumps(result.stats))
"""


def test_each_setting_comes_from_the_caller_then_the_environment_then_the_ini(tmp_path: Path):
    ini = {"brainsmith_cache": "from-ini", "brainsmith_workers": "3", "brainsmith_timeout": "2m"}
    env = {"BRAINSMITH_CACHE": "/from/env", "BRAINSMITH_MAX_COMBINATIONS": "7"}
    given = {"cache": "/given", "workers": 0, "max_designs": None, "budget": "1h"}
    settings = decide(tmp_path, given, ini.get, env=env)
    assert (settings.cache, settings.workers) == (Path("/given"), 0)
    assert (settings.max_designs, settings.timeout, settings.budget) == (7, 120.0, 3600.0)
    settings = decide(tmp_path, {}, ini.get, env=env)
    assert (settings.cache, settings.workers) == (Path("/from/env"), 3)
    settings = decide(tmp_path, {}, ini.get, env={})
    assert settings.cache == tmp_path / "from-ini"  # relative to the ini file's folder
    settings = decide(tmp_path, {}, {"brainsmith_build_dir": "out"}.get, env={})
    assert settings.cache == tmp_path / "out" / "cache"
    assert decide(tmp_path, {}, {}.get, env={}).cache == tmp_path / "build/brainsmith/cache"
    with pytest.raises(SettingError, match="--brainsmith-workers: expected 'auto'"):
        decide(tmp_path, {"workers": "many"}, {}.get, env={})
    with pytest.raises(SettingError, match="--brainsmith-timeout: expected a duration"):
        decide(tmp_path, {"timeout": "soon"}, {}.get, env={})
    # --brainsmith-fresh-workers changes nothing any more: every build has its own process
    assert decide(tmp_path, {}, {}.get, env={}).obsolete == ()
    for chosen in ({"fresh_workers": True}, {}):
        env = {} if chosen else {"BRAINSMITH_FRESH_WORKERS": "1"}
        (why,) = decide(tmp_path, chosen, {}.get, env=env).obsolete
        assert "--brainsmith-fresh-workers" in why and "changes nothing" in why
    assert decide(tmp_path, {}, {"brainsmith_fresh_workers": "off"}.get, env={}).obsolete == ()
    with pytest.raises(SettingError, match="ini brainsmith_fresh_workers.*expected on or off"):
        decide(tmp_path, {}, {"brainsmith_fresh_workers": "maybe"}.get, env={})


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ({"scheduler": "nosuch"}, r"--brainsmith-scheduler .*expected 'local'.*got 'nosuch'"),
        ({"scheduler": "tcp://nosuch"}, r"'tcp://nosuch' has no port number"),
        ({"scheduler": "slurmx"}, r"got 'slurmx'; did you mean 'slurm'"),
        ({"remote_cache": "s3://"}, r"--brainsmith-remote-cache .*such as s3://my-bucket"),
        ({"remote_cache": "file://"}, r"expected a URL with a bucket or folder"),
        ({"remote_cache": "file:///"}, r"expected a URL with a bucket or folder"),
        ({"max_memory": "1"}, r"--brainsmith-max-memory: expected a size of at least 64M"),
        ({"max_memory": "63M"}, r"--brainsmith-max-memory: expected a size of at least 64M"),
    ],
)
def test_a_setting_it_cannot_take_is_named_with_what_it_accepts(
    tmp_path: Path, given: dict, match: str
):
    with pytest.raises(SettingError, match=match):
        decide(tmp_path, given, {}.get, env={})


def test_settings_it_can_take_pass(tmp_path: Path):
    for scheduler in ("local", "slurm", "tcp://10.0.0.1:8786", "127.0.0.1:8786", "tls://h:1"):
        assert decide(tmp_path, {"scheduler": scheduler}, {}.get, env={}).scheduler == scheduler
    settings = decide(tmp_path, {"remote_cache": "s3://bucket", "max_memory": "64M"}, {}.get)
    assert (settings.remote_cache, settings.max_memory) == ("s3://bucket", 64 << 20)


@pytest.mark.parametrize(
    "args",
    [
        ("--brainsmith-scheduler", "tcp://nosuch"),
        ("--brainsmith-remote-cache", "s3://"),
        ("--brainsmith-max-memory", "1"),
    ],
)
def test_pytest_says_so_as_a_usage_error(pytester: pytest.Pytester, args: tuple[str, str]):
    done = pytester.runpytest_subprocess(*args)
    assert done.ret == pytest.ExitCode.USAGE_ERROR
    done.stderr.fnmatch_lines([f"ERROR: {args[0]}*expected*"])
    assert "INTERNALERROR" not in done.stdout.str() + done.stderr.str()


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("pytest.ini", "[pytest]\nbrainsmith_build_dir = out\n"),
        ("tox.ini", "[pytest]\nbrainsmith_build_dir = out\n"),
        ("setup.cfg", "[tool:pytest]\nbrainsmith_build_dir = out\n"),
        ("pyproject.toml", '[tool.pytest.ini_options]\nbrainsmith_build_dir = "out"\n'),
    ],
)
def test_explore_finds_the_rootdir_and_ini_pytest_finds(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str, text: str
):
    monkeypatch.delenv("BRAINSMITH_CACHE", raising=False)
    pytester.path.joinpath(name).write_text(text)
    blueprint = pytester.path / "sub" / "deeper" / "a.blueprint.yaml"
    blueprint.parent.mkdir(parents=True)
    blueprint.write_text("model: m.onnx\n")
    monkeypatch.chdir(blueprint.parent)  # pytest run from the blueprint's folder
    config = pytester.parseconfig(str(blueprint))
    rootdir, ini = find_project(blueprint)
    assert rootdir == config.rootpath == pytester.path
    assert decide(rootdir, {}, ini.get).cache == run_settings(config).cache
    assert run_settings(config).cache == pytester.path / "out" / "cache"


def test_explore_and_pytest_share_the_cache_pytest_would_use(tmp_path: Path):
    project = step_project(tmp_path / "project", PASS_THROUGH, "    - pass_through\n")
    (project / "pytest.ini").write_text("[pytest]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = elsewhere / "explore_it.py"
    script.write_text(EXPLORE)

    def explore(env: dict[str, str]) -> dict:
        done = subprocess.run(
            [sys.executable, str(script), str(project)],
            cwd=elsewhere,
            capture_output=True,
            text=True,
            timeout=300,
            env={k: v for k, v in os.environ.items() if k != "BRAINSMITH_CACHE"} | env,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    # run from another folder: the cache is the project's (pytest's rootdir), not the cwd's
    assert explore({})["segments_built"] == 1
    assert (project / "build" / "brainsmith" / "cache" / "v1" / "entries").is_dir()
    assert not (elsewhere / "build").exists()
    done = run_in(project)
    assert "this run built 0 segments" in done.stdout, done.stdout  # pytest reuses it

    # BRAINSMITH_CACHE moves it for both
    shared = tmp_path / "shared"
    assert explore({"BRAINSMITH_CACHE": str(shared)})["segments_built"] == 1
    assert (shared / "v1" / "entries").is_dir()
    done = run_in(project, env={"BRAINSMITH_CACHE": str(shared)})
    assert "this run built 0 segments" in done.stdout, done.stdout


PARITY_INI = """[pytest]
brainsmith_cache = shared-cache
brainsmith_workers = 3
brainsmith_max_designs = 77
brainsmith_timeout = 2m
brainsmith_max_memory = 2G
brainsmith_budget = 1h
brainsmith_scheduler = tcp://10.1.2.3:8786
brainsmith_remote_cache = file:///srv/cache
brainsmith_remote_cache_mode = read
brainsmith_remote_cache_failures = true
brainsmith_remote_cache_timeout = 45s
brainsmith_model = models/net.onnx
brainsmith_strict = true
brainsmith_resources =
    hw_ipgen: vivado=1, memory=8G
    synthesize_bitfile: vivado=2
"""

PARITY_CONFTEST = """
import dataclasses, json
from pytest_brainsmith.plugin.run_context import run_settings

def pytest_configure(config):
    settings = dataclasses.asdict(run_settings(config))
    with open("settings.json", "w") as out:
        json.dump(settings, out, default=str, sort_keys=True)
"""


def test_pytest_and_explore_decide_every_setting_alike(tmp_path: Path):
    """Every setting pytest honours, explore() honours: from one ini file and one
    environment both decide the same RunSettings; and each setting pytest takes as an
    option explore() takes as an argument."""
    import dataclasses
    import inspect

    from pytest_brainsmith import explore
    from pytest_brainsmith.core.composition import RunSettings, decide_for

    (tmp_path / "pytest.ini").write_text(PARITY_INI)
    (tmp_path / "conftest.py").write_text(PARITY_CONFTEST)
    (tmp_path / "x.blueprint.yaml").write_text("model: net.onnx\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINSMITH_")}
    env["BRAINSMITH_SERVER"] = "off"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (tmp_path / "settings.json").exists(), done.stdout + done.stderr
    from_pytest = json.loads((tmp_path / "settings.json").read_text())
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        decided = decide_for(tmp_path / "x.blueprint.yaml", {})
    finally:
        os.environ.clear()
        os.environ.update(old)
    from_explore = json.loads(json.dumps(dataclasses.asdict(decided), default=str, sort_keys=True))
    from_explore["workers"] = from_pytest["workers"]  # -n shares cores; none here: equal
    assert from_explore == from_pytest
    # and what the ini said reached both (not defaults agreeing by chance)
    assert from_pytest["strict"] is True and from_pytest["remote_cache_mode"] == "read"
    assert from_pytest["resources"]["hw_ipgen"] == {"vivado": 1.0, "memory": 8 * 2**30}
    assert from_pytest["model"] == str(tmp_path / "models" / "net.onnx")
    # every setting pytest takes on its command line explore() takes as an argument
    arguments = set(inspect.signature(explore).parameters)
    ini_only = {"rootdir", "build_dir", "obsolete", "resources", "server"}
    for setting in dataclasses.fields(RunSettings):
        if setting.name not in ini_only:
            assert setting.name in arguments, f"explore() has no argument {setting.name!r}"
