"""Verification: every design's model is executed after its steps and compared with
a golden; a design that computes the wrong answer fails.

Where it runs. In the worker that builds the segment, right after its steps (so it is
isolated, under the segment's timeout and memory limit): the model after each of
the segment's steps is executed on the inputs (``finn/execute.py``) and compared
with the expected outputs. The result is a **record** in the cache,
``verify/<segment key>/<verify hash>.json``, beside the entry, not inside it: the
verify settings are not part of the segment key, so changing ``verify:`` never
rebuilds a segment. A reused entry without a record for the current settings gets
one from a worker that re-runs the segment's steps from its parent's checkpoint in a
scratch directory (nothing is republished; the checkpoints FINN writes after each
step are what is executed), or, when the entry kept the checkpoints it needs
(``--brainsmith-keep-step-models``, or only its last step to verify), executes those.

What it answers. The first step whose outputs differ fails the segment that holds it
(kind ``verification``; its descendants are blocked by it, as by a build failure),
e.g. ``verification failed after step_streamline: 5 of 8 outputs differ, max |err| 3
(atol 0)``. The record stays, so a later run reports the same without executing
again. Steps whose models only a simulator runs (cppsim, rtlsim) are skipped with
that reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .execution_memo import ExecutionMemo
from .keys import file_digest
from .registry import VITIS_HLS, VIVADO
from .toolchain import current as toolchain

if TYPE_CHECKING:
    from .builder import BuildSpec
    from .cache import SegmentCache
    from .outcomes import SegmentOutcome
    from .tree import Segment

#: Cache subfolder for verification records and the inputs/goldens they used.
RECORDS = "verify"
#: FINN's verify_step tolerances, for outputs that are not integers.
FLOAT_ATOL, FLOAT_RTOL = 1e-3, 1e-5
#: bump when records change meaning: older ones are then not reused
SCHEME = 1


# -- the plan: plain data for the worker --------------------------------------------------
def plan_for(segment: Segment, cache: SegmentCache) -> dict[str, Any] | None:
    """What the worker needs to verify ``segment`` (None: the blueprint verifies nothing)."""
    settings = segment.tree.space.verify
    if settings is None:
        return None
    model = segment.model()
    inputs = _file_digest(settings.inputs_file) if settings.inputs_file else None
    expected = _file_digest(settings.expected_file) if settings.expected_file else None
    spec = {
        "scheme": SCHEME,
        "inputs": inputs or {"count": settings.count, "seed": settings.seed},
        # a segment's key names the model it reads, not the design's model: the
        # outputs it is compared with are those of this model
        "expected": expected or {"model": file_digest(model)},
        "after": list(settings.after) if settings.after is not None else None,
        "atol": settings.atol,
        "rtol": settings.rtol,
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "hash": digest,
        "settings": spec,
        "model": str(model),
        "inputs_file": str(settings.inputs_file) if settings.inputs_file else None,
        "expected_file": str(settings.expected_file) if settings.expected_file else None,
        "count": settings.count,
        "seed": settings.seed,
        "after": spec["after"],
        "atol": settings.atol,
        "rtol": settings.rtol,
        "base": str(cache.base / RECORDS),
        "executions": str(cache.base),  # where the golden outputs are kept
    }


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_path(base: Path | str, key: str, digest: str) -> Path:
    return Path(base) / key / f"{digest}.json"


def read_record(plan: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The verification record of segment ``key`` for this plan, or None (also when
    torn or unreadable: it is then made again)."""
    try:
        record = json.loads(record_path(plan["base"], key, plan["hash"]).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("hash") == plan["hash"] else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2, sort_keys=True)
    os.replace(tmp, path)


# -- in the worker ----------------------------------------------------------------------------
def golden(plan: dict[str, Any]) -> tuple[Any, Any, bool]:
    """(inputs, expected outputs, exact?) for the plan: drawn, read or computed by
    executing the blueprint's model, and kept in the cache (one file per model and
    inputs) so each is computed once."""
    import numpy as np

    model = Path(plan["model"])
    _, out_info = toolchain().model_io(model)
    exact = toolchain().is_integer_type(out_info.datatype)
    if plan["inputs_file"]:
        inputs = np.load(plan["inputs_file"], allow_pickle=False).astype(np.float32)
    else:
        inputs = toolchain().random_inputs(model, plan["count"], plan["seed"])
    if plan["expected_file"]:
        expected = np.load(plan["expected_file"], allow_pickle=False)
        exact = exact or expected.dtype.kind in "iub"
        return inputs, expected.astype(np.float64), exact
    memo = ExecutionMemo(plan["executions"])
    expected = memo.run([model], inputs, lambda: toolchain().execute(model, inputs))
    return inputs, expected.astype(np.float64), exact


def tolerances(plan: dict[str, Any], exact: bool) -> tuple[float, float]:
    atol = plan["atol"] if plan["atol"] is not None else (0.0 if exact else FLOAT_ATOL)
    rtol = plan["rtol"] if plan["rtol"] is not None else (0.0 if exact else FLOAT_RTOL)
    return atol, rtol


def compare(got: Any, expected: Any, atol: float, rtol: float) -> dict[str, Any]:
    """How many vectors differ beyond the tolerance, and the largest |error|."""
    import numpy as np

    got = np.asarray(got, dtype=np.float64)
    if got.size != expected.size:
        return {
            "vectors": int(len(expected)),
            "differ": int(len(expected)),
            "max_err": None,
            "error": f"outputs of shape {got.shape}, expected {expected.shape}",
        }
    got = got.reshape(expected.shape)
    err = np.abs(got - expected)
    bad = ~np.isclose(got, expected, atol=atol, rtol=rtol)
    per_vector = bad.reshape(len(expected), -1).any(axis=1)
    return {
        "vectors": int(len(expected)),
        "differ": int(per_vector.sum()),
        "max_err": float(err.max()) if err.size else 0.0,
    }


def message(step: str, result: dict[str, Any], atol: float, rtol: float) -> str:
    """``verification failed after step_streamline: 5 of 8 outputs differ, max |err| 3
    (atol 0)``."""
    if result.get("error"):
        return f"verification failed after {step}: {result['error']}"
    tol = f"atol {atol:g}" + (f", rtol {rtol:g}" if rtol else "")
    return (
        f"verification failed after {step}: {result['differ']} of {result['vectors']} "
        f"outputs differ, max |err| {result['max_err']:g} ({tol})"
    )


def verify_steps(
    spec: BuildSpec, checkpoints: dict[str, Path], parent_model: Path | None
) -> dict[str, Any]:
    """Execute the model after each of the segment's steps (``checkpoints``: FINN's
    checkpoint name -> its file) and compare; stops at the first step that differs."""
    plan = spec.verify
    assert plan is not None
    started = time.time()
    steps: list[dict[str, Any]] = []
    record: dict[str, Any] = {
        "hash": plan["hash"],
        "settings": plan["settings"],
        "key": spec.key,
        "segment": spec.label,
        "steps": steps,
        "status": "skipped",
    }
    try:
        inputs, expected, exact = golden(plan)
    except Exception as exc:
        record.update(status="failed", message=f"verification could not start: {exc}")
        record["traceback"] = traceback.format_exc()
        return record
    atol, rtol = tolerances(plan, exact)
    record.update(atol=atol, rtol=rtol, vectors=int(len(inputs)))
    partitioned = False
    for index, step in enumerate(spec.path_steps):
        partitioned = partitioned or (step.is_finn and step.name == toolchain().partition_step)
        if index < spec.first:
            continue
        name = toolchain().checkpoint_name(step)
        if plan["after"] is not None and step.name not in plan["after"]:
            continue
        entry: dict[str, Any] = {"step": name, "status": "skipped"}
        steps.append(entry)
        model = checkpoints.get(name)
        if model is None or not model.is_file():
            entry["reason"] = "its model was not kept"
            continue
        try:
            reason = toolchain().simulator_needed(model)
            if reason is None and partitioned and parent_model is None:
                reason = "the dataflow partition's parent model is in another segment"
            if reason is not None:
                entry["reason"] = _simulator_reason(reason)
                continue
            got = toolchain().execute(model, inputs, parent_model if partitioned else None)
        except Exception as exc:
            entry.update(status="failed", error=f"cannot execute the model: {exc}"[:500])
            entry["traceback"] = traceback.format_exc()
            record.update(status="failed", failed_step=name, message=message(name, entry, 0, 0))
            break
        entry.update(compare(got, expected, atol, rtol))
        if entry["differ"]:
            entry["status"] = "failed"
            record.update(
                status="failed", failed_step=name, message=message(name, entry, atol, rtol)
            )
            break
        entry["status"] = "passed"
        record["status"] = "passed"
    record["seconds"] = round(time.time() - started, 3)
    return record


def _simulator_reason(reason: str) -> str:
    """Why a model that needs a simulator is not executed here: the missing tool."""
    tools = toolchain().available_tools()
    tool = VITIS_HLS if "cppsim" in reason else VIVADO
    why = tools.get(tool) or "pytest-brainsmith does not drive FINN's simulators yet"
    return f"{reason}: {why}"


def after_build(spec: BuildSpec, out_dir: Path) -> dict[str, Any]:
    """Verify a segment just built in ``out_dir`` (FINN's output directory, with every
    step's checkpoint) and record the result."""
    checkpoints = out_dir / "intermediate_models"
    found = {
        toolchain().checkpoint_name(s): checkpoints / f"{toolchain().checkpoint_name(s)}.onnx"
        for s in spec.steps
    }
    parent = checkpoints / toolchain().partition_parent
    record = verify_steps(spec, found, parent if parent.is_file() else None)
    assert spec.verify is not None
    _write_json(record_path(spec.verify["base"], spec.key, spec.verify["hash"]), record)
    return record


def again(spec: BuildSpec, cache: SegmentCache, entry_path: Path) -> dict[str, Any]:
    """A cached segment without a record for these settings: verify it without
    rebuilding the entry (see the module docstring) and record the result."""
    assert spec.verify is not None
    started = time.time()
    wanted = [
        s for s in spec.steps if spec.verify["after"] is None or s.name in spec.verify["after"]
    ]
    kept = entry_path / "build" / "intermediate_models"
    found = {
        toolchain().checkpoint_name(s): kept / f"{toolchain().checkpoint_name(s)}.onnx"
        for s in spec.steps
    }
    found[toolchain().checkpoint_name(spec.steps[-1])] = entry_path / toolchain().output_model
    parent = kept / toolchain().partition_parent
    scratch: Path | None = None
    if not all(found[toolchain().checkpoint_name(s)].is_file() for s in wanted):
        scratch = Path(tempfile.mkdtemp(dir=spec.staged, prefix="verify-"))
        outcome = toolchain().run_segment(
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
        parent = checkpoints / toolchain().partition_parent
    try:
        record = verify_steps(spec, found, parent if parent.is_file() else None)
        record["rebuilt_steps"] = scratch is not None
        _write_json(record_path(spec.verify["base"], spec.key, spec.verify["hash"]), record)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return {
        "status": "verified",
        "entry": str(entry_path),
        "seconds": round(time.time() - started, 3),
    }


# -- in the engine -------------------------------------------------------------------------
def judge(
    segment: Segment, outcome: SegmentOutcome, cache: SegmentCache, *, now: bool = False
) -> SegmentOutcome | None:
    """A usable segment outcome with its verification applied: a failed record fails
    the segment (kind ``verification``). None when the record for the current
    settings is missing (the segment must be verified first). ``now``: verified in this
    run (else a recorded result, reported as ``failed-before``)."""
    plan = plan_for(segment, cache)
    if plan is None or not outcome.key or not segment.steps:
        return outcome
    record = read_record(plan, outcome.key)
    if record is None:
        return None
    outcome.verification = record
    if record.get("status") == "failed":
        outcome.status = "failed" if now else "failed-before"
        outcome.kind = "verification"
        outcome.step = record.get("failed_step")
        outcome.error = record.get("message")
        failing = next((s for s in record.get("steps", []) if s.get("status") == "failed"), {})
        outcome.traceback = failing.get("traceback")
    return outcome


def summary(outcomes: list[SegmentOutcome], enabled: bool) -> dict[str, Any]:
    """A design's verification over its segments: status (passed, failed, skipped,
    off), the steps verified / skipped, and the first failure."""
    if not enabled:
        return {"status": "off", "steps": []}
    steps = [s for o in outcomes if o.verification for s in o.verification.get("steps", [])]
    failed = next((s for s in steps if s["status"] == "failed"), None)
    passed = [s["step"] for s in steps if s["status"] == "passed"]
    if failed is not None:
        status = "failed"
    elif passed:
        status = "passed"
    elif any(not o.ok for o in outcomes):
        status = "not-run"
    else:
        status = "skipped"
    owner = next(
        (o for o in outcomes if o.verification and o.verification.get("status") == "failed"), None
    )
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
        "message": owner.verification.get("message") if owner and owner.verification else None,
        "differ": failed.get("differ") if failed else None,
        "vectors": failed.get("vectors") if failed else None,
        "max_err": failed.get("max_err") if failed else None,
        "steps": steps,
    }


# -- the Python API: design.execute(inputs) --------------------------------------------------
def execute_design(design: Any, inputs: Any, after: str | None = None) -> Any:
    """Outputs of a built design's model (its final one, or the one after the step
    ``after``: a short name such as ``streamline`` or FINN's ``step_streamline``) for
    ``inputs``, one vector per row. Runs here, in this process, with FINN's execution,
    unless the same model was executed on the same inputs before (``execution_memo.py``)."""

    chain = design.leaf.chain()
    outcomes = design.segments
    if any(not o.ok for o in outcomes):
        raise RuntimeError(f"the design was not built: {design.reason}")
    located: tuple[Any, Any, int] | None = None
    parent: Path | None = None
    for segment, outcome in zip(chain, outcomes, strict=True):
        for index, step in enumerate(segment.steps):
            name = toolchain().checkpoint_name(step)
            if outcome.entry and step.is_finn and step.name == toolchain().partition_step:
                parent = (
                    Path(outcome.entry)
                    / "build"
                    / "intermediate_models"
                    / toolchain().partition_parent
                )
            if after is not None and after in (step.name, step.qualified, name):
                located = (segment, outcome, index)
                break
        if located is not None:
            break
    if after is None:
        model = Path(str(design.final_model))
    elif located is None:
        steps = [s.name for seg in chain for s in seg.steps]
        raise ValueError(f"{after!r} is not a step of this design; its steps: {', '.join(steps)}")
    else:
        segment, outcome, index = located
        entry = Path(outcome.entry)
        if index == len(segment.steps) - 1:
            model = entry / toolchain().output_model
        else:
            model = (
                entry
                / "build"
                / "intermediate_models"
                / f"{toolchain().checkpoint_name(segment.steps[index])}.onnx"
            )
            if not model.is_file():
                raise ValueError(
                    f"the model after {after!r} was not kept (the cache keeps each segment's "
                    "last model); run with --brainsmith-keep-step-models to keep every step's"
                )
    if parent is not None and not parent.is_file():
        parent = None
    return execute_model(design.executions, model, inputs, parent)


def execute_model(
    memo: ExecutionMemo | None, model: Path, inputs: Any, parent: Path | None = None
) -> Any:
    """Outputs of ``model`` (inside ``parent``, for a dataflow partition) on ``inputs``,
    one vector per row: executed with FINN here, or read from ``memo`` when this model
    ran on these inputs before."""
    import numpy as np

    vectors = np.asarray(inputs, dtype=np.float32)

    def compute() -> Any:
        reason = toolchain().simulator_needed(model)
        if reason is not None:
            raise RuntimeError(f"cannot execute the model here: {_simulator_reason(reason)}")
        return toolchain().execute(model, vectors, parent)

    if memo is None:
        return compute()
    return memo.run([model] + ([parent] if parent else []), vectors, compute)
