"""Verification in the worker that builds the segment, right after its steps.

So it is isolated, under the segment's timeout and memory limit. ``after_build``
verifies the models FINN just wrote (``steps.py``); models after
``create_dataflow_partition`` run inside the partition's parent model, found in this
segment's checkpoints or in the nearest ancestor entry that holds it. ``again``
verifies a reused entry that has no record for the current settings from the last
model it kept; only a bisection needs the models in between, which are then re-created
by running the segment's steps from its parent's checkpoint in a scratch directory
(nothing is republished). Either way the result is written as a record
(``records.py``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .records import record_path, write_record
from .steps import ModelsNeeded, verify_steps

if TYPE_CHECKING:
    from ..build_spec import BuildSpec
    from ..cache import SegmentCache
    from ..toolchain import Toolchain


def dataflow_parent(spec: BuildSpec, cache: SegmentCache, own: Path, name: str) -> Path | None:
    """The dataflow partition's parent model for the segment's models: in its own
    checkpoints (``own``) if its steps made it, else in the nearest ancestor's entry
    that holds one (``spec.ancestors``, checked through each entry's manifest);
    ``name``: the compiler's file name for it."""
    if (own / name).is_file():
        return own / name
    relative = f"build/intermediate_models/{name}"
    for key in spec.ancestors:
        path = cache.entry_path(key)
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        if relative in (manifest.get("files") or {}) or (path / relative).is_file():
            return path / relative if cache.verify_file(key, relative) is None else None
    return None


def after_build(
    spec: BuildSpec, out_dir: Path, cache: SegmentCache, compiler: Toolchain
) -> dict[str, Any]:
    """Verify a segment just built in ``out_dir`` (the compiler's output directory, with
    every step's checkpoint) and record the result."""
    checkpoints = out_dir / "intermediate_models"
    found = _checkpoints(spec, checkpoints, compiler)
    try:
        parent = dataflow_parent(spec, cache, checkpoints, compiler.execution.partition_parent)
        record = verify_steps(spec, found, parent, compiler)
    except ModelsNeeded as missing:  # FINN did not write it: nothing to verify it with
        record = _unverifiable(spec, f"FINN wrote no model after {missing}")
    assert spec.verify is not None
    write_record(record_path(spec.verify["base"], spec.key, spec.verify["hash"]), record)
    return record


def _checkpoints(spec: BuildSpec, folder: Path, compiler: Toolchain) -> dict[str, Path]:
    """The compiler's checkpoint name -> its file in ``folder``, for each of the segment's steps."""
    return {(name := compiler.checkpoint_name(s)): folder / f"{name}.onnx" for s in spec.steps}


def _unverifiable(spec: BuildSpec, why: str) -> dict[str, Any]:
    assert spec.verify is not None
    return {
        "hash": spec.verify["hash"],
        "settings": spec.verify["settings"],
        "key": spec.key,
        "segment": spec.label,
        "steps": [],
        "status": "failed",
        "message": f"verification could not run: {why}",
    }


def again(
    spec: BuildSpec, cache: SegmentCache, entry_path: Path, compiler: Toolchain
) -> dict[str, Any]:
    """A cached segment without a record for these settings: verify it without
    rebuilding the entry (see the module docstring) and record the result."""
    assert spec.verify is not None
    started = time.time()
    kept = entry_path / "build" / "intermediate_models"
    found = _checkpoints(spec, kept, compiler)
    found[compiler.checkpoint_name(spec.steps[-1])] = entry_path / compiler.output_model
    parent_name = compiler.execution.partition_parent
    scratch: Path | None = None
    try:
        try:
            parent = dataflow_parent(spec, cache, kept, parent_name)
            record = verify_steps(spec, found, parent, compiler)
        except ModelsNeeded:  # the entry kept only its last model: run its steps again
            scratch = Path(tempfile.mkdtemp(dir=spec.staged, prefix="verify-"))
            outcome = compiler.run_segment(
                path_steps=spec.path_steps,
                first=spec.first,
                input_model=spec.input_model,
                config=spec.config,
                generate_outputs=spec.generate_outputs,
                out_dir=scratch / "build",
                work_dir=spec.work_dir,
            )
            if not outcome.ok:  # it built once: this is the machine's, not the design's
                failure = outcome.failure
                return {
                    "status": "error",
                    "kind": "environment",
                    "error": "re-running the segment to verify it failed: "
                    f"{failure.error if failure else 'see the log'}",
                }
            checkpoints = scratch / "build" / "intermediate_models"
            found = {name: checkpoints / f"{name}.onnx" for name in found}
            try:
                parent = dataflow_parent(spec, cache, checkpoints, parent_name)
                record = verify_steps(spec, found, parent, compiler)
            except ModelsNeeded as missing:
                record = _unverifiable(spec, f"FINN wrote no model after {missing}")
        record["rebuilt_steps"] = scratch is not None
        write_record(record_path(spec.verify["base"], spec.key, spec.verify["hash"]), record)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return {
        "status": "verified",
        "entry": str(entry_path),
        "seconds": round(time.time() - started, 3),
    }
