"""One segment into the cache: what a worker process (or, inline, the caller) runs.

The caller holds the key's lock and has made the staging directory. The segment is
built there through the FINN adapter, then published as an entry by one rename, or
recorded as a failure if its own steps failed. The answer is a small dict, sent
back through a pipe: artifacts stay in the cache.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from typing import Any

from . import progress
from .build_spec import BuildSpec
from .cache import CacheError, SegmentCache
from .toolchain import current as toolchain
from .units import format_size
from .verify.run import after_build, again

#: OSErrors that say the disk or quota is full: not recorded as a design's failure.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def manifest_for(spec: BuildSpec, seconds: float, step_seconds: dict[str, float]) -> dict[str, Any]:
    return {
        "key": spec.key,
        "components": spec.components,
        "segment": spec.label,
        "steps": [s.qualified for s in spec.steps],
        "seconds": seconds,
        "step_seconds": step_seconds,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_id": spec.run_id,
        "host": os.uname().nodename,
        "pid": os.getpid(),
        "isolation": spec.isolation,
    }


def build_segment(spec: BuildSpec, cache: SegmentCache) -> dict[str, Any]:
    """Build, then publish or record; returns the outcome as a small dict. The caller
    (the engine) holds the key's lock for the whole build."""
    with cache.locks.held_by_caller(spec.key):
        return _build_segment(spec, cache)


def _build_segment(spec: BuildSpec, cache: SegmentCache) -> dict[str, Any]:
    compiler = toolchain()
    if spec.verify is not None:
        entry = cache.lookup(spec.key)
        if entry is not None:  # built before, not verified with these settings yet
            try:
                return again(spec, cache, entry.path, compiler)
            except OSError as exc:
                return _unrecorded(spec, exc)
    _clean_slate(spec, cache, compiler.output_model)
    started = time.time()
    with progress.building(
        cache.base / "running", spec.key, spec.label, [s.name for s in spec.steps]
    ) as live:
        outcome = compiler.build_into(
            spec.staged,
            path_steps=spec.path_steps,
            first=spec.first,
            input_model=spec.input_model,
            config=spec.config,
            generate_outputs=spec.generate_outputs,
            work_dir=spec.work_dir,
            keep_step_models=spec.keep_step_models or spec.verify is not None,
            on_step=live.step,
        )
    if outcome.ok and spec.verify is not None:
        try:
            after_build(spec, spec.staged / "build", cache, compiler)
        except OSError as exc:
            return _unrecorded(spec, exc)
        if not spec.keep_step_models:
            compiler.drop_step_models(spec.staged, spec.path_steps, spec.first)
    seconds = round(time.time() - started, 3)
    manifest = manifest_for(spec, seconds, outcome.step_seconds)
    answer: dict[str, Any] = {"seconds": seconds, "step_seconds": outcome.step_seconds}
    if outcome.ok:
        manifest["status"] = "ok"
        try:
            entry = cache.publish(spec.key, spec.staged, manifest)
        except CacheError as exc:
            return {**answer, "status": "error", "kind": "environment", "error": str(exc)}
        return {**answer, "status": "built", "entry": str(entry.path)}
    failure = outcome.failure
    assert failure is not None
    answer.update(step=failure.step, error=failure.error, traceback=failure.traceback)
    if failure.control:
        return {**answer, "status": "aborted", "kind": "control", "control": failure.control}
    if failure.errno in ENVIRONMENT_ERRNOS or cache.nearly_full(failure.traceback):
        # the machine's fault, not the design's: never recorded as a failure
        return {
            **answer,
            "status": "error",
            "kind": "environment",
            "error": f"{failure.error} while building segment {spec.label} in {cache.root}; "
            "nothing was recorded, earlier entries are intact",
        }
    kind = "exception"
    if failure.memory and "max_memory" in spec.limits:
        kind = "memory"
        answer["error"] = (
            f"exceeded the memory limit of {format_size(int(spec.limits['max_memory']))} "
            f"({failure.error})"
        )
    return record_failure(spec, cache, manifest, answer, kind)


def _unrecorded(spec: BuildSpec, exc: OSError) -> dict[str, Any]:
    """A verification record that cannot be written: the machine's fault, not recorded."""
    error = f"cannot record the verification of {spec.label}: {exc}"
    return {"status": "error", "kind": "environment", "error": error}


def _clean_slate(spec: BuildSpec, cache: SegmentCache, output_model: str) -> None:
    """A build run again after its worker was lost (Dask reschedules it elsewhere)
    starts over: what the lost attempt left in its staging and work directories goes.
    (The session still holds the key's lock, so nothing else builds it meanwhile.)"""
    for left in (spec.staged / "build", spec.staged / output_model):
        if left.is_dir():
            shutil.rmtree(left, ignore_errors=True)
        elif left.exists():
            left.unlink()
    if spec.work_dir.exists():
        cache.fresh_work_dir(spec.key)


def record_failure(
    spec: BuildSpec,
    cache: SegmentCache,
    manifest: dict[str, Any],
    answer: dict[str, Any],
    kind: str,
) -> dict[str, Any]:
    """Record a lasting failure (the staging directory, with its logs, becomes it)."""
    manifest.update(
        status="failed",
        kind=kind,
        step=answer.get("step"),
        error=answer.get("error"),
        traceback=answer.get("traceback"),
        limits=spec.limits,
    )
    try:
        failure = cache.failures.record(spec.key, spec.staged, manifest)
    except CacheError as exc:
        return {**answer, "status": "error", "kind": "environment", "error": str(exc)}
    return {
        **answer,
        "status": "failed",
        "kind": kind,
        "log": str(toolchain().build_log(failure.path)),
    }
