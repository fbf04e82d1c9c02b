"""Verification: every design's model is executed after its steps and compared with
a golden; a design that computes the wrong answer, or whose values do not fit the
widths its hardware gives them, fails.

Where it runs. In the worker that builds the segment, right after its steps (so it is
isolated, under the segment's timeout and memory limit). The model after the
segment's last step is executed on all the inputs at once (the toolchain's
``check``: for FINN its Python references, specialized layers as their generic HW op,
batched, with a width check; ``finn/reference.py``) and compared with the golden
(the blueprint's model executed on the same inputs, kept once per model and inputs
and shared by every design). If it passes, every step of the segment passes through
it; if not, the models in between are executed by bisection to find the first step
after which it fails. Models after ``create_dataflow_partition`` run inside the
partition's parent model, found in this segment's checkpoints or in the nearest
ancestor entry that holds it.

The result is a **record** in the cache, ``verify/<segment key>/<verify hash>.json``,
beside the entry, not inside it: the verify settings are not part of the segment key,
so changing ``verify:`` never rebuilds a segment. A reused entry without a record for
the current settings is verified from the last model it kept; only a bisection needs
the models in between, which a worker then re-creates by running the segment's steps
from its parent's checkpoint in a scratch directory (nothing is republished).

What it answers. The first step whose model fails fails the segment that holds it
(kind ``verification``; its descendants are blocked by it, as by a build failure),
e.g. ``verification failed after step_streamline: 5 of 8 outputs differ, max |err| 3
(atol 0)`` or ``width check failed after step_minimize_bit_width: MVAU_hls_2
accumulator reaches 70,113, accDataType INT16 holds [-32,768, 32,767]``. The record
stays, so a later run reports the same without executing again. A model the toolchain
cannot execute here (a layer with no Python reference) is skipped with the reason.
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

from .cache.execution_memo import ExecutionMemo
from .keys import file_digest
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
SCHEME = 2


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
        "expected": expected or {"golden": settings.golden, "model": file_digest(model)},
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
        "golden": settings.golden,
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
    if plan.get("golden", "model") == "converted":  # the model as the compiler reads it
        identity = f"golden converted {_file_digest(model)}"
        result, _ = memo.check(
            identity, inputs, lambda: {"outputs": _converted(plan, model, inputs)}
        )
        return inputs, np.asarray(result["outputs"], dtype=np.float64), exact
    expected = memo.run([model], inputs, lambda: toolchain().execute(model, inputs))
    return inputs, expected.astype(np.float64), exact


def _converted(plan: dict[str, Any], model: Path, inputs: Any) -> Any:
    """Outputs of ``model`` converted by the toolchain (in a scratch file)."""
    folder = Path(plan["executions"]) / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        converted = toolchain().convert_input(model, Path(scratch) / "converted.onnx")
        return toolchain().execute(converted, inputs)


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
    (atol 0)``, or ``width check failed after step_minimize_bit_width: MVAU_hls_2
    accumulator reaches 70,113, accDataType INT16 holds [-32768, 32767]``."""
    if result.get("error"):
        return f"verification failed after {step}: {result['error']}"
    width = result.get("width") or {}
    violations = width.get("violations") or []
    more = width.get("count", len(violations)) - 1
    widths = (
        f"{violations[0]['message']}" + (f" (and {more} more)" if more > 0 else "")
        if violations
        else ""
    )
    if not result.get("differ"):
        return f"width check failed after {step}: {widths}"
    tol = f"atol {atol:g}" + (f", rtol {rtol:g}" if rtol else "")
    text = (
        f"verification failed after {step}: {result['differ']} of {result['vectors']} "
        f"outputs differ, max |err| {result['max_err']:g} ({tol})"
    )
    return text + (f"; width check: {widths}" if widths else "")


class ModelsNeeded(Exception):
    """A step's model that verification needs was not kept (re-run the segment)."""


def verify_steps(
    spec: BuildSpec, checkpoints: dict[str, Path], parent_model: Path | None
) -> dict[str, Any]:
    """Verify the segment's steps (``checkpoints``: FINN's checkpoint name -> its file;
    ``parent_model``: the dataflow partition's parent, for the models after it).

    The model after the segment's last step is executed first; when it computes the
    golden and fits its widths, every step of the segment passes through it. When it
    does not, the models in between are executed by bisection to find the first step
    after which it fails (``ModelsNeeded`` if one of them was not kept)."""
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
    record.update(atol=atol, rtol=rtol, vectors=int(len(inputs)), simulators=_simulators())
    record["golden_seconds"] = round(time.time() - started, 3)  # drawn/read, or computed
    wanted: list[tuple[str, bool]] = []  # (checkpoint name, inside the dataflow partition)
    partitioned = False
    for index, step in enumerate(spec.path_steps):
        partitioned = partitioned or (step.is_finn and step.name == toolchain().partition_step)
        if index >= spec.first and (plan["after"] is None or step.name in plan["after"]):
            wanted.append((toolchain().checkpoint_name(step), partitioned))
    results: dict[int, dict[str, Any]] = {}

    def run(i: int) -> dict[str, Any]:
        if i not in results:
            name, inside = wanted[i]
            results[i] = _verify_model(
                name,
                checkpoints.get(name),
                parent_model if inside else None,
                inside,
                inputs,
                expected,
                atol,
                rtol,
                plan["executions"],
            )
        return results[i]

    last = len(wanted) - 1
    while last >= 0 and run(last)["status"] == "skipped":
        last -= 1  # e.g. a layer without a Python reference: verify the model before it
    failed_at: int | None = None
    if last >= 0 and run(last)["status"] == "failed":
        failed_at = last
        if "error" not in results[last]:  # bisect: the first step whose model fails
            low, high = 0, last
            candidates = [i for i in range(last) if _runnable(wanted[i][0], checkpoints)]
            while candidates and low < high:
                between = [i for i in candidates if low <= i < high]
                if not between:
                    break
                mid = between[len(between) // 2]
                if run(mid)["status"] == "failed":
                    high = mid
                else:
                    low = mid + 1
            failed_at = high
    for i, (name, _) in enumerate(wanted):
        if failed_at is not None and i > failed_at:
            break
        if i in results:
            steps.append(results[i])
            continue
        # not executed: passed through the next model executed that passed
        through = next(
            (
                wanted[j][0]
                for j in range(i + 1, len(wanted))
                if j in results and results[j]["status"] == "passed"
            ),
            None,
        )
        if through is not None:
            steps.append({"step": name, "status": "passed", "through": through})
        else:
            steps.append({"step": name, "status": "skipped", "reason": "not executed"})
    failing = next((s for s in steps if s["status"] == "failed"), None)
    if failing is not None:
        record.update(
            status="failed",
            failed_step=failing["step"],
            message=message(failing["step"], failing, atol, rtol),
        )
    elif any(s["status"] == "passed" for s in steps):
        record["status"] = "passed"
    executed = [s for s in steps if "seconds" in s]
    record["executed"] = [s["step"] for s in executed]
    if executed and "execution" in executed[0]:
        record["execution"] = executed[0]["execution"]
    record["seconds"] = round(time.time() - started, 3)
    return record


def _runnable(name: str, checkpoints: dict[str, Path]) -> bool:
    """Whether the model after step ``name`` can be executed here; ``ModelsNeeded`` when
    it was not kept."""
    model = checkpoints.get(name)
    if model is None or not model.is_file():
        raise ModelsNeeded(name)
    return toolchain().not_executable(model) is None


def _verify_model(
    name: str,
    model: Path | None,
    parent: Path | None,
    inside: bool,
    inputs: Any,
    expected: Any,
    atol: float,
    rtol: float,
    executions: Path | str,
) -> dict[str, Any]:
    """Execute the model after step ``name`` and judge it: outputs against the golden,
    values against their widths. The check is kept by what the model computes
    (``executions``: the memo's folder), so designs that differ only in their folding
    share one execution."""
    entry: dict[str, Any] = {"step": name, "status": "skipped"}
    if model is None or not model.is_file():
        raise ModelsNeeded(name)
    started = time.time()
    try:
        reason = toolchain().not_executable(model)
        if reason is None and inside and parent is None:
            reason = "the dataflow partition's parent model was not found in the cache"
        if reason is not None:
            entry["reason"] = f"{reason}; {_simulators()}"
            return entry
        identity = toolchain().numerics_digest(model, parent)
        result, shared = ExecutionMemo(executions).check(
            identity, inputs, lambda: toolchain().check(model, inputs, parent)
        )
    except Exception as exc:
        entry.update(status="failed", error=f"cannot execute the model: {exc}"[:500])
        entry["traceback"] = traceback.format_exc()
        entry["seconds"] = round(time.time() - started, 3)
        return entry
    entry.update(compare(result["outputs"], expected, atol, rtol))
    violations = result.get("violations") or []
    entry["width"] = {
        "values_checked": result.get("values_checked", 0),
        "count": len(violations),
        "violations": violations[:10],
    }
    entry["execution"] = {k: v for k, v in result.items() if k not in ("outputs", "violations")}
    if shared:  # a model computing the same (e.g. another folding) was executed before
        entry["execution"]["shared"] = True
    entry["seconds"] = round(time.time() - started, 3)
    entry["status"] = "failed" if entry.get("error") or entry["differ"] or violations else "passed"
    return entry


def _simulators() -> str:
    """Why the compiler's own simulators did not run here (the Python reference did)."""
    tools = toolchain().available_tools()
    missing = [f"{tool}: {why}" for tool, why in sorted(tools.items()) if why]
    if not missing:
        return "cppsim/rtlsim available but not driven by pytest-brainsmith yet"
    return "cppsim/rtlsim not run (" + "; ".join(missing) + ")"


def dataflow_parent(spec: BuildSpec, cache: SegmentCache, own: Path) -> Path | None:
    """The dataflow partition's parent model for the segment's models: in its own
    checkpoints (``own``) if its steps made it, else in the nearest ancestor's entry
    that holds one (``spec.ancestors``, checked through each entry's manifest)."""
    name = toolchain().partition_parent
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


def after_build(spec: BuildSpec, out_dir: Path, cache: SegmentCache) -> dict[str, Any]:
    """Verify a segment just built in ``out_dir`` (FINN's output directory, with every
    step's checkpoint) and record the result."""
    checkpoints = out_dir / "intermediate_models"
    found = {
        toolchain().checkpoint_name(s): checkpoints / f"{toolchain().checkpoint_name(s)}.onnx"
        for s in spec.steps
    }
    try:
        record = verify_steps(spec, found, dataflow_parent(spec, cache, checkpoints))
    except ModelsNeeded as missing:  # FINN did not write it: nothing to verify it with
        record = _unverifiable(spec, f"FINN wrote no model after {missing}")
    assert spec.verify is not None
    _write_json(record_path(spec.verify["base"], spec.key, spec.verify["hash"]), record)
    return record


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


def again(spec: BuildSpec, cache: SegmentCache, entry_path: Path) -> dict[str, Any]:
    """A cached segment without a record for these settings: verify it without
    rebuilding the entry (see the module docstring) and record the result."""
    assert spec.verify is not None
    started = time.time()
    kept = entry_path / "build" / "intermediate_models"
    found = {
        toolchain().checkpoint_name(s): kept / f"{toolchain().checkpoint_name(s)}.onnx"
        for s in spec.steps
    }
    found[toolchain().checkpoint_name(spec.steps[-1])] = entry_path / toolchain().output_model
    scratch: Path | None = None
    try:
        try:
            record = verify_steps(spec, found, dataflow_parent(spec, cache, kept))
        except ModelsNeeded:  # the entry kept only its last model: run its steps again
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
            try:
                record = verify_steps(spec, found, dataflow_parent(spec, cache, checkpoints))
            except ModelsNeeded as missing:
                record = _unverifiable(spec, f"FINN wrote no model after {missing}")
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
    records = [o.verification for o in outcomes if o.verification]
    steps = [s for r in records for s in r.get("steps", [])]
    failed = next((s for s in steps if s["status"] == "failed"), None)
    passed = [s["step"] for s in steps if s["status"] == "passed"]
    if failed is not None or any(r.get("status") == "failed" for r in records):
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
        "width": (failed.get("width") or {}).get("violations") if failed else None,
        # how: the vectors compared, the models executed (the others passed through them)
        "vectors_compared": max((int(r.get("vectors") or 0) for r in records), default=0),
        "executed": [name for r in records for name in r.get("executed", [])],
        "execution": next(
            (r["execution"]["execution"] for r in records if r.get("execution")), None
        ),
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
        reason = toolchain().not_executable(model)
        if reason is not None:
            raise RuntimeError(f"cannot execute the model here: {reason}; {_simulators()}")
        return toolchain().execute(model, vectors, parent)

    if memo is None:
        return compute()
    return memo.run([model] + ([parent] if parent else []), vectors, compute)
