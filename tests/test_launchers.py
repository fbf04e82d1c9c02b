"""The launchers (core/launchers/): every launcher has every member the ``Launcher``
Protocol declares, every build handle every member of ``Build``, with the right kind
(a method, or a value of the declared type); and one function chooses the launcher each
``--brainsmith-scheduler`` value names. Real objects: a Dask scheduler in this process
on loopback (no workers: nothing is built), a warm-server launcher that is never asked
to build (so it starts no server), a worker pool that forks a trivial job."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_brainsmith.core.composition import decide, make_engine
from pytest_brainsmith.core.launchers import (
    BATCH_SYSTEMS,
    Build,
    DaskBuild,
    DaskLauncher,
    ForkedBuild,
    JobqueueLauncher,
    Launcher,
    ServerLauncher,
    Worker,
    WorkerPool,
    connect,
    launcher_class,
    launcher_for,
)
from pytest_brainsmith.core.launchers.launcher import Build as BuildProtocol

distributed = pytest.importorskip("distributed")


def members(protocol: type) -> dict[str, Any]:
    """The Protocol's declared members: name -> its type (data) or ``"method"``."""
    hints = typing.get_type_hints(protocol)
    found: dict[str, Any] = dict(hints)
    for name, value in vars(protocol).items():
        if inspect.isfunction(value) and (name == "__call__" or not name.startswith("_")):
            found[name] = "method"
    return found


def of_type(value: Any, declared: Any) -> bool:
    """``value`` is of the declared type (``int | None``, ``list[str]``, ``bool``...)."""
    if isinstance(declared, types.UnionType) or typing.get_origin(declared) is typing.Union:
        return any(of_type(value, arg) for arg in typing.get_args(declared))
    if declared is type(None):
        return value is None
    origin = typing.get_origin(declared)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, declared)


def check(instance: Any, protocol: type, *, read_properties: bool = True) -> None:
    """Every member of ``protocol`` on ``instance``, of the right kind."""
    for name, kind in members(protocol).items():
        static = inspect.getattr_static(instance, name)  # present, without running it
        where = f"{type(instance).__name__}.{name}"
        if kind == "method":
            assert callable(static) and not isinstance(static, property), where
            declared = inspect.signature(getattr(protocol, name)).parameters
            have = inspect.signature(getattr(instance, name)).parameters
            for parameter in list(declared)[1:]:  # after self: each is accepted
                taken = parameter in have or any(
                    p.kind is inspect.Parameter.VAR_KEYWORD for p in have.values()
                )
                assert taken, f"{where} does not take {parameter}"
            continue
        assert not inspect.isfunction(static), f"{where} should be a value, not a method"
        if read_properties or not isinstance(static, property):
            value = getattr(instance, name)
            assert of_type(value, kind), f"{where} is {value!r}, declared {kind}"


@pytest.fixture(scope="module")
def scheduler() -> Iterator[Any]:
    """A Dask scheduler in this process on loopback, with no workers."""
    cluster = distributed.LocalCluster(
        n_workers=0,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    )
    try:
        yield cluster
    finally:
        cluster.close()


def test_the_protocols_declare_what_the_scheduler_uses():
    assert set(members(Launcher)) == {
        "remote",
        "local",
        "spares",
        "slots",
        "lost",
        "started",
        "imports",
        "__call__",
        "share",
        "prepare",
        "describe",
        "close",
    }
    assert BuildProtocol is Build
    assert {"poll", "waitables", "kill", "reap", "exit_cause", "output_tail"} <= set(members(Build))
    assert {"result", "killed_by_us"} <= set(members(Build))


def test_every_launcher_has_every_member(tmp_path: Path, scheduler: Any):
    pool = WorkerPool(fork_server=False)
    server = ServerLauncher(tmp_path / "servers", tmp_path / "dask", workers=2)
    session = connect(scheduler.scheduler_address, control_dir=tmp_path / "dask")
    jobs = JobqueueLauncher(
        session.client, tmp_path / "jobs", address=session.address, kind="slurm"
    )
    try:
        for launcher in (pool, session.launcher, jobs):
            check(launcher, Launcher)
            assert isinstance(launcher, Launcher)
        check(server, Launcher, read_properties=False)
        assert server.session is None  # reading its members started no server
        # the no-op defaults say what they are
        assert (pool.local, pool.remote, pool.describe(), pool.slots) == (True, False, None, None)
        assert (session.launcher.local, session.launcher.remote) == (False, True)
        assert session.launcher.prepare() is None and session.launcher.imports == 0
        assert server.local is False and server.describe() == "warm server: not used yet"
        for launcher in (pool, session.launcher, jobs, server):
            launcher.share([check])  # accepted by all (only the pool numbers it)
            launcher.close()
            launcher.close()  # twice: the scheduler and the session end both close it
        assert pool.table == [check]
    finally:
        session.close()


def test_every_build_handle_has_every_member(tmp_path: Path, scheduler: Any):
    output = tmp_path / "worker.log"
    handles: list[Any] = [Worker(lambda: {"status": "ok"}, output=output)]
    pool = WorkerPool(fork_server=False, spares=0)
    handles.append(pool(lambda: {"status": "ok"}, output=output))
    session = connect(scheduler.scheduler_address, control_dir=tmp_path / "dask")
    try:
        # asks for a resource no worker declares: answered at once, nothing submitted
        (tmp_path / "seg").mkdir()
        handles.append(
            session.launcher(dict, output=tmp_path / "seg" / "w.log", resources={"x": 1})
        )
        assert [type(h) for h in handles] == [Worker, ForkedBuild, DaskBuild]
        for handle in handles:
            while not handle.poll():
                pass
            check(handle, Build)
            assert isinstance(handle, Build)
            handle.reap(timeout=5.0)
        assert handles[0].result["status"] == "ok" and handles[1].result["status"] == "ok"
        assert "declares the resources x=1" in handles[2].result["error"]
        assert pool.started == 1 and session.launcher.started == 1
    finally:
        pool.close()
        session.close()


SETTINGS = [  # (scheduler, server, workers) -> the launcher class chosen
    ((None, None, 2), WorkerPool),
    ((None, None, 0), WorkerPool),
    ((None, 900.0, 2), ServerLauncher),
    ((None, 900.0, 0), WorkerPool),  # inline builds: no server
    (("local", None, 2), DaskLauncher),
    (("local", 900.0, 2), DaskLauncher),  # a scheduler named wins over the server
    (("tcp://10.0.0.1:8786", None, 2), DaskLauncher),
    *(((name, None, 2), JobqueueLauncher) for name in BATCH_SYSTEMS),
]


@pytest.mark.parametrize(("given", "expected"), SETTINGS)
def test_the_chooser_picks_the_launcher_each_setting_names(given: tuple, expected: type):
    scheduler, server, workers = given
    assert launcher_class(scheduler, server=server, workers=workers) is expected


def test_a_cluster_object_is_built_on_with_dask(tmp_path: Path, scheduler: Any):
    assert launcher_class(None, cluster=scheduler) is DaskLauncher
    assert launcher_class("slurm", cluster=scheduler) is DaskLauncher  # the object wins
    session = connect(None, cluster=scheduler, control_dir=tmp_path)
    try:
        assert type(session.launcher) is DaskLauncher
    finally:
        session.client.close()  # the fixture's cluster stays open


def test_an_address_connects_a_dask_launcher(tmp_path: Path, scheduler: Any):
    session = connect(scheduler.scheduler_address, control_dir=tmp_path)
    try:
        assert type(session.launcher) is DaskLauncher
        assert session.address == scheduler.scheduler_address
    finally:
        session.close()


def test_the_composition_root_builds_with_the_launcher_chosen(tmp_path: Path):
    made = {}
    for server in ("off", "on"):
        settings = decide(tmp_path, {"server": server, "workers": "2"}, {}.get, env={})
        chosen = launcher_for(settings, control_dir=tmp_path / "dask")
        engine = make_engine(settings, run_id="r", tools={})
        try:
            assert type(engine.starter.launcher) is type(chosen)
        finally:
            engine.shutdown()
        made[server] = type(chosen)
    assert made == {"off": WorkerPool, "on": ServerLauncher}
