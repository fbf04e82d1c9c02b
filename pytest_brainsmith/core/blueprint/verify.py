"""``verify:``: execute each design's model after its steps and compare the outputs
with a golden (see core/verify/ for where and how it runs).

```yaml
verify:
  inputs: 256          # a count of random inputs (seeded), or a .npy file of inputs
  seed: 0
  expected: out.npy    # default: the outputs of executing the blueprint's model itself
  golden: model        # or converted: that model as the compiler reads it (FINN's
                       # QONNX-to-FINN conversion), the golden when expected is not given
  after: [streamline, convert_to_hw]   # default: every step
  atol: 0              # default: exact for integer outputs, FINN's 1e-3 / 1e-5 otherwise
  rtol: 0
```

``verify: true`` takes every default; ``verify: false`` turns an inherited one off.
Merged key by key through ``extends``. The .npy files are checked against the model's
input and output shapes at collection.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ..errors import did_you_mean
from ..registry import Registry
from ..toolchain import current as toolchain
from .files import resolve_file
from .report import FileReport, MergedReport, typename
from .space import StepSlot, VerifySettings, pipeline_step, pipeline_steps

VERIFY_KEYS = ("enabled", "inputs", "seed", "expected", "golden", "after", "atol", "rtol")
#: What ``golden:`` may say: the blueprint's model executed as it is, or converted first.
GOLDENS = ("model", "converted")
#: Random inputs by default: enough that one flipped weight of TFC's first layer (which
#: changes 2-5 % of its outputs) is caught (bench/verification.py --catch measures it).
DEFAULT_COUNT = 256
MAX_COUNT = 100_000


def check_verify_file(value: Any, report: FileReport) -> dict[str, Any]:
    """One file's ``verify:`` before ``extends`` merges it: a mapping (a bool turns it
    on or off), its .npy paths resolved against this file's folder."""
    if isinstance(value, bool):
        return {"enabled": value}
    if not isinstance(value, dict):
        raise report.error(
            ("verify",),
            f"expected true, false or a mapping of {', '.join(VERIFY_KEYS[1:])}, "
            f"got {typename(value)}",
        )
    result: dict[str, Any] = {}
    for name, item in value.items():
        key = ("verify", name)
        if name not in VERIFY_KEYS:
            raise report.error(
                key,
                "unknown key",
                did_you_mean(str(name), VERIFY_KEYS) or f"allowed keys: {', '.join(VERIFY_KEYS)}",
            )
        if name in ("inputs", "expected") and isinstance(item, str):
            item = resolve_file(item, key, report, f"the {name} .npy file")
        result[name] = item
    return result


def resolve_verify(
    raw: dict[str, Any] | None,
    slots: list[StepSlot],
    registry: Registry,
    models: list[Path],
    report: MergedReport,
) -> VerifySettings | None:
    """The merged ``verify:`` as settings, or None when absent or turned off."""
    if raw is None or raw.get("enabled", True) is False:
        return None
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise report.error(
            ("verify", "enabled"), f"expected true or false, got {typename(enabled)}"
        )
    inputs = raw.get("inputs", DEFAULT_COUNT)
    count, inputs_file = DEFAULT_COUNT, None
    if isinstance(inputs, Path):
        inputs_file = inputs
    elif isinstance(inputs, int) and not isinstance(inputs, bool) and 1 <= inputs <= MAX_COUNT:
        count = inputs
    else:
        raise report.error(
            ("verify", "inputs"),
            f"expected a number of random inputs (1 to {MAX_COUNT:,}) or a .npy file, "
            f"got {typename(inputs)} {str(inputs)[:40]}",
        )
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise report.error(("verify", "seed"), f"expected an integer >= 0, got {seed!r}"[:200])
    expected = raw.get("expected")
    if expected is not None and not isinstance(expected, Path):
        raise report.error(
            ("verify", "expected"), f"expected a path to a .npy file, got {typename(expected)}"
        )
    golden = raw.get("golden", "model")
    if golden not in GOLDENS:
        hint = did_you_mean(str(golden), GOLDENS)
        raise report.error(
            ("verify", "golden"),
            f"expected one of {', '.join(GOLDENS)}, got {str(golden)[:40]!r}"
            + (f"; {hint}" if hint else ""),
        )
    if golden != "model" and expected is not None:
        raise report.error(
            ("verify", "golden"),
            "golden chooses the model executed for the expected outputs; "
            "with expected: (a .npy file) there is none: give one or the other",
        )
    settings = VerifySettings(
        count=count,
        golden=golden,
        seed=seed,
        inputs_file=inputs_file,
        expected_file=expected,
        after=_after(raw.get("after"), slots, registry, report),
        atol=_tolerance(raw, "atol", report),
        rtol=_tolerance(raw, "rtol", report),
    )
    _check_arrays(settings, models, report)
    return settings


def _after(
    value: Any, slots: list[StepSlot], registry: Registry, report: MergedReport
) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise report.error(
            ("verify", "after"), f"expected a step or a list of steps, got {typename(value)}"
        )
    in_pipeline = pipeline_steps(slots)
    names = []
    for i, name in enumerate(items):
        key = ("verify", "after") if isinstance(value, str) else ("verify", "after", i)
        names.append(pipeline_step(name, key, in_pipeline, registry, report))
    return tuple(dict.fromkeys(names))


def _tolerance(raw: dict[str, Any], name: str, report: MergedReport) -> float | None:
    value = raw.get(name)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise report.error(("verify", name), f"expected a finite number >= 0, got {value!r}"[:200])
    return float(value)


#: The largest .npy file of inputs or expected outputs read at collection.
MAX_ARRAY_BYTES = 1 << 30


def _load(path: Path, key: tuple[str, str], report: MergedReport) -> Any:
    import numpy as np  # lazy: numpy comes with the toolchain (no core dependency)

    try:
        with open(path, "rb") as handle:  # the header first: what it claims is bounded
            version = np.lib.format.read_magic(handle)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                raise ValueError(f".npy format version {version} is not supported")
            shape, _, dtype = read_header(handle)
            start = handle.tell()
            data = handle.seek(0, os.SEEK_END) - start
    except (OSError, ValueError, SyntaxError, TypeError) as exc:
        raise report.error(key, f"cannot read {path} as a .npy array: {exc}"[:300]) from None
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > MAX_ARRAY_BYTES or claimed > data:
        raise report.error(
            key,
            f"{path.name}: its header claims an array of shape {shape} ({claimed:,} bytes) "
            f"but the file holds {data:,} bytes of data"
            + (f" (at most {MAX_ARRAY_BYTES:,} are read)" if claimed > MAX_ARRAY_BYTES else ""),
        )
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, MemoryError) as exc:
        raise report.error(key, f"cannot read {path} as a .npy array: {exc}"[:300]) from None
    if not hasattr(array, "dtype") or array.dtype.kind not in "fiub":
        raise report.error(
            key, f"{path.name}: expected numbers (float or integer), got dtype {array.dtype}"
        )
    return array


def _check_arrays(settings: VerifySettings, models: list[Path], report: MergedReport) -> None:
    """Shapes of the .npy files against every model's input and output."""
    if settings.inputs_file is None and settings.expected_file is None:
        return
    count = settings.count
    infos = [(m, *toolchain().execution.model_io(m)) for m in models]
    if settings.inputs_file is not None:
        key = ("verify", "inputs")
        array = _load(settings.inputs_file, key, report)
        for model, given, _ in infos:
            want = given.shape[1:]
            if (
                array.ndim != len(given.shape)
                or tuple(array.shape[1:]) != tuple(want)
                or not len(array)
            ):
                raise report.error(
                    key,
                    f"{settings.inputs_file.name} has shape {tuple(array.shape)}; the model "
                    f"{model.name} takes input {given.name!r} of shape {tuple(given.shape)}: "
                    f"expected (N, {', '.join(map(str, want))}) with N >= 1 vectors",
                )
        count = len(array)
    if settings.expected_file is not None:
        key = ("verify", "expected")
        array = _load(settings.expected_file, key, report)
        for model, _, out in infos:
            want = out.shape[1:]
            if len(array) != count or int(array[:1].size) != int(math.prod(want)):
                raise report.error(
                    key,
                    f"{settings.expected_file.name} has shape {tuple(array.shape)}; expected "
                    f"{count} output vectors of the model {model.name}'s output {out.name!r} "
                    f"(shape {tuple(out.shape)}): ({count}, {', '.join(map(str, want))})",
                )
