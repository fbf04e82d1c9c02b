"""Designs against their baseline (``regress:``, ``--brainsmith-baseline``) as the views
show them: the summary's lines, the html report's coloured cell and the baseline's front
on the Pareto plot. Read from the design records (``record["baseline"]``) and from the
reports of each blueprint's ``baseline`` items (``front``, ``gone[...]``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..core.gates import number
from .records import short_id

#: Fill colours of a design's baseline status (the html cell).
COLORS = {
    "regressed": "salmon",
    "worse": "khaki",
    "mixed": "khaki",
    "improved": "palegreen",
    "same": "white",
    "new": "lightblue",
}
#: Worst first (the html column sorts on it).
ORDER = ("regressed", "worse", "mixed", "improved", "new", "same")


def _worst_key(record: dict[str, Any]) -> float:
    worst = (record.get("baseline") or {}).get("worst") or {}
    percent = worst.get("percent")
    return abs(percent) if isinstance(percent, int | float) else float("inf")


def summary_lines(
    records: Iterable[dict[str, Any]], checks: Iterable[dict[str, Any]] = ()
) -> list[str]:
    """``baseline: 2 regressed (worst: LUT 2,616 -> 2,900 (+10.9%, tolerance +2%) in
    tfc: MVAU=hls, ...), 1 improved, ...`` and a line per blueprint's front; nothing when
    no design was compared."""
    compared = [r for r in records if r.get("baseline")]
    checks = list(checks)
    lines = []
    if compared:
        counts: dict[str, int] = {}
        for record in compared:
            status = record["baseline"]["status"]
            counts[status] = counts.get(status, 0) + 1
        names = {"worse": "worse within tolerance", "mixed": "changed within tolerance"}
        parts = [
            f"{counts[s]} {names.get(s, s)}"
            for s in ("regressed", "improved", "worse", "mixed", "same", "new")
            if counts.get(s)
        ]
        gone = [c for c in checks if c.get("kind") == "gone"]
        if gone:
            allowed = sum(1 for c in gone if c.get("allowed"))
            parts.append(f"{len(gone)} gone" + (f" ({allowed} allowed)" if allowed else ""))
        regressed = [r for r in compared if r["baseline"]["status"] == "regressed"]
        worst = ""
        if regressed:
            record = max(regressed, key=_worst_key)
            delta = record["baseline"].get("worst") or {}
            tolerance = f", tolerance {delta['tolerance']}" if delta.get("tolerance") else ""
            worst = (
                f"; worst: {delta.get('metric')} {_n(delta.get('baseline'))} -> "
                f"{_n(delta.get('value'))} ({delta.get('change')}{tolerance}) in {short_id(record)}"
            )
        lines.append(f"baseline: {', '.join(parts)}{worst}")
    for check in checks:
        front = check.get("front")
        if check.get("kind") == "front" and front:
            lines.append(
                f"baseline front of {check.get('blueprint_name')}: {front['summary']}"
                + (f"; lost: {'; '.join(front['lost'])}" if front.get("lost") else "")
            )
        if check.get("written"):
            dropped = len(check.get("gone") or [])
            lines.append(
                f"baseline written: {check['written']} ({check.get('designs', 0)} designs of "
                f"{check.get('blueprint_name')}"
                + (f"; {dropped} gone from the blueprint dropped" if dropped else "")
                + ")"
            )
    return lines


def _n(value: Any) -> str:
    return number(value) if value is not None else "?"


def cell(record: dict[str, Any] | None) -> tuple[str, str, str]:
    """(sort key, text, colour) of a design's comparison with its baseline."""
    data = (record or {}).get("baseline")
    if not data:
        return "~", "", "white"
    status = data["status"]
    text = status
    delta = data.get("worst") if status in ("regressed", "worse", "mixed") else None
    if status == "improved":
        better = [d for d in data.get("deltas") or [] if d.get("verdict") == "better"]
        delta = better[0] if better else None
    if delta:
        tolerance = f" (tolerance {delta['tolerance']})" if delta.get("tolerance") else ""
        text = f"{status}: {delta['metric']} {delta['change']}{tolerance}"
    rank = ORDER.index(status) if status in ORDER else len(ORDER)
    return f"{rank}", text, COLORS.get(status, "white")


def check_text(check: dict[str, Any]) -> str:
    """A blueprint item's result in one line (its html row)."""
    if check.get("kind") == "gone":
        return f"gone from the blueprint: {check.get('design')}"
    front = check.get("front")
    if check.get("written"):
        return f"baseline written: {check['written']} ({check.get('designs', 0)} designs)"
    return front["summary"] if front else "no baseline to compare with"


def baseline_fronts(
    checks: Iterable[dict[str, Any]], x: str, y: str
) -> list[tuple[str, list[dict[str, Any]]]]:
    """(blueprint name, the baseline's front designs) of each blueprint whose front was
    compared on the metrics ``x`` and ``y``: for the Pareto plot."""
    fronts = []
    for check in checks:
        front = check.get("front")
        if check.get("kind") == "front" and front and set(front["metrics"]) == {x, y}:
            fronts.append((str(check.get("blueprint_name")), front["baseline_front"]))
    return fronts
