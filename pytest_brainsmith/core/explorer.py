"""Builds the segments a design needs, each once, through the cache.

One Explorer lives in each pytest process (the controller, or each xdist
worker). Within a process it remembers every segment's result; across processes
and runs the content-addressed cache and its per-key file locks make sure a
segment is built once and a failure is recorded once and reused.
"""

from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..finn import runner as finn_runner
from ..views import status
from .cache import CacheError, Entry, Failure, SegmentCache
from .keys import segment_key
from .registry import Step
from .tree import Segment

#: OSErrors that say the disk or quota is full: not recorded as a design's failure.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
ESTIMATE_FILES = ("estimate_network_performance.json", "estimate_layer_resources.json")


@dataclass
class SegmentResult:
    """What happened to one segment in this run."""

    segment: str  # readable path, e.g. "tfc::qonnx_to_finn..streamline::target_fps[1000]"
    key: str | None
    status: str  # "built" | "reused" | "failed" | "failed-before" | "passthrough"
    seconds: float = 0.0  # build time (for reused entries: the time it took when built)
    entry: str | None = None
    log: str | None = None
    output_model: str | None = None
    step: str | None = None  # failing step
    error: str | None = None
    traceback: str | None = None
    step_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status not in ("failed", "failed-before")


class Explorer:
    def __init__(
        self,
        cache: SegmentCache,
        *,
        hook: Any = None,
        retry_failed: bool = False,
        rebuild: bool = False,
        run_id: str = "",
        keep_step_models: bool = False,
    ) -> None:
        self.cache = cache
        self.hook = hook
        self.retry_failed = retry_failed
        self.rebuild = rebuild
        self.run_id = run_id
        self.keep_step_models = keep_step_models
        # by label and key, not by Segment: a Python test's tree of a blueprint (the
        # ``design`` fixture) and the YAML items' tree hold equal segments, one result
        self._results: dict[tuple[str, str | None], SegmentResult] = {}
        self._keys: dict[Segment, tuple[str | None, dict[str, Any] | None]] = {}
        self.built: list[SegmentResult] = []  # segments this process built (or failed to)
        self.waited = 0.0  # seconds spent waiting for another process's build of a segment

    # -- keys --------------------------------------------------------------------
    def key(self, segment: Segment) -> str | None:
        """The segment's cache key (a zero-step segment has its parent's)."""
        return self._key(segment)[0]

    def _key(self, segment: Segment) -> tuple[str | None, dict[str, Any] | None]:
        if segment in self._keys:
            return self._keys[segment]
        if not segment.steps:
            value = self._key(segment.parent) if segment.parent else (None, None)
        else:
            parent_key = self.key(segment.parent) if segment.parent else None
            space = segment.tree.space
            config = segment.config()
            config["generate_outputs"] = space.generate_outputs
            value = segment_key(
                segment.steps,
                config,
                parent_key=parent_key,
                model=None if parent_key else space.model,
            )
        self._keys[segment] = value
        return value

    # -- building ----------------------------------------------------------------------
    def _slot(self, segment: Segment) -> tuple[str, str | None]:
        return segment_label(segment), self.key(segment)

    def result(self, segment: Segment) -> SegmentResult | None:
        return self._results.get(self._slot(segment))

    def chain_results(self, segment: Segment) -> list[SegmentResult]:
        return [self.ensure(s) for s in segment.chain()]

    def ensure(self, segment: Segment) -> SegmentResult:
        """Make sure ``segment`` and all its ancestors are built; return its result."""
        slot = self._slot(segment)
        if slot in self._results:
            return self._results[slot]
        parent = self.ensure(segment.parent) if segment.parent else None
        if parent is not None and not parent.ok:
            result = parent  # the original cause, for every design below it
        elif not segment.steps:
            result = SegmentResult(
                segment_label(segment),
                self.key(segment),
                "passthrough",
                entry=parent.entry if parent else None,
                output_model=parent.output_model if parent else str(segment.tree.space.model),
            )
        else:
            result = self._obtain(segment, parent)
        self._results[slot] = result
        return result

    def _obtain(self, segment: Segment, parent: SegmentResult | None) -> SegmentResult:
        key, components = self._key(segment)
        assert key is not None and components is not None
        entry = self.cache.lookup(key)
        if entry is not None and self._fresh(entry):
            return _reused(segment, entry)
        failure = self.cache.failure(key)
        if failure is not None and self._stands(failure):
            return _failed_before(segment, failure)
        # import FINN before queueing for the lock: a process waiting for another's
        # build then imports meanwhile instead of after (seconds per process)
        finn_runner.import_finn()
        asked = time.perf_counter()
        with self.cache.lock(key):
            self.waited += time.perf_counter() - asked  # another process was building it
            entry = self.cache.lookup(key)  # someone else may have built it meanwhile
            if entry is not None and self._fresh(entry):
                return _reused(segment, entry)
            failure = self.cache.failure(key)
            if failure is not None:
                if self._stands(failure):
                    return _failed_before(segment, failure)
                self.cache.forget_failure(key)
            # integrity (issue 11): check the checkpoint this build resumes from right before
            # using it; the cache moves a damaged parent entry aside and it is rebuilt first
            parent = self._checked_parent(segment, parent)
            if parent is not None and not parent.ok:
                return parent
            return self._build(segment, parent, key, components)

    def _checked_parent(
        self, segment: Segment, parent: SegmentResult | None
    ) -> SegmentResult | None:
        """integrity (issue 11): the parent's result once its output.onnx is verified,
        rebuilt first if the cache found it damaged (a child is never built from, nor
        charged for, a corrupt input)."""
        if parent is None or parent.key is None or parent.entry is None:
            return parent
        if self.cache.verify_file(parent.key, "output.onnx") is None:
            return parent
        self._results = {slot: r for slot, r in self._results.items() if r.key != parent.key}
        assert segment.parent is not None
        return self.ensure(segment.parent)

    def _stands(self, failure: Failure) -> bool:
        """A recorded failure is the answer unless retrying, and is retried once per run
        (another worker may have retried it already)."""
        return not self.retry_failed or failure.record.get("run_id") == self.run_id

    def _fresh(self, entry: Entry) -> bool:
        if not self.rebuild:
            return True
        return entry.manifest.get("run_id") == self.run_id  # rebuilt earlier in this run

    def _build(
        self, segment: Segment, parent: SegmentResult | None, key: str, components: dict[str, Any]
    ) -> SegmentResult:
        space = segment.tree.space
        path_steps: list[Step] = segment.path_steps()
        first = len(path_steps) - len(segment.steps)
        config = segment.config()
        work_dir = self.cache.fresh_work_dir(key)
        input_model = Path(parent.output_model) if parent and parent.output_model else space.model
        with self.cache.staging(key) as staged:
            out_dir = staged / "build"
            if self.hook is not None:
                self.hook.pytest_brainsmith_segment_start(
                    segment=segment, config=config, build_dir=str(out_dir)
                )
            started = time.time()
            steps = [s.name for s in segment.steps]
            with status.building(
                self.cache.base / "running", key, segment_label(segment), steps
            ) as live:
                outcome = finn_runner.run_segment(
                    path_steps=path_steps,
                    first=first,
                    input_model=input_model,
                    config=config,
                    generate_outputs=space.generate_outputs,
                    out_dir=out_dir,
                    work_dir=work_dir,
                    on_step=live.step,
                )
            seconds = round(time.time() - started, 3)
            manifest = {
                "key": key,
                "components": components,
                "segment": segment_label(segment),
                "steps": [s.qualified for s in segment.steps],
                "seconds": seconds,
                "step_seconds": outcome.step_seconds,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "run_id": self.run_id,
                "host": os.uname().nodename,
                "pid": os.getpid(),
            }
            if outcome.ok and outcome.output_model is not None:
                manifest["status"] = "ok"
                checkpoints = out_dir / "intermediate_models"
                if first > 0:  # the copy of the parent's checkpoint is the parent's, not ours
                    given = finn_runner.checkpoint_name(path_steps[first - 1])
                    (checkpoints / f"{given}.onnx").unlink(missing_ok=True)
                if not self.keep_step_models:
                    # the children resume from the last one; the others are a model per step
                    # (6 MB each for CNV) that only --brainsmith-keep-step-models keeps
                    for step in path_steps[first:-1]:
                        name = finn_runner.checkpoint_name(step)
                        (checkpoints / f"{name}.onnx").unlink(missing_ok=True)
                os.link(outcome.output_model, staged / "output.onnx")
                entry = self.cache.publish(key, staged, manifest)
                result = SegmentResult(
                    segment_label(segment),
                    key,
                    "built",
                    seconds=seconds,
                    entry=str(entry.path),
                    log=str(entry.build_dir / "build_dataflow.log"),
                    output_model=str(entry.output_model),
                    step_seconds=outcome.step_seconds,
                )
            else:
                assert outcome.failure is not None
                if outcome.failure.errno in ENVIRONMENT_ERRNOS:
                    # the machine's fault, not the design's: never record it as a failure
                    raise CacheError(
                        f"{outcome.failure.error} while building segment {segment_label(segment)} "
                        f"in {self.cache.root}; nothing was recorded, earlier entries are intact"
                    )
                manifest.update(
                    status="failed",
                    step=outcome.failure.step,
                    error=outcome.failure.error,
                    traceback=outcome.failure.traceback,
                )
                failure = self.cache.record_failure(key, staged, manifest)
                result = SegmentResult(
                    segment_label(segment),
                    key,
                    "failed",
                    seconds=seconds,
                    log=str(failure.path / "build" / "build_dataflow.log"),
                    step=outcome.failure.step,
                    error=outcome.failure.error,
                    traceback=outcome.failure.traceback,
                    step_seconds=outcome.step_seconds,
                )
        self.built.append(result)
        if self.hook is not None:
            self.hook.pytest_brainsmith_segment_finish(segment=segment, result=result)
        return result

    # -- what a design shows -----------------------------------------------------------
    def estimates(self, leaf: Segment) -> dict[str, Any]:
        """The design's FINN estimate reports, from the last segment that wrote them."""
        for segment in reversed(leaf.chain()):
            result = self.result(segment)
            if result is None or result.entry is None:
                continue
            report_dir = Path(result.entry) / "build" / "report"
            if all((report_dir / name).is_file() for name in ESTIMATE_FILES):
                return read_estimates(report_dir)
        return {}


def read_estimates(report_dir: Path) -> dict[str, Any]:
    performance = json.loads((report_dir / "estimate_network_performance.json").read_text())
    resources = json.loads((report_dir / "estimate_layer_resources.json").read_text())
    totals = resources.get("total", {})
    estimates: dict[str, Any] = {k: v for k, v in performance.items()}
    estimates.update({k: v for k, v in totals.items()})
    estimates["layers"] = {k: v for k, v in resources.items() if k != "total"}
    estimates["report_dir"] = str(report_dir)
    return estimates


def segment_label(segment: Segment) -> str:
    """The segment as a readable path, e.g. ``tfc.blueprint.yaml::first..last::MVAU[rtl]``."""
    return "::".join([segment.tree.space.path.name, *segment.nodeid_parts()])


def _reused(segment: Segment, entry: Entry) -> SegmentResult:
    manifest = entry.manifest
    return SegmentResult(
        segment_label(segment),
        entry.key,
        "reused",
        seconds=manifest.get("seconds", 0.0),
        entry=str(entry.path),
        log=str(entry.build_dir / "build_dataflow.log"),
        output_model=str(entry.output_model),
        step_seconds=manifest.get("step_seconds", {}),
    )


def _failed_before(segment: Segment, failure: Failure) -> SegmentResult:
    record = failure.record
    return SegmentResult(
        segment_label(segment),
        failure.key,
        "failed-before",
        seconds=record.get("seconds", 0.0),
        log=str(failure.path / "build" / "build_dataflow.log"),
        step=record.get("step"),
        error=record.get("error"),
        traceback=record.get("traceback"),
    )


__all__ = ["CacheError", "Explorer", "SegmentResult", "read_estimates", "segment_label"]
