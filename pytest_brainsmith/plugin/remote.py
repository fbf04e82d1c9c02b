"""``--brainsmith-remote-cache``: the remote cache tier's options, and what a run says
about it (a header line, and in the summary what was fetched and uploaded, summed over
xdist's workers). The tier itself is ``core/cache/remote/``."""

from __future__ import annotations

import os
from typing import Any

import pytest

from ..core.cache.remote.errors import RemoteCacheError
from ..core.cache.remote.stats import summary_line
from ..core.cache.remote.storage import check_backend
from ..core.cache.remote.tier import DEFAULT_TIMEOUT, MODES, RemoteCache
from ..core.cache.remote.trust import ENV
from ..core.cache.store import SegmentCache
from ..core.composition import RunSettings

#: per xdist worker: the remote tier's counts, gathered by the controller
remote_stats_key = pytest.StashKey[list[dict[str, Any]]]()


def add_options(group: Any, parser: pytest.Parser) -> None:
    group.addoption(
        "--brainsmith-remote-cache",
        metavar="URL",
        help="a remote cache tier behind the local cache, shared by CI runners: "
        "s3://BUCKET/PREFIX (standard AWS configuration: AWS_ENDPOINT_URL, keys, profiles) "
        "or any fsspec URL (file:///shared/dir, gs://...); also the ini option "
        "brainsmith_remote_cache or BRAINSMITH_REMOTE_CACHE",
    )
    group.addoption(
        "--brainsmith-remote-cache-mode",
        choices=list(MODES),
        help="read: fetch only (untrusted runners); write: upload only; readwrite (default)",
    )
    group.addoption(
        "--brainsmith-remote-cache-failures",
        action="store_true",
        default=None,
        help="also share failure records through the remote cache (fetch and upload them)",
    )
    group.addoption(
        "--brainsmith-remote-cache-timeout",
        metavar="SECONDS",
        help=f"the longest one remote call may take before the remote cache is given up "
        f"for the run (default {DEFAULT_TIMEOUT:g}s)",
    )
    parser.addini("brainsmith_remote_cache", default="", help="remote cache URL (see option)")
    parser.addini(
        "brainsmith_remote_cache_mode", default="", help="read | write | readwrite (default)"
    )
    parser.addini(
        "brainsmith_remote_cache_failures",
        type="bool",
        default=False,
        help="share failure records through the remote cache",
    )
    parser.addini(
        "brainsmith_remote_cache_timeout", default="", help="longest remote call (e.g. 30s)"
    )


def remote_cache(
    config: pytest.Config, settings: RunSettings, cache: SegmentCache, run_id: str
) -> RemoteCache | None:
    """The run's remote tier, if one is configured; None in xdist's controller, which
    builds nothing. A missing package is a usage error."""
    url = settings.remote_cache
    if not url:
        return None
    controller = config.getoption("numprocesses", None) and not hasattr(config, "workerinput")
    try:
        if controller or config.getoption("collectonly"):
            check_backend(url)  # the usage error, here too; nothing to fetch or upload
            return None
        return RemoteCache(
            url,
            cache,
            mode=settings.remote_cache_mode,
            share_failures=settings.remote_cache_failures,
            timeout=settings.remote_cache_timeout,
            run_id=run_id,
        )
    except RemoteCacheError as exc:
        raise pytest.UsageError(f"brainsmith: {exc}") from None


class RemoteReport:
    """The reporting process prints the remote tier's counts: its own, or those xdist's
    workers send (``workeroutput["brainsmith_remote"]``, written after the engine's
    shutdown, which waits for the uploads)."""

    def __init__(
        self, config: pytest.Config, settings: RunSettings, remote: RemoteCache | None
    ) -> None:
        self.config = config
        self.settings = settings
        self.remote = remote

    def pytest_report_header(self, config: pytest.Config) -> str | None:
        url = self.settings.remote_cache
        if not url:
            return None
        shared = self.remote.share_failures if self.remote is not None else False
        failures = ", failure records shared" if shared else ""
        signed = os.environ.get(ENV) if self.remote is None else self.remote.signer
        trust = f", signed with {ENV}" if signed else ""
        return (
            f"brainsmith: remote cache {url} ({self.settings.remote_cache_mode}{failures}{trust})"
        )

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        stats = getattr(node, "workeroutput", {}).get("brainsmith_remote")
        if stats:
            self.config.stash.setdefault(remote_stats_key, []).append(stats)

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        url = self.settings.remote_cache
        if not url:
            return
        gathered = self.config.stash.get(remote_stats_key, [])
        if self.remote is not None:
            gathered = [self.remote.report(), *gathered]
        if not gathered:
            return
        total: dict[str, Any] = {}
        for stats in gathered:
            for name, value in stats.items():
                if isinstance(value, int | float):
                    total[name] = total.get(name, 0) + value
        off = next((s["off"] for s in gathered if s.get("off")), None)
        mode = self.remote.mode if self.remote is not None else self.settings.remote_cache_mode
        terminalreporter.write_line(summary_line(url, mode, total, off))
