"""From what a build or the cache answered to outcomes: a segment's, then a design's.

A segment's answer is a cache entry (built now or reused), a recorded failure that
still stands, or what a worker said (or left behind when it died). A design's verdict
is its chain of segment outcomes, its estimates (from the last segment that wrote
FINN's reports) and its ``expect:`` bounds.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..build_spec import BuildSpec
from ..builder import manifest_for, record_failure
from ..cache import Entry, Failure, SegmentCache
from ..expectations import for_design
from ..gates import EXPECT, Stop
from ..keys import file_digest
from ..outcomes import DesignOutcome, SegmentOutcome
from ..segment_states import LASTING_KINDS
from ..toolchain import current as toolchain
from ..tree import Segment
from ..verify.judge import judge
from ..verify.plan import plan_for
from .limits import Limits
from .tasks import Task

if TYPE_CHECKING:
    from ..cache.remote.tier import RemoteCache


class Estimates:
    """FINN's estimate reports of cache entries, each read once."""

    def __init__(self) -> None:
        self._read: dict[str, dict[str, Any] | None] = {}

    def of_entry(self, entry: str) -> dict[str, Any] | None:
        if entry not in self._read:
            try:
                self._read[entry] = toolchain().read_estimates(Path(entry))
            except (OSError, ValueError):
                self._read[entry] = None
        return self._read[entry]

    def of_chain(self, outcomes: list[SegmentOutcome | None]) -> dict[str, Any]:
        """A design's estimates: from the last of its segments that wrote reports."""
        for outcome in reversed(outcomes):
            if outcome is None or outcome.entry is None:
                continue
            found = self.of_entry(outcome.entry)
            if found is not None:
                return found
        return {}


class OutputDigests:
    """The sha256 of a segment's output model: what its children's keys are made of
    (``keys.py``), read from its entry's manifest (each entry once)."""

    def __init__(self, cache: SegmentCache) -> None:
        self.cache = cache
        self._read: dict[str, str | None] = {}
        self._stored: dict[str, str | None] = {}

    def of_entry(self, entry: str) -> str | None:
        if entry not in self._read:
            self._read[entry] = _output_digest(Path(entry))
        return self._read[entry]

    def of_outcome(self, outcome: SegmentOutcome) -> str | None:
        """The digest of what the segment handed on: its entry's model, or the model
        file itself for a segment without steps at the top of the tree."""
        if outcome.entry:
            return self.of_entry(outcome.entry)
        if outcome.output_model and outcome.ok:
            try:
                return file_digest(Path(outcome.output_model))
            except OSError:
                return None
        return None

    def stored(self, key: str) -> str | None:
        """The digest of the output of ``key``'s entry, if the cache holds it intact
        (an entry found is asked for once)."""
        if key not in self._stored:
            try:
                entry = self.cache.lookup(key)
            except OSError:
                return None
            if entry is None:
                return None
            self._stored[key] = self.of_entry(str(entry.path))
        return self._stored[key]


def _output_digest(entry: Path) -> str | None:
    name = toolchain().output_model
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        digest = manifest["files"][name]["sha256"]
        if isinstance(digest, str):
            return digest
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:  # a manifest without it (a link): the file itself
        return file_digest(entry / name)
    except OSError:
        return None


class CachedAnswers:
    """What the cache already answers for a task: an entry to reuse, or a recorded
    failure that still stands; on a local miss, what the remote tier has
    (``cache/remote/``)."""

    def __init__(
        self,
        cache: SegmentCache,
        limits: Limits,
        *,
        rebuild: bool = False,
        retry_failed: bool = False,
        run_id: str = "",
        remote: RemoteCache | None = None,
    ) -> None:
        self.cache = cache
        #: the second tier behind the cache: asked on a local miss, told what was built
        self.remote = remote
        self.limits = limits
        self.rebuild = rebuild
        self.retry_failed = retry_failed
        self.run_id = run_id

    def lookup(self, task: Task) -> SegmentOutcome | None:
        assert task.key is not None
        entry = self.cache.lookup(task.key)
        if entry is not None and self._fresh(entry):  # None: not verified yet
            return self._judged(task, entry, reused(task, entry, self.run_id))
        failure = self.cache.failure(task.key)
        if failure is not None and self._stands(failure, task):
            return failed_before(task, failure, self.run_id)
        return None

    def fetch(self, task: Task) -> SegmentOutcome | None:
        """A local miss (the key's lock held): the remote tier's entry, fetched and
        published here, or its shared failure record; or the verification record of an
        entry that is here unverified (``_judged``)."""
        if self.remote is None or self.rebuild or task.key is None:
            return None
        entry = self.cache.lookup(task.key)  # here: only not verified yet
        if entry is not None:
            return self._judged(task, entry, reused(task, entry, self.run_id), locked=True)
        found = self.remote.fetch(task.key)
        if isinstance(found, Entry):
            outcome = entry_outcome(task, "fetched", found.key, found.path, found.manifest)
            return self._judged(task, found, outcome, locked=True)
        if isinstance(found, Failure) and self._stands(found, task):
            return failed_before(task, found, self.run_id)
        return None

    def _judged(
        self, task: Task, entry: Entry, outcome: SegmentOutcome, *, locked: bool = False
    ) -> SegmentOutcome | None:
        """The entry's outcome with its verification applied; None when it has no record
        for the blueprint's verify settings, here or on the remote tier (records travel
        with their entries): it is then verified here. Its checkpoint is needed for that:
        with the key's lock held (``locked``) it is fetched now if the entry left it on
        the remote (one that cannot be had drops the entry, which is then built here)."""
        judged = judge(task.segment, outcome, self.cache)
        if judged is not None or self.remote is None or task.key is None:
            return judged
        plan = plan_for(task.segment, self.cache)
        if plan is not None and self.remote.fetch_record(task.key, plan["hash"]):
            judged = judge(task.segment, outcome, self.cache)
            if judged is not None:
                return judged
        if locked:
            self.cache.verify_file(task.key, toolchain().output_model)
        return None

    def _fresh(self, entry: Entry) -> bool:
        if not self.rebuild:
            return True
        return entry.manifest.get("run_id") == self.run_id  # rebuilt earlier in this run

    def _stands(self, failure: Failure, task: Task) -> bool:
        """A recorded failure is the answer unless retrying (once per run: another worker
        may have retried it already), or unless it ran out of a limit now raised."""
        record = failure.record
        if self.retry_failed and record.get("run_id") != self.run_id:
            return False
        recorded = record.get("limits") or {}
        kind = record.get("kind")
        if kind == "timeout":
            now = self.limits.segment_timeout(task.segment)
            return now is not None and now <= recorded.get("timeout", math.inf)
        if kind == "memory":
            memory = self.limits.segment_max_memory(task.segment)
            return memory is not None and memory <= recorded.get("max_memory", math.inf)
        return True


# -- a segment's outcome ------------------------------------------------------------------
def outcome_of(
    task: Task, result: dict[str, Any], cache: SegmentCache, run_id: str = ""
) -> SegmentOutcome:
    """A worker's answer (or the one made for a dead worker) as the task's outcome."""
    status = result.get("status", "error")
    if status in ("built", "verified"):  # verified: a cached entry, verified now
        entry = cache.lookup(task.key) if status == "verified" and task.key else None
        built = (
            reused(task, entry, run_id)
            if entry
            else entry_outcome(task, "built", task.key, Path(result["entry"]), result)
        )
        judged = judge(task.segment, built, cache, now=True)
        if judged is None:
            error = "its verification did not finish (its worker ended first)"
            return SegmentOutcome(task.label, task.key, "error", error=error, kind="verification")
        return judged
    return SegmentOutcome(
        task.label,
        task.key,
        status,
        seconds=result.get("seconds", 0.0),
        log=result.get("log"),
        step=result.get("step"),
        error=result.get("error"),
        traceback=result.get("traceback"),
        kind=result.get("kind"),
        control=result.get("control"),
        step_seconds=result.get("step_seconds", {}),
    )


def dead_worker_result(task: Task, spec: BuildSpec, cache: SegmentCache) -> dict[str, Any]:
    """The answer of a worker that ended without one: cancelled by us, published and
    died, timed out, crashed (recorded when lasting) or killed from outside."""
    worker = task.worker
    assert worker is not None and task.key is not None
    if worker.killed_by_us == "cancel":
        return {"status": "cancelled", "error": "the run stopped before it finished"}
    entry = cache.lookup(task.key)
    if entry is not None:  # it published, then died before it could say so
        return {"status": "built", "entry": str(entry.path), **_timing(entry.manifest)}
    seconds = round(time.monotonic() - task.started, 3)
    step = _current_step(cache, task.key)
    if worker.killed_by_us == "timeout":
        kind, error = "timeout", f"timed out after {spec.limits['timeout']:g} s (its timeout)"
    else:
        kind, error = worker.exit_cause()
    # what it printed (a crash's own report first), then where the build log ends
    tail = worker.output_tail(lines=12)
    log = toolchain().build_log(spec.staged)
    with contextlib.suppress(OSError):
        lines = log.read_text(errors="replace").strip().splitlines()[-8:]
        if lines:
            tail = (tail + "\n" if tail else "") + "build log ends:\n" + "\n".join(lines)
    answer = {"seconds": seconds, "step": step, "error": error, "traceback": tail}
    if kind in LASTING_KINDS and cache.nearly_full(tail):
        # a process that cannot write its log or its answer dies of the disk, not the design
        error = f"{error}; the cache's disk is full (no space left on device in {cache.root})"
        return {**answer, "error": error, "status": "error", "kind": "environment"}
    if kind in LASTING_KINDS:
        manifest = manifest_for(spec, seconds, {})
        return record_failure(spec, cache, manifest, answer, kind)
    return {**answer, "status": "error", "kind": kind}


def reused(task: Task, entry: Entry, run_id: str) -> SegmentOutcome:
    """A cached entry's outcome: ``fetched`` if the remote tier brought it in this run
    (its downloads publish ahead of the engine); ``built`` if another process of this run
    built it for this very segment (an xdist worker builds ahead for designs another
    worker reports); else ``reused``."""
    manifest = entry.manifest
    status = "reused"
    if run_id and (manifest.get("fetched") or {}).get("run_id") == run_id:
        status = "fetched"
    elif run_id and manifest.get("run_id") == run_id and manifest.get("segment") == task.label:
        status = "built"
    outcome = entry_outcome(task, status, entry.key, entry.path, entry.manifest)
    outcome.elsewhere = status == "built"
    return outcome


def entry_outcome(
    task: Task, status: str, key: str | None, path: Path, timing: dict[str, Any]
) -> SegmentOutcome:
    """The outcome of a segment whose result is the cache entry at ``path`` (built now
    or reused); ``timing`` holds its ``seconds`` and ``step_seconds``."""
    return SegmentOutcome(
        task.label,
        key,
        status,
        seconds=timing.get("seconds", 0.0),
        entry=str(path),
        log=str(toolchain().build_log(path)),
        output_model=str(path / toolchain().output_model),
        step_seconds=timing.get("step_seconds", {}),
    )


def failed_before(task: Task, failure: Failure, run_id: str) -> SegmentOutcome:
    record = failure.record
    return SegmentOutcome(
        task.label,
        failure.key,
        "failed-before",
        seconds=record.get("seconds", 0.0),
        log=str(toolchain().build_log(failure.path)),
        step=record.get("step"),
        error=record.get("error"),
        traceback=record.get("traceback"),
        kind=record.get("kind", "exception"),
        earlier=record.get("run_id") != run_id,
    )


def blocked(task: Task) -> SegmentOutcome:
    """Its parent failed: the task is not built, for the parent's cause."""
    assert task.parent is not None and task.parent.outcome is not None
    return SegmentOutcome(task.label, None, "blocked", cause=task.parent.outcome.root_cause)


def passthrough(task: Task) -> SegmentOutcome:
    """A segment without steps: its parent's entry and output (the model file at the root)."""
    parent = task.parent
    return SegmentOutcome(
        task.label,
        task.key,
        "passthrough",
        entry=parent.outcome.entry if parent and parent.outcome else None,
        output_model=parent.outcome.output_model
        if parent and parent.key and parent.outcome
        else str(task.segment.model()),
    )


def error(task: Task, message: str, kind: str = "environment") -> SegmentOutcome:
    """The machine's fault for this task (never recorded)."""
    return SegmentOutcome(task.label, task.key, "error", error=message, kind=kind)


def describe_failure(outcome: SegmentOutcome) -> str:
    """One line: which segment, where, why."""
    if outcome.status == "cancelled":
        return f"not built: {outcome.error}"
    earlier = " in an earlier run" if outcome.status == "failed-before" and outcome.earlier else ""
    where = f" at step {outcome.step}" if outcome.step else ""
    return f"segment {outcome.segment} failed{earlier}{where}: {outcome.error}"


def holder(cache: SegmentCache, key: str | None) -> str:
    """Who builds the key, from its status file (for a message)."""
    try:
        data = json.loads((cache.base / "running" / f"{key}.json").read_text())
    except (OSError, ValueError):
        return "its builder is unknown"
    return f"pid {data.get('pid')} on {data.get('host')} is building it"


# -- a design's outcome -------------------------------------------------------------------
def judged(
    leaf: Segment, chain: list[SegmentOutcome], keys: list[str | None], estimates: dict[str, Any]
) -> DesignOutcome:
    """A design whose segments all ran: failed with its first failing segment's cause,
    else held to its ``expect:`` bounds."""
    failing = next((o for o in chain if not o.ok), None)
    if failing is not None:
        cause = failing.root_cause
        status = {"aborted": "aborted", "cancelled": "cancelled", "error": "error"}.get(
            cause.status, "failed"
        )
        return DesignOutcome(leaf, status, chain, keys, reason=describe_failure(cause))
    choices = dict(c.describe() for c in leaf.choices())
    checked = [(e, estimates.get(e.metric)) for e in for_design(leaf.tree.space.expect, choices)]
    outcome = DesignOutcome(leaf, "passed", chain, keys, estimates, checked)
    if outcome.misses:
        outcome.status = "failed"
        outcome.reason = "expectations not met: " + "; ".join(
            f"{e}: got {_number(v)}" for e, v in outcome.misses
        )
    return outcome


def stopped(
    leaf: Segment,
    chain: list[SegmentOutcome],
    keys: list[str | None],
    stop: Stop,
    estimates: dict[str, Any],
) -> DesignOutcome:
    """A design a gate stopped: failed on a missed bound, skipped when dominated."""
    choices = dict(c.describe() for c in leaf.choices())
    checked = [(e, estimates.get(e.metric)) for e in for_design(leaf.tree.space.expect, choices)]
    status = "failed" if stop.gate == EXPECT else "skipped"
    return DesignOutcome(
        leaf, status, chain, keys, estimates, checked, reason=stop.reason, gate=stop.gate
    )


def _timing(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "seconds": manifest.get("seconds", 0.0),
        "step_seconds": manifest.get("step_seconds", {}),
    }


def _current_step(cache: SegmentCache, key: str) -> str | None:
    """The step a dead worker was in, from its status file."""
    try:
        return json.loads((cache.base / "running" / f"{key}.json").read_text()).get("step")
    except (OSError, ValueError):
        return None


def _number(value: Any) -> str:
    return (
        "not reported"
        if value is None
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )
