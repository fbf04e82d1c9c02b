"""The composition root: a run's settings decided once, and the engine wired from them.

``pytest`` (``plugin/run_context.py``) and ``explore()`` (``core/explore.py``) both call
``decide`` and ``make_engine``, so both read a setting the same way: the caller's own
value (a command-line option, an ``explore()`` argument), then the environment, then
the ini file, then the default. The cache defaults to ``<rootdir>/build/brainsmith/cache``
(the ini option ``brainsmith_build_dir`` moves the build folder), where pytest finds its
rootdir; ``explore()`` finds the same rootdir and ini file as pytest would for the
blueprint (``find_project``).
"""

from __future__ import annotations

import configparser
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .blueprint import DEFAULT_MAX_DESIGNS
from .cache.store import SegmentCache
from .engine import Engine, EngineEvents
from .errors import did_you_mean
from .launchers import BATCH_SYSTEMS, IDLE_SECONDS, Launcher, available_cores, launcher_for
from .units import parse_duration, parse_memory_limit

#: the environment variable of each setting that has one
ENV = {
    "cache": "BRAINSMITH_CACHE",
    "max_designs": "BRAINSMITH_MAX_COMBINATIONS",
    "scheduler": "BRAINSMITH_SCHEDULER",
    "server": "BRAINSMITH_SERVER",
    "remote_cache": "BRAINSMITH_REMOTE_CACHE",
    "fresh_workers": "BRAINSMITH_FRESH_WORKERS",
    "model": "BRAINSMITH_MODEL",
    "strict": "BRAINSMITH_STRICT",
}
#: the remote cache tier's modes
REMOTE_MODES = ("read", "write", "readwrite")
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
DEFAULT_BUILD_DIR = "build/brainsmith"
#: pytest's ini files, in the order it looks for them, and their section
INI_FILES = (
    ("pytest.ini", "pytest"),
    (".pytest.ini", "pytest"),
    ("pyproject.toml", "tool.pytest.ini_options"),
    ("tox.ini", "pytest"),
    ("setup.cfg", "tool:pytest"),
)


class SettingError(ValueError):
    """A setting's value is not one it can take (the message names it)."""


@dataclass(frozen=True)
class RunSettings:
    """What a run is configured with, decided once."""

    rootdir: Path
    build_dir: Path  # where the cache, results and studies live by default
    cache: Path
    workers: int
    max_designs: int
    scheduler: str | None
    timeout: float | None
    max_memory: int | None
    budget: float | None
    #: the warm server's idle seconds (``launchers.engine_server``), None: no server
    server: float | None = None
    #: the remote cache tier's URL (``remote_cache``), None: no remote tier
    remote_cache: str | None = None
    #: settings given that no longer change anything, with what to do instead
    obsolete: tuple[str, ...] = ()
    #: the model of blueprints that name none
    model: Path | None = None
    #: blueprint warnings are collection errors
    strict: bool = False
    #: per step (short name): resource -> amount (memory in bytes), from the ini option
    #: ``brainsmith_resources`` (a blueprint's ``step_resources`` win)
    resources: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: how the remote tier is used: read, write or readwrite
    remote_cache_mode: str = "readwrite"
    #: failure records shared through the remote tier too
    remote_cache_failures: bool = False
    #: the longest one remote call may take (None: the tier's default)
    remote_cache_timeout: float | None = None


def decide(
    rootdir: Path,
    given: Mapping[str, Any],
    ini: Callable[[str], Any],
    *,
    env: Mapping[str, str] | None = None,
    xdist_workers: int = 1,
    ini_dir: Path | None = None,
    cwd: Path | None = None,
) -> RunSettings:
    """The run's settings: each from ``given`` (the caller's values by setting name: ``cache``,
    ``workers``, ...), else the environment (``ENV``), else ``ini("brainsmith_<name>")``,
    else its default. ``workers`` ``auto`` (the default) is this process's cores, shared
    among ``xdist_workers``. Paths given or from the environment are relative to ``cwd``,
    from the ini file to ``ini_dir`` (default: ``rootdir``). Raises ``SettingError`` for a
    value a setting cannot take."""
    env = os.environ if env is None else env
    cwd = cwd or Path.cwd()

    def chosen(name: str) -> Any:
        for value in (given.get(name), env.get(ENV.get(name, "")), ini(f"brainsmith_{name}")):
            if value not in (None, ""):
                return value
        return None

    build_dir = rootdir / (ini("brainsmith_build_dir") or DEFAULT_BUILD_DIR)
    cache, scheduler = chosen("cache"), chosen("scheduler")
    if cache and given.get("cache") in (None, "") and not env.get(ENV["cache"]):
        cache = (ini_dir or rootdir) / Path(str(cache)).expanduser()  # the ini's: its folder
    designs = _parsed("brainsmith max designs", chosen("max_designs"), int, "an integer")
    return RunSettings(
        rootdir=rootdir,
        build_dir=build_dir,
        cache=(cwd / Path(str(cache)).expanduser()).absolute() if cache else build_dir / "cache",
        workers=_workers(chosen("workers"), xdist_workers),
        max_designs=DEFAULT_MAX_DESIGNS if designs is None else designs,
        scheduler=_scheduler(scheduler),
        timeout=_parsed(
            "--brainsmith-timeout", chosen("timeout"), parse_duration, "a duration such as 90s"
        ),
        max_memory=_parsed(
            "--brainsmith-max-memory",
            chosen("max_memory"),
            parse_memory_limit,
            "a size of at least 64M, such as 4G",
        ),
        budget=_parsed(
            "--brainsmith-budget", chosen("budget"), parse_duration, "a duration such as 2h"
        ),
        server=_server(chosen("server")),
        remote_cache=remote_cache_url(chosen("remote_cache")),
        obsolete=_obsolete(chosen),
        model=_model(given, env, ini, cwd, ini_dir or rootdir),
        strict=_strict(chosen, ini),
        resources=parse_resources(ini("brainsmith_resources")),
        remote_cache_mode=_remote_mode(chosen("remote_cache_mode")),
        remote_cache_failures=_switch(
            "--brainsmith-remote-cache-failures (ini brainsmith_remote_cache_failures)",
            chosen("remote_cache_failures"),
        ),
        remote_cache_timeout=_positive(
            "--brainsmith-remote-cache-timeout (ini brainsmith_remote_cache_timeout)",
            chosen("remote_cache_timeout"),
        ),
    )


def _model(
    given: Mapping[str, Any],
    env: Mapping[str, str],
    ini: Callable[[str], Any],
    cwd: Path,
    ini_dir: Path,
) -> Path | None:
    """``model``: given or from the environment (relative to ``cwd``), else the ini
    option (relative to the ini file's folder)."""
    for value, base in ((given.get("model"), cwd), (env.get(ENV["model"]), cwd)):
        if value not in (None, ""):
            return base / Path(str(value)).expanduser()
    value = ini("brainsmith_model")
    return ini_dir / Path(str(value)).expanduser() if value else None


def _strict(chosen: Callable[[str], Any], ini: Callable[[str], Any]) -> bool:
    """``strict``: given, ``BRAINSMITH_STRICT``, the ini option ``brainsmith_strict``, or
    (when that is unset) pytest's own ``strict``, as pytest's ``strict_*`` options do."""
    value = chosen("strict")
    if value in (None, ""):
        value = ini("strict")
    switch = _on_off(value)
    if switch is None:
        raise SettingError(
            f"--brainsmith-strict (ini brainsmith_strict, BRAINSMITH_STRICT): expected on or "
            f"off, got {value!r}"
        )
    return switch


def _remote_mode(value: Any) -> str:
    if value in (None, ""):
        return "readwrite"
    if value not in REMOTE_MODES:
        raise SettingError(
            "--brainsmith-remote-cache-mode (ini brainsmith_remote_cache_mode): expected one "
            f"of {', '.join(REMOTE_MODES)}, got {value!r}"
        )
    return str(value)


def _positive(label: str, value: Any) -> float | None:
    seconds = _parsed(label, value, parse_duration, "a duration such as 30s")
    if seconds is not None and seconds <= 0:
        raise SettingError(f"{label}: expected a duration such as 30s, got {value!r}")
    return seconds


#: The resource that is also the memory limit of a segment's build.
MEMORY = "memory"


def parse_resources(lines: Any) -> dict[str, dict[str, float]]:
    """The ini option ``brainsmith_resources``: lines ``STEP: NAME=AMOUNT[, NAME=AMOUNT]``,
    keyed by the step's short name (``step_hw_ipgen`` is ``hw_ipgen``). ``memory`` is a
    size (``32G``, ``32e9``), in bytes here; any other amount a number."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    found: dict[str, dict[str, float]] = {}
    for line in (line.strip() for line in lines or []):
        if not line:
            continue
        step, sep, rest = line.partition(":")
        asked: dict[str, float] = {}
        try:
            if not sep or not step.strip():
                raise ValueError
            for part in filter(None, (p.strip() for p in rest.split(","))):
                name, eq, amount = (s.strip() for s in part.partition("="))
                if not eq or not name:
                    raise ValueError
                if name == MEMORY:
                    asked[name] = 0.0 if amount == "0" else float(parse_memory_limit(amount))
                else:
                    asked[name] = float(amount)
                    if not math.isfinite(asked[name]) or asked[name] < 0:
                        raise ValueError
        except ValueError:
            raise SettingError(
                f"brainsmith_resources: expected 'STEP: NAME=AMOUNT, ...' with amounts of at "
                f"least 0 and memory a size (e.g. 'synthesize_bitfile: vivado=1, memory=32G'), "
                f"got {line!r}"
            ) from None
        found[step.strip().removeprefix("step_")] = asked
    return found


def decide_for(blueprint: Path, given: Mapping[str, Any]) -> RunSettings:
    """The settings of a run of ``blueprint`` outside pytest (``explore()``): the rootdir
    and ini file pytest would use for it (``find_project``), then ``decide``."""
    rootdir, ini = find_project(blueprint)
    return decide(rootdir, given, ini.get)


def make_engine(
    settings: RunSettings,
    *,
    run_id: str,
    tools: dict[str, str | None],
    events: EngineEvents | None = None,
    launcher: Launcher | None = None,
    cache: SegmentCache | None = None,
    **flags: Any,
) -> Engine:
    """The engine for ``settings`` (``flags``: the per-run switches, e.g. ``rebuild``),
    building with the launcher the settings choose (``launchers.launcher_for``: the warm
    server's, or the worker pool) unless one is given. ``cache``: the settings' cache,
    when the caller made it already (a remote tier given in ``flags`` publishes into it)."""
    cache = cache or SegmentCache(settings.cache)
    if launcher is None:
        launcher = launcher_for(settings, control_dir=cache.base / "dask", share=[cache])
    return Engine(
        cache,
        workers=settings.workers,
        timeout=settings.timeout,
        max_memory=settings.max_memory,
        budget=settings.budget,
        run_id=run_id,
        tools=tools,
        events=events,
        launcher=launcher,
        **flags,
    )


def find_project(path: Path, cwd: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The rootdir and ini options pytest would use for ``path`` (a blueprint, or a
    folder): the first folder from it upwards with a pytest ini file (``INI_FILES``),
    else the first with a ``pyproject.toml`` or ``setup.py``, else the folder ``path``
    and the working directory share (``path``'s own folder if that is the root)."""
    start = path if path.is_dir() else path.parent
    start = start.absolute()
    for folder in (start, *start.parents):
        for name, section in INI_FILES:
            options = _ini_options(folder / name, section)
            if options is not None:
                return folder, options
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() or (folder / "setup.py").is_file():
            return folder, {}
    common = Path(os.path.commonpath([start, (cwd or Path.cwd()).absolute()]))
    return (start if common == Path(common.anchor) else common), {}


def _ini_options(file: Path, section: str) -> dict[str, Any] | None:
    """The options of ``section`` in an ini file (None: no such file or section)."""
    if not file.is_file():
        return None
    try:
        if file.suffix == ".toml":
            data: Any = tomllib.loads(file.read_text())
            for part in section.split("."):
                data = data.get(part) if isinstance(data, dict) else None
            return {k: v for k, v in data.items()} if isinstance(data, dict) else None
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(file)
    except (OSError, ValueError, configparser.Error):
        return None
    if file.name in ("pytest.ini", ".pytest.ini") and not parser.has_section(section):
        return {}  # pytest takes these files even without the section
    return dict(parser[section]) if parser.has_section(section) else None


def _server(value: Any) -> float | None:
    """``server``: on (1, true, yes, on: the default idle time), off, or its idle time."""
    switch = _on_off(value)
    if switch is not None:
        return IDLE_SECONDS if switch else None
    return _parsed(
        "--brainsmith-server", value, parse_duration, "on, off or an idle time such as 30m"
    )


#: Dask's address schemes (``tcp://host:port``; a bare ``host:port`` is tcp)
DASK_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss", "inproc")
SCHEDULER_LABEL = "--brainsmith-scheduler (ini brainsmith_scheduler, BRAINSMITH_SCHEDULER)"


def _scheduler(value: Any) -> str | None:
    """``scheduler``: ``local``, a batch system's name or a Dask scheduler's address."""
    text = str(value).strip() if value is not None else ""
    if not text:
        return None
    if text == "local" or text in BATCH_SYSTEMS:
        return text
    scheme, found, rest = text.partition("://")
    if not found:
        scheme, rest = "tcp", text
    host, colon, port = rest.rstrip("/").rpartition(":")
    if scheme in DASK_SCHEMES and colon and host and port.isdigit():
        return text
    accepted = (
        "'local' (a LocalCluster here), a batch system ("
        + ", ".join(sorted(BATCH_SYSTEMS))
        + ") or a Dask scheduler's address such as tcp://host:8786"
    )
    hint = did_you_mean(text, ["local", *BATCH_SYSTEMS])
    why = f"; {hint}" if hint else ""
    if found and scheme in DASK_SCHEMES and not (colon and port.isdigit()):
        why = f"; {text!r} has no port number{why}"
    raise SettingError(f"{SCHEDULER_LABEL}: expected {accepted}, got {text!r}{why}")


def remote_cache_url(value: Any) -> str | None:
    """``remote_cache``: a URL with a bucket or a folder (``s3://BUCKET/PREFIX``)."""
    text = str(value).strip() if value is not None else ""
    if not text:
        return None
    scheme, found, rest = text.partition("://")
    if found and not rest.strip("/"):
        raise SettingError(
            "--brainsmith-remote-cache (ini brainsmith_remote_cache, BRAINSMITH_REMOTE_CACHE): "
            f"expected a URL with a bucket or folder, such as {scheme}://my-bucket/brainsmith, "
            f"got {text!r}"
        )
    return text


def _obsolete(chosen: Callable[[str], Any]) -> tuple[str, ...]:
    """What the run was given that no longer changes anything, and why."""
    found = []
    label = "--brainsmith-fresh-workers (ini brainsmith_fresh_workers, BRAINSMITH_FRESH_WORKERS)"
    if _switch(label, chosen("fresh_workers")):
        found.append(
            f"{label} changes nothing any more: every segment is built in a process of its "
            "own, forked from a zygote that never builds (core/launchers/worker_pool.py)"
        )
    return tuple(found)


def _on_off(value: Any) -> bool | None:
    """True for on (1, true, yes, on), False for off or nothing given, None otherwise."""
    text = str(value).strip().lower() if value is not None else ""
    if value is True or text in _ON:
        return True
    if value is None or value is False or text in ("", *_OFF):
        return False
    return None


def _switch(label: str, value: Any) -> bool:
    """An on/off setting (off unless given)."""
    switch = _on_off(value)
    if switch is None:
        raise SettingError(f"{label}: expected on or off (1/0, true/false, yes/no), got {value!r}")
    return switch


def _workers(value: Any, xdist_workers: int) -> int:
    if value is None or str(value).strip().lower() == "auto":
        return max(1, available_cores() // max(1, xdist_workers))
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = -1
    if count < 0:
        raise SettingError(
            f"--brainsmith-workers: expected 'auto' or a number of worker processes "
            f"(0 builds inline, for pdb), got {value!r}"
        )
    return count


def _parsed(label: str, value: Any, parse: Callable[[Any], Any], what: str) -> Any:
    if value is None:
        return None
    try:
        return parse(value)
    except (TypeError, ValueError):
        raise SettingError(f"{label}: expected {what}, got {value!r}") from None
