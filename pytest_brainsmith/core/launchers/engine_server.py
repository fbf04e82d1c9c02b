"""A warm engine between runs: a local Dask scheduler and workers with FINN preloaded that
outlive the session, found again by the next one (as Gradle's daemon, Bazel's server).

FINN's import is seconds of every cold run. With the server on (``--brainsmith-server``,
the ini option ``brainsmith_server``, ``BRAINSMITH_SERVER=1``; a duration sets its idle
time), the first build of a session looks for this environment's server: an address file
in ``$XDG_RUNTIME_DIR/pytest-brainsmith/servers/`` (else ``~/.cache/pytest-brainsmith/``), named after the host
and the environment (this Python, the plugin's code: an edited plugin gets a new server),
read and written under a file lock. One that answers is used; none, a dead one or one
that does not answer is stopped (its process groups) and replaced, silently. The server
is ``dask scheduler --idle-timeout`` plus ``dask worker --preload`` (``dask_worker.preload()``)
started in sessions of their own: Dask closes the scheduler after the idle time and the
workers follow it (``--death-timeout``). Builds then run as on any Dask cluster
(``dask_cluster``): forked from a worker that has FINN. A server that cannot be started at
all leaves the run to the local engine, with a warning, never a failure.

A fully cached run builds nothing, so it never looks for the server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from filelock import FileLock

from .. import toolchain
from .dask_cluster import ClusterError, DaskLauncher, DaskSession, connect
from .dask_worker import preload
from .workers import Worker

#: the idle time after which the server stops, unless told otherwise
IDLE_SECONDS = 900.0
#: how long a session waits for a server it starts to write its address
START_SECONDS = 60.0
#: how long a worker waits for a scheduler that went away before it stops too (also how
#: long its nanny lets it start: importing FINN takes long on a busy machine)
DEATH_SECONDS = 600


#: the processes this one started (kept: a Popen collected while its process runs warns)
_STARTED: list[subprocess.Popen[bytes]] = []


class ServerWarning(UserWarning):
    """The warm server could not be used: this run builds on its own workers."""


def server_dir() -> Path:
    """Where servers' address files live: the user's runtime folder, else the user's
    cache folder (not the segment cache: removing it must not orphan a server)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return Path(runtime) / "pytest-brainsmith" / "servers"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    with contextlib.suppress(OSError):
        os.makedirs(cache, exist_ok=True)
    if os.path.isdir(cache) and os.access(cache, os.W_OK):
        return Path(cache) / "pytest-brainsmith" / "servers"
    return Path(tempfile.gettempdir()) / f"pytest-brainsmith-{os.getuid()}" / "servers"


def environment_id() -> str:
    """This environment: the Python, and the plugin's code (its files' sizes and times)."""
    package = Path(__file__).resolve().parents[2]
    stamps = []
    for path in sorted(package.rglob("*.py")):
        with contextlib.suppress(OSError):
            st = path.stat()
            stamps.append((str(path.relative_to(package)), st.st_size, st.st_mtime_ns))
    text = json.dumps([sys.executable, sys.version, stamps])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_server(
    directory: Path, *, workers: int, idle: float = IDLE_SECONDS, replace: bool = False
) -> str:
    """The address of this environment's server, started if none answers (``replace``:
    start a new one whatever the old one says). Raises ``ClusterError`` if it cannot."""
    directory.mkdir(parents=True, exist_ok=True)
    base = directory / f"server-{socket.gethostname()}-{environment_id()}"
    info_file = base.with_suffix(".json")
    with FileLock(f"{base}.lock", timeout=START_SECONDS * 2):
        info = _read(info_file)
        if info is not None and not replace and _answers(info):
            return str(info["address"])
        if info is not None:
            _note(base, f"replacing the server at {info['address']} (pids {info.get('pids')})")
            stop(info)
            info_file.unlink(missing_ok=True)
        info = _start(base, workers, idle)
        _note(base, f"started a server at {info['address']} (pids {info['pids']})")
        tmp = info_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, info_file)
        return str(info["address"])


def stop_servers(directory: Path) -> int:
    """Stop every server whose address file is in ``directory``; how many there were."""
    count = 0
    for info_file in sorted(directory.glob("server-*.json")):
        with FileLock(f"{info_file.with_suffix('')}.lock", timeout=START_SECONDS):
            info = _read(info_file)
            if info is not None:
                stop(info)
                count += 1
            info_file.unlink(missing_ok=True)
    return count


def stop(info: dict[str, Any]) -> None:
    """End a server's processes (each started in a process group of its own)."""
    groups = [pid for pid in info.get("pids", []) if _is_dask(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in groups:
            with contextlib.suppress(OSError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + 5.0
        while any(_is_dask(pid) for pid in groups) and time.monotonic() < deadline:
            time.sleep(0.05)
        groups = [pid for pid in groups if _is_dask(pid)]
        if not groups:
            return


def _start(base: Path, workers: int, idle: float) -> dict[str, Any]:
    scheduler_file = Path(f"{base}.scheduler")  # Dask writes its address there
    scheduler_file.unlink(missing_ok=True)
    log = f"{base}.log"
    dask = [sys.executable, "-m", "dask"]
    scheduler = _spawn(
        [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--idle-timeout", f"{idle:g}s", "--scheduler-file", str(scheduler_file)],
        log,
    )  # fmt: skip
    deadline = time.monotonic() + START_SECONDS
    address = None
    while address is None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            address = json.loads(scheduler_file.read_text())["address"]
        if address is None:
            if not _is_dask(scheduler) or time.monotonic() > deadline:
                stop({"pids": [scheduler]})
                raise ClusterError(f"the warm server's scheduler did not start (see {log})")
            time.sleep(0.05)
    worker = _spawn(
        [*dask, "worker", str(address), "--nworkers", str(max(1, workers)), "--nthreads", "1",
         "--host", "127.0.0.1", "--no-dashboard", "--preload", preload(),
         "--death-timeout", str(DEATH_SECONDS), "--local-directory", f"{base}.work"],
        log,
    )  # fmt: skip
    return {"address": address, "pids": [scheduler, worker], "started": time.time()}


def _spawn(argv: list[str], log: str) -> int:
    """A process in a session of its own (Ctrl-C in the terminal does not reach it, and it
    outlives this one), its output appended to ``log``. (Not ``os.posix_spawn``: a signal
    during it makes Python retry it, and the first process started is left behind.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    with open(log, "ab") as output:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    _STARTED.append(process)  # never waited for here: it outlives this process
    return process.pid


def _note(base: Path, text: str) -> None:
    """A line in the server's log: what the sessions did to it, and which one."""
    with contextlib.suppress(OSError), open(f"{base}.log", "a") as log:
        log.write(
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} - pytest-brainsmith (pid {os.getpid()}) - {text}\n"
        )


def _read(info_file: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(info_file.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "address" in info else None


def _answers(info: dict[str, Any]) -> bool:
    """The server's processes are there and its scheduler takes connections."""
    if not all(_is_dask(pid) for pid in info.get("pids", [])):
        return False
    host, _, port = str(info["address"]).removeprefix("tcp://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


def _is_dask(pid: int) -> bool:
    """A live process of ours (a pid may be reused: its command line must be Dask's). A
    process just started may show no command line yet (exec under way): asked again."""
    for _ in range(100):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return False
        if state in ("Z", "X"):  # exited (a zombie until its parent reaps it)
            return False
        if cmdline:
            return b"dask" in cmdline
        time.sleep(0.01)
    return False


class ServerLauncher:
    """The engine's launcher with a warm server: on the first build it finds (or starts)
    the server and builds there, as on any Dask cluster; if it cannot, it builds on this
    machine's own workers (``Worker``) and says so once (``ServerWarning``)."""

    def __init__(
        self,
        directory: Path,
        control_dir: Path,
        *,
        workers: int,
        idle: float = IDLE_SECONDS,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.directory = directory
        self.control_dir = control_dir
        self.workers = workers
        self.idle = idle
        self.warn = warn or (lambda text: warnings.warn(text, ServerWarning, stacklevel=2))
        self.session: DaskSession | None = None
        self._local = False
        self.spares = 0  # the server's workers are started already
        self.started = 0  # builds started, there or here
        self.lost: list[str] = []

    local = False  # its builds' memory is the server's (or, once it failed, unbudgeted)
    slots = None  # as many at once as the engine has workers
    imports = 0  # the server's workers import the compiler (``preload``)

    @property
    def remote(self) -> bool:
        return self._launcher() is not None

    def _launcher(self) -> DaskLauncher | None:
        if self.session is None and not self._local:
            problem: Exception | None = None
            for replace in (False, True):  # a server that does not serve is replaced
                try:
                    address = ensure_server(
                        self.directory, workers=self.workers, idle=self.idle, replace=replace
                    )
                    session = connect(address, control_dir=self.control_dir)
                except (ClusterError, OSError, TimeoutError) as exc:
                    problem = exc
                    continue
                try:
                    session.launcher.wait_for_workers()
                except ClusterError as exc:
                    session.close()
                    problem = exc
                    continue
                self.session = session
                break
            else:
                self._local = True
                self.warn(f"the warm server cannot be used ({problem}); building locally")
        return self.session.launcher if self.session is not None else None

    def __call__(self, job: Callable[[], dict[str, Any]], **options: Any) -> Any:
        self.started += 1
        launcher = self._launcher()
        if launcher is not None:
            # this machine's workers: no resources to match, as for the local engine (the
            # memory a step asks for is its build's limit, ``max_memory``, all the same)
            return launcher(job, **{**options, "resources": {}})
        for remote_only in ("timeout", "priority", "resources"):
            options.pop(remote_only, None)
        return Worker(job, **options)

    def share(self, objects: Iterable[Any]) -> None:
        """Nothing is shared by identity: builds travel pickled (to the server) or are
        forked from here (``Worker``)."""

    def prepare(self, close_fds: tuple[int, ...] = ()) -> str | None:
        """The compiler imported here, for the builds forked here once the server
        failed (the server's workers import their own)."""
        try:
            toolchain.current().prepare()
        except toolchain.ToolchainUnavailable as exc:
            return str(exc)
        return None

    def describe(self) -> str | None:
        if self.session is None:
            return "warm server: not used yet"
        return self.session.launcher.describe()

    def close(self) -> None:
        """The session ends: its connection closes, the server stays for the next one."""
        if self.session is not None:
            self.session.close()
            self.session = None
