"""Verification records: one per segment and plan, beside the cache's entry.

``verify/<segment key>/<plan hash>.json`` in the cache, not inside the entry: the
verify settings are not part of the segment key, so changing ``verify:`` never
rebuilds a segment. A record stays, so a later run reports the same without
executing again; a design's summary is read from its segments' records.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..cache.layout import RECORDS, record_path

__all__ = ["RECORDS", "record_path", "read_record", "summary", "write_record"]


def read_record(plan: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The verification record of segment ``key`` for this plan, or None (also when
    torn or unreadable: it is then made again)."""
    try:
        record = json.loads(record_path(plan["base"], key, plan["hash"]).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("hash") == plan["hash"] else None


def write_record(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2, sort_keys=True)
    os.replace(tmp, path)


def summary(records: list[dict[str, Any]], enabled: bool, built: bool) -> dict[str, Any]:
    """A design's verification over its segments' ``records`` (``built``: every segment
    is usable): status (passed, failed, skipped, not-run, off), the steps verified /
    skipped, and the first failure."""
    if not enabled:
        return {"status": "off", "steps": []}
    steps = [s for r in records for s in r.get("steps", [])]
    failed = next((s for s in steps if s["status"] == "failed"), None)
    passed = [s["step"] for s in steps if s["status"] == "passed"]
    if failed is not None or any(r.get("status") == "failed" for r in records):
        status = "failed"
    elif passed:
        status = "passed"
    elif not built:
        status = "not-run"
    else:
        status = "skipped"
    owner = next((r for r in records if r.get("status") == "failed"), None)
    return {
        "status": status,
        "verified": passed,
        "last_verified": passed[-1] if passed else None,
        "skipped": [
            {"step": s["step"], "reason": s.get("reason")}
            for s in steps
            if s["status"] == "skipped"
        ],
        "failed_step": failed["step"] if failed else None,
        "message": owner.get("message") if owner else None,
        "differ": failed.get("differ") if failed else None,
        "vectors": failed.get("vectors") if failed else None,
        "max_err": failed.get("max_err") if failed else None,
        "width": (failed.get("width") or {}).get("violations") if failed else None,
        # how: the vectors compared, the models executed (the others passed through them)
        "vectors_compared": max((int(r.get("vectors") or 0) for r in records), default=0),
        "executed": [name for r in records for name in r.get("executed", [])],
        "execution": next(
            (r["execution"]["execution"] for r in records if r.get("execution")), None
        ),
        "steps": steps,
    }
