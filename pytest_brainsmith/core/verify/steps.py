"""A segment's steps verified: the model after its last step first, bisection on failure.

If the last model computes the golden and fits its widths, every step of the segment
passes through it; if not, the models in between are executed by bisection to find the
first step after which it fails. Each model's check is kept by what it computes (its
numerics digest), so designs that differ only in their folding share one execution.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache.execution_memo import ExecutionMemo
from .golden import compare, golden, message, tolerances

if TYPE_CHECKING:
    from ..build_spec import BuildSpec
    from ..toolchain import Toolchain


class ModelsNeeded(Exception):
    """A step's model that verification needs was not kept (re-run the segment)."""


def verify_steps(
    spec: BuildSpec,
    checkpoints: dict[str, Path],
    parent_model: Path | None,
    compiler: Toolchain,
) -> dict[str, Any]:
    """Verify the segment's steps (``checkpoints``: the compiler's checkpoint name -> its
    file; ``parent_model``: the dataflow partition's parent, for the models after it).

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
        inputs, expected, exact = golden(plan, compiler.execution)
    except Exception as exc:
        record.update(status="failed", message=f"verification could not start: {exc}")
        record["traceback"] = traceback.format_exc()
        return record
    atol, rtol = tolerances(plan, exact)
    record.update(atol=atol, rtol=rtol, vectors=int(len(inputs)), simulators=simulators(compiler))
    record["golden_seconds"] = round(time.time() - started, 3)  # drawn/read, or computed
    wanted: list[tuple[str, bool]] = []  # (checkpoint name, inside the dataflow partition)
    partitioned = False
    for index, step in enumerate(spec.path_steps):
        partitioned = partitioned or (
            step.is_finn and step.name == compiler.execution.partition_step
        )
        if index >= spec.first and (plan["after"] is None or step.name in plan["after"]):
            wanted.append((compiler.checkpoint_name(step), partitioned))
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
                compiler,
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
            candidates = [i for i in range(last) if _runnable(wanted[i][0], checkpoints, compiler)]
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


def _runnable(name: str, checkpoints: dict[str, Path], compiler: Toolchain) -> bool:
    """Whether the model after step ``name`` can be executed here; ``ModelsNeeded`` when
    it was not kept."""
    model = checkpoints.get(name)
    if model is None or not model.is_file():
        raise ModelsNeeded(name)
    return compiler.execution.not_executable(model) is None


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
    compiler: Toolchain,
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
        execution = compiler.execution
        reason = execution.not_executable(model)
        if reason is None and inside and parent is None:
            reason = "the dataflow partition's parent model was not found in the cache"
        if reason is not None:
            entry["reason"] = f"{reason}; {simulators(compiler)}"
            return entry
        identity = execution.numerics_digest(model, parent)
        result, shared = ExecutionMemo(executions).check(
            identity, inputs, lambda: execution.check(model, inputs, parent)
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


def simulators(compiler: Toolchain) -> str:
    """Why the compiler's own simulators did not run here (the Python reference did)."""
    tools = compiler.available_tools()
    missing = [f"{tool}: {why}" for tool, why in sorted(tools.items()) if why]
    if not missing:
        return "cppsim/rtlsim available but not driven by pytest-brainsmith yet"
    return "cppsim/rtlsim not run (" + "; ".join(missing) + ")"
