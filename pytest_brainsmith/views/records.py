"""What one design reports: a JSON-friendly record that rides on its pytest report.

Reports are the one channel that reaches the pytest controller from every
xdist worker, so everything the html report, the junit properties, the terminal
summary, the tree export and the results store show about a design is in this
record; none of them needs the worker's engine or the execution tree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..core import metrics

#: The estimates every view shows, in order: (record key, column title, better).
KEY_METRICS = metrics.KEY_METRICS

#: When workers disagree on a segment (one built it, another reused it), show the
#: most informative state.
_STATUS_RANK = [
    "failed",
    "built",
    "fetched",
    "failed-before",
    "reused",
    "passthrough",
    "blocked",
    "pruned",
    "cancelled",
    "skipped",
    "not-run",
]


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (paths and other objects become strings)."""
    return json.loads(json.dumps(value, default=str))


def merge_status(a: str | None, b: str) -> str:
    if a is None:
        return b
    rank = {s: i for i, s in enumerate(_STATUS_RANK)}
    return a if rank.get(a, len(rank)) <= rank.get(b, len(rank)) else b


def segment_counts(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many distinct segments ended in each state across ``records``."""
    states: dict[tuple[str, str], str] = {}
    for record in records:
        for seg in record.get("segments", []):
            if not seg["steps"]:
                continue
            ident = (record["blueprint"], seg["path"])
            states[ident] = merge_status(states.get(ident), seg["status"])
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    return counts


def gate_savings(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per gate (expect, pareto, budget): designs it stopped, and the distinct segments
    not built because of it with their recorded seconds. A segment pruned for one
    design and built for another (shared) is not counted: it was built."""
    records = list(records)
    states: dict[tuple[str, str], str] = {}
    gated: dict[tuple[str, str], tuple[str, float]] = {}
    designs: dict[str, int] = {}
    timed = _step_times(records)
    for record in records:
        stopped_by = record.get("gate")
        for seg in record.get("segments", []):
            ident = (record["blueprint"], seg["path"])
            states[ident] = merge_status(states.get(ident), seg["status"])
            if seg.get("gate") and seg["steps"]:
                names = seg.get("step_names") or []
                seconds = (
                    sum(timed[n] for n in names)
                    if names and all(n in timed for n in names)
                    else seg.get("saved_seconds") or 0.0  # the engine's estimate
                )
                gated.setdefault(ident, (seg["gate"], seconds))
                stopped_by = stopped_by or seg["gate"]
        if stopped_by:
            designs[stopped_by] = designs.get(stopped_by, 0) + 1
    result: dict[str, dict[str, float]] = {}
    for gate, count in designs.items():
        result[gate] = {"designs": count, "segments": 0, "seconds": 0.0}
    for ident, (gate, seconds) in gated.items():
        if states[ident] not in ("pruned", "cancelled"):
            continue
        entry = result.setdefault(gate, {"designs": 0, "segments": 0, "seconds": 0.0})
        entry["segments"] += 1
        entry["seconds"] += seconds
    return result


def _step_times(records: list[dict[str, Any]]) -> dict[str, float]:
    """Each step's mean seconds over the segments of ``records`` that ran it (built in
    this run or before): what a segment the gates pruned would have cost."""
    times: dict[str, list[float]] = {}
    for record in records:
        for seg in record.get("segments", []):
            seconds = list((seg.get("step_seconds") or {}).values())
            names = seg.get("step_names") or []
            if seg["status"] in ("built", "reused", "fetched") and len(seconds) == len(names):
                for name, value in zip(names, seconds, strict=True):
                    times.setdefault(name, []).append(float(value))
    return {name: sum(v) / len(v) for name, v in times.items()}


def verification_line(records: Iterable[dict[str, Any]]) -> str | None:
    """``verification: 10 designs verified, 2 failed (first: ...)``, or None when no
    design's blueprint verifies."""
    results = [r.get("verification") or {} for r in records]
    counted: dict[str, int] = {}
    for result in results:
        status = result.get("status", "off")
        if status != "off":
            counted[status] = counted.get(status, 0) + 1
    if not counted:
        return None
    words = {"passed": "verified", "failed": "failed", "skipped": "no step executable here"}
    parts = [
        f"{counted[s]} {words.get(s, s)}"
        for s in ("passed", "failed", "skipped", "not-run")
        if s in counted
    ]
    failed = next((r for r in results if r.get("status") == "failed"), None)
    first = f" (first: {failed['message']})" if failed and failed.get("message") else ""
    skipped = [s for r in results for s in r.get("skipped") or []]
    why = ""
    if skipped:  # e.g. every step after specialize_layers: its layers need rtlsim or cppsim
        reason = skipped[0].get("reason") or ""
        why = f"; {len(skipped)} design steps not executed ({skipped[0]['step']}: {reason})"
    vectors = max((int(r.get("vectors_compared") or 0) for r in results), default=0)
    compared = f" on {vectors} input vectors" if vectors else ""
    return f"verification: {', '.join(parts)} designs{compared}{first}{why}"


def verification_cell(record: dict[str, Any]) -> tuple[str, str]:
    """(status, step) of a design's verification: its last verified step, or the step
    it failed after."""
    result = record.get("verification") or {}
    status = result.get("status", "off")
    step = result.get("failed_step") if status == "failed" else result.get("last_verified")
    return status, step or ""


def gates_line(records: Iterable[dict[str, Any]]) -> str | None:
    """``gates saved: expect stopped 2 designs, 3 segments not built (~4.1 s recorded);
    ...``, or None when no gate stopped anything."""
    from ..core.outcomes import GATES

    savings = gate_savings(records)
    if not savings:
        return None
    verbs = {"expect": "stopped", "pareto": "skipped", "budget": "did not reach"}
    parts = []
    for gate in sorted(savings, key=lambda g: GATES.index(g) if g in GATES else len(GATES)):
        entry = savings[gate]
        designs = int(entry["designs"])
        parts.append(
            f"{gate} {verbs.get(gate, 'stopped')} {designs} design{'s' * (designs != 1)}, "
            f"{int(entry['segments'])} segments not built (~{entry['seconds']:.1f} s by recorded step durations)"
        )
    return "gates saved: " + "; ".join(parts)


def outcomes_line(records: Iterable[dict[str, Any]]) -> str:
    """``designs: 2 passed, 1 failed, 0 skipped, 0 errors``"""
    outcomes = [r.get("outcome") for r in records]
    return (
        f"designs: {outcomes.count('passed')} passed, {outcomes.count('failed')} failed, "
        f"{outcomes.count('skipped')} skipped, {outcomes.count('error')} errors"
    )


def sharing(records: Iterable[dict[str, Any]]) -> tuple[int, int]:
    """(steps in the distinct segments, steps if each design were built alone)."""
    unique: dict[tuple[str, str], int] = {}
    naive = 0
    for record in records:
        for seg in record.get("segments", []):
            unique[(record["blueprint"], seg["path"])] = seg["steps"]
            naive += seg["steps"]
    return sum(unique.values()), naive


def equivalences(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each representative design's node id -> the records of the designs equal to it
    (a choice on their path changed nothing: ``equivalent_to``), in tree order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("equivalent_to"):
            groups.setdefault(record["equivalent_to"], []).append(record)
    return groups


def dedupe_savings(records: Iterable[dict[str, Any]]) -> tuple[int, float]:
    """(segments, their recorded seconds) that designs under a choice that changed
    nothing did not build: one cache key reached by several segments of the tree."""
    paths: dict[tuple[str, str], set[str]] = {}
    seconds: dict[tuple[str, str], float] = {}
    for record in records:
        for seg in record.get("segments", []):
            if not seg["steps"] or not seg.get("key") or seg["status"] not in ("built", "reused"):
                continue
            ident = (record["blueprint"], seg["key"])
            paths.setdefault(ident, set()).add(seg["path"])
            seconds[ident] = max(seconds.get(ident, 0.0), float(seg.get("seconds") or 0.0))
    saved = [(len(p) - 1, seconds[ident]) for ident, p in paths.items() if len(p) > 1]
    return sum(n for n, _ in saved), sum(n * s for n, s in saved)


def equivalence_line(records: Iterable[dict[str, Any]]) -> str | None:
    """``equivalent designs: 6 equal an earlier one, 6 segments built once for them
    (~1.2 s); e.g. MVAU=rtl changed nothing ...``, or None when no design does."""
    records = list(records)
    groups = equivalences(records)
    if not groups:
        return None
    count = sum(len(g) for g in groups.values())
    segments, seconds = dedupe_savings(records)
    reasons = [r.get("equivalence") for g in groups.values() for r in g]
    common = max(reasons, key=reasons.count)  # the choice that most often changed nothing
    first = next(r for g in groups.values() for r in g if r.get("equivalence") == common)
    return (
        f"equivalent designs: {count} equal an earlier design ({len(groups)} representative"
        f"{'s' * (len(groups) != 1)}); {segments} segments built once for them "
        f"(~{seconds:.1f} s recorded); e.g. {short_id(first)}: {first.get('equivalence')}"
    )


def best_designs(records: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, Any], Any]]:
    """The best passing design per key metric: [(metric, record, value)]."""
    passed = [r for r in records if r.get("outcome") == "passed" and r.get("estimates")]
    best = []
    for metric, _title, better in KEY_METRICS:
        candidates = [r for r in passed if isinstance(r["estimates"].get(metric), (int, float))]
        if not candidates:
            continue
        pick = max if better == "max" else min
        winner = pick(candidates, key=lambda r: r["estimates"][metric])
        best.append((metric, winner, winner["estimates"][metric]))
    return best


def tree_from_records(blueprint: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The execution tree of the designs in ``records``, in ExecutionTree.to_dict's
    shape, each segment with its state in this run."""
    root: dict[str, Any] | None = None
    index: dict[str, dict[str, Any]] = {}
    name = blueprint
    for record in sorted(records, key=lambda r: r.get("order", 0)):  # tree order
        name = record.get("blueprint_name", name)
        parent: dict[str, Any] | None = None
        for seg in record["segments"]:
            node = index.get(seg["path"])
            if node is None:
                node = {
                    "name": seg["name"],
                    "steps": seg["step_names"],
                    "designs": 0,
                    "status": seg["status"],
                    "key": seg["key"],
                    "seconds": seg["seconds"],
                }
                if seg.get("choice"):
                    node["choice"] = seg["choice"]
                index[seg["path"]] = node
                if parent is None:
                    root = node
                else:
                    parent.setdefault("children", []).append(node)
            else:
                node["status"] = merge_status(node["status"], seg["status"])
            node["designs"] += 1
            parent = node
        if parent is not None:
            parent["outcome"] = record.get("outcome")
            parent["design"] = record["nodeid"]
    executed, naive = sharing(records)
    return {
        "blueprint": blueprint,
        "name": name,
        "stats": {
            "designs": len(records),
            "segments": len(index),
            "steps_executed": executed,
            "steps_naive": naive,
            "saving_percent": round(100.0 * (1 - executed / naive), 1) if naive else 0.0,
        },
        "root": root or {"name": "(no designs)", "steps": [], "designs": 0},
    }


def group_by_blueprint(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda r: r.get("order", 0)):
        groups.setdefault(record["blueprint"], []).append(record)
    return dict(sorted(groups.items()))


def short_id(record: dict[str, Any]) -> str:
    """The design's choices as a user reads them, e.g. ``MVAU=rtl, target_fps=100000``."""
    choices = record.get("choices") or {}
    text = ", ".join(f"{k}={v}" for k, v in choices.items()) or "single design"
    return f"{record.get('blueprint_name', record['blueprint'])}: {text}"


def _choice_value(text: str) -> Any:
    """A choice value from its node-id label: numbers and booleans as JSON reads them."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | bool) else text


def record_from_nodeid(nodeid: str) -> dict[str, Any]:
    """What a design's node id alone tells (blueprint, segment path, the choices written
    as ``name[value]``): the record of a design whose own never arrived."""
    blueprint, *parts = nodeid.split("::")
    label = blueprint.rsplit("/", 1)[-1]
    choices: dict[str, Any] = {}
    segments = []
    for depth, part in enumerate(parts):
        name, bracket, rest = part.partition("[")
        if bracket and rest.endswith("]"):
            value = rest[:-1]
            if name == "skip":
                choices[value] = "skip"
            else:
                choices[name] = _choice_value(value)
        segments.append(
            {
                "path": "::".join([label, *parts[: depth + 1]]),
                "name": part,
                "choice": None,
                "steps": 0,  # unknown: counted by the designs that reported it
                "step_names": [],
                "status": "not-run",
                "key": None,
                "seconds": 0.0,
                "log": None,
                "step_seconds": {},
            }
        )
    return {
        "nodeid": nodeid,
        "order": 1 << 30,  # after the designs whose place in the tree is known
        "blueprint": blueprint,
        "choices": choices,
        "config": {},
        "estimates": {},
        "layers": {},
        "report_dir": None,
        "expectations": [],
        "segments": segments,
        "finn_seconds": 0.0,
        "cache_key": None,
        "final_model": None,
        "error": None,
        "failed_step": None,
    }


def lost_record(
    nodeid: str,
    outcome: str,
    cause: str,
    known: dict[str, Any] | None = None,
    building: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of a design pytest reports but whose process never sent one (an xdist
    worker that died mid-design): what was known when it started (``known``, the record
    sent with its setup) or its node id, the ``cause`` pytest gives, and the segment the
    process was ``building`` when it stopped (its live status file), if any."""
    record = json.loads(json.dumps(known)) if known else record_from_nodeid(nodeid)
    known_more = ""
    if building is not None:
        for seg in record["segments"]:
            if seg["path"] == building.get("segment"):
                seg["status"] = "failed"
        step = building.get("step") or "(starting)"
        total = len(building.get("steps") or [])
        known_more = (
            f"it was building segment {building.get('segment')}, step "
            f"{building.get('step_index', '?')}/{total} {step}, when it stopped"
        )
        record["failed_step"] = step
    error = f"{cause}; {known_more}" if known_more else cause
    record.update(outcome=outcome, error=error, lost=known_more or "no record")
    return record
