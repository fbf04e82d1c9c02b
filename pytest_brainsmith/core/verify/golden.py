"""The golden a segment's models are compared with, and the comparison.

The golden is the blueprint's model executed on the plan's inputs (or the expected
outputs a blueprint gives), kept once per model and inputs in the execution memo and
shared by every design. A model's outputs are compared vector by vector within the
tolerances; ``message`` says in one line what differed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache.execution_memo import ExecutionMemo
from ..keys import file_digest

if TYPE_CHECKING:
    from ..toolchain import ExecutionFacts

#: FINN's verify_step tolerances, for outputs that are not integers.
FLOAT_ATOL, FLOAT_RTOL = 1e-3, 1e-5


def golden(plan: dict[str, Any], execution: ExecutionFacts) -> tuple[Any, Any, bool]:
    """(inputs, expected outputs, exact?) for the plan: drawn, read or computed by
    executing the blueprint's model, and kept in the cache (one file per model and
    inputs) so each is computed once."""
    import numpy as np  # lazy: numpy comes with the toolchain (no core dependency)

    model = Path(plan["model"])
    _, out_info = execution.model_io(model)
    exact = execution.is_integer_type(out_info.datatype)
    if plan["inputs_file"]:
        inputs = np.load(plan["inputs_file"], allow_pickle=False).astype(np.float32)
    else:
        inputs = execution.random_inputs(model, plan["count"], plan["seed"])
    if plan["expected_file"]:
        expected = np.load(plan["expected_file"], allow_pickle=False)
        exact = exact or expected.dtype.kind in "iub"
        return inputs, expected.astype(np.float64), exact
    memo = ExecutionMemo(plan["executions"])
    if plan.get("golden", "model") == "converted":  # the model as the compiler reads it
        identity = f"golden converted {file_digest(model)}"
        result, _ = memo.check(
            identity, inputs, lambda: {"outputs": _converted(plan, model, inputs, execution)}
        )
        return inputs, np.asarray(result["outputs"], dtype=np.float64), exact
    expected = memo.run([model], inputs, lambda: execution.execute(model, inputs))
    return inputs, expected.astype(np.float64), exact


def _converted(plan: dict[str, Any], model: Path, inputs: Any, execution: ExecutionFacts) -> Any:
    """Outputs of ``model`` converted by the toolchain (in a scratch file)."""
    folder = Path(plan["executions"]) / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        converted = execution.convert_input(model, Path(scratch) / "converted.onnx")
        return execution.execute(converted, inputs)


def tolerances(plan: dict[str, Any], exact: bool) -> tuple[float, float]:
    atol = plan["atol"] if plan["atol"] is not None else (0.0 if exact else FLOAT_ATOL)
    rtol = plan["rtol"] if plan["rtol"] is not None else (0.0 if exact else FLOAT_RTOL)
    return atol, rtol


def compare(got: Any, expected: Any, atol: float, rtol: float) -> dict[str, Any]:
    """How many vectors differ beyond the tolerance, and the largest |error|."""
    import numpy as np  # lazy: numpy comes with the toolchain (no core dependency)

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
