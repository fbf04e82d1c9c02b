"""What the remote tier moved in a run, counted from its threads, and the summary line
the terminal shows (summed over xdist's workers by the plugin)."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

_LOCK = threading.Lock()  # counts are added from the pool's threads


@dataclass
class RemoteStats:
    """What the remote tier moved in this run (seconds: summed over transfers)."""

    fetched: int = 0
    fetched_bytes: int = 0
    fetch_seconds: float = 0.0
    checkpoints: int = 0  # deferred checkpoints fetched when a child needed them
    checkpoint_bytes: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    upload_seconds: float = 0.0
    already_there: int = 0  # built here, but another runner had uploaded it
    failures_fetched: int = 0
    failures_uploaded: int = 0
    rejected: int = 0  # remote entries that failed their check
    untrusted: int = 0  # documents not signed with this runner's key: ignored
    records_fetched: int = 0  # verification records fetched with their entries
    records_uploaded: int = 0
    signatures: int = 0  # documents signed or checked (with a signing key)
    signature_seconds: float = 0.0  # spent signing and checking them
    pending: int = 0  # uploads abandoned at the end (the remote stopped answering)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add(self, **amounts: float) -> None:
        """Add to the counts (any thread)."""
        with _LOCK:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)


def summary_line(url: str, mode: str, stats: dict[str, Any], off: str | None = None) -> str:
    """``remote cache URL (mode): fetched N entries (X MB, Y s), ...`` for the terminal."""
    mb = 1e6
    parts = [
        f"fetched {int(stats.get('fetched', 0))} entries "
        f"({stats.get('fetched_bytes', 0) / mb:.1f} MB) and "
        f"{int(stats.get('checkpoints', 0))} checkpoints "
        f"({stats.get('checkpoint_bytes', 0) / mb:.1f} MB) "
        f"in {stats.get('fetch_seconds', 0.0):.1f} s of transfers",
        f"uploaded {int(stats.get('uploaded', 0))} "
        f"({stats.get('uploaded_bytes', 0) / mb:.1f} MB in "
        f"{stats.get('upload_seconds', 0.0):.1f} s of transfers)",
    ]
    if stats.get("already_there"):
        parts.append(f"{int(stats['already_there'])} already there")
    if stats.get("failures_fetched") or stats.get("failures_uploaded"):
        parts.append(
            f"failure records: {int(stats.get('failures_fetched', 0))} fetched, "
            f"{int(stats.get('failures_uploaded', 0))} uploaded"
        )
    if stats.get("records_fetched") or stats.get("records_uploaded"):
        parts.append(
            f"verification records: {int(stats.get('records_fetched', 0))} fetched, "
            f"{int(stats.get('records_uploaded', 0))} uploaded"
        )
    if stats.get("rejected"):
        parts.append(f"{int(stats['rejected'])} damaged entries not used")
    if stats.get("signatures"):
        parts.append(
            f"{int(stats['signatures'])} signatures made or checked "
            f"({1000 * stats.get('signature_seconds', 0.0):.0f} ms)"
        )
    if stats.get("untrusted"):
        parts.append(
            f"{int(stats['untrusted'])} documents not signed with this runner's key ignored"
        )
    if stats.get("pending"):
        parts.append(f"{int(stats['pending'])} uploads abandoned")
    line = f"remote cache {url} ({mode}): " + ", ".join(parts)
    return line + (f"; OFF: {off}" if off else "")
