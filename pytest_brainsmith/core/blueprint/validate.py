"""Checks of a blueprint's keys and FINN config values.

``check_file`` runs on each file before ``extends`` merges it, so the merge only ever
sees the shapes it expects (a mapping where keys are merged one by one) and every
relative path is resolved against the file that wrote it. ``fixed_config`` runs on
the merged blueprint: the FINN config fixed for every design.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import did_you_mean
from ..toolchain import current as toolchain
from .files import resolve_file
from .regress import check_regress_file
from .report import FileReport, KeyPath, Reporter, typename
from .verify import check_verify_file

TOP_LEVEL_KEYS = (
    "name",
    "description",
    "extends",
    "abstract",
    "model",
    "board",
    "fpga_part",
    "clock_ns",
    "output",
    "start_step",
    "stop_step",
    "finn_config",
    "design_space",
    "expect",
    "timeout",
    "step_timeouts",
    "max_memory",
    "step_resources",
    "explore",
    "verify",
    "regress",
)
#: Top-level keys BrainSmith's blueprints carry and neither BrainSmith nor we read.
BRAINSMITH_KEYS = ("save_intermediate_models", "verify_data", "parallel_builds", "debug")
DESIGN_SPACE_KEYS = ("steps", "kernels", "finn_config", "folding")
#: Fields the explorer sets itself for every segment; a blueprint may not set them.
RESERVED_CONFIG_FIELDS = frozenset({"output_dir", "steps", "start_step", "stop_step", "model_path"})
#: Fields a blueprint may fix but not sweep.
UNSWEEPABLE_FIELDS = frozenset({"generate_outputs", "save_intermediate_models"})


def path_config_fields() -> frozenset[str]:
    """Config fields that name files: resolved against the blueprint's folder, hashed
    by content."""
    return frozenset(
        name
        for name in toolchain().config_fields
        if name.endswith("_file") or name in {"verify_input_npy", "verify_expected_output_npy"}
    )


#: Top-level shorthands and the FINN field each stands for.
SHORTHANDS = {"board": "board", "fpga_part": "fpga_part", "clock_ns": "synth_clk_period_ns"}


def output_types() -> tuple[str, ...]:
    """FINN's DataflowOutputType values (what generate_outputs may list): its default
    lists them all."""
    return tuple(toolchain().config_fields["generate_outputs"]["default"])


_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "float": (int, float),
    "int": (int,),
    "str": (str,),
}


# -- one file, before merging ------------------------------------------------------------
def check_file(data: dict[Any, Any], report: FileReport) -> dict[Any, Any]:
    """Check one file's keys and the shape of what ``extends`` merges; resolve its
    relative paths against its own folder (so an inherited path keeps pointing where
    its author meant). Returns the data without keys that are only warned about."""
    result: dict[Any, Any] = {}
    known = (*TOP_LEVEL_KEYS, *BRAINSMITH_KEYS)
    for name, value in data.items():
        if name in BRAINSMITH_KEYS:
            continue  # BrainSmith's own settings: accepted, and (like BrainSmith) not read
        if name not in TOP_LEVEL_KEYS:
            report.warn(
                (name,),
                "unknown key, ignored",
                did_you_mean(str(name), known) or f"known keys: {', '.join(TOP_LEVEL_KEYS)}",
            )
            continue
        result[name] = value
    if "model" in result:
        result["model"] = _models(result["model"], report)
    for name in ("finn_config", "expect", "step_timeouts", "step_resources", "explore"):
        if result.get(name) is None:
            result.pop(name, None)
        elif not isinstance(result[name], dict):
            what = {
                "finn_config": "FINN config fields",
                "expect": 'metric: "<op> <number>"',
                "step_timeouts": "step: duration",
                "step_resources": "step: {resource: amount}",
                "explore": "pareto, before, order",
            }[name]
            raise report.error(
                (name,), f"expected a mapping of {what}, got {typename(result[name])}"
            )
    for step, asked in (result.get("step_resources") or {}).items():
        if not isinstance(asked, dict):  # extends merges each step's resources one by one
            raise report.error(
                ("step_resources", step),
                f"expected a mapping of resource: amount (e.g. {{vivado: 1, memory: 16G}}), "
                f"got {typename(asked)}",
            )
    if result.get("verify") is None:
        result.pop("verify", None)
    else:
        result["verify"] = check_verify_file(result["verify"], report)
    if result.get("regress") is None:
        result.pop("regress", None)
    else:
        result["regress"] = check_regress_file(result["regress"], report)
    if "finn_config" in result:
        result["finn_config"] = _fixed_fields(result["finn_config"], report)
    if result.get("design_space") is None:
        result.pop("design_space", None)
    else:
        result["design_space"] = _design_space(result["design_space"], report)
    return result


def _models(value: Any, report: FileReport) -> list[tuple[Path, KeyPath]]:
    if isinstance(value, list):
        if not value:
            raise report.error(("model",), "expected a model file or a list of them, got []")
        entries = [(v, ("model", i)) for i, v in enumerate(value)]
    else:
        entries = [(value, ("model",))]
    models = [(resolve_file(v, key, report, "the model file"), key) for v, key in entries]
    seen: set[Path] = set()
    for path, key in models:
        if path in seen:
            raise report.error(key, f"lists the model {path} twice")
        seen.add(path)
    return models


def _fixed_fields(config: dict[Any, Any], report: FileReport) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in config.items():
        key = ("finn_config", name)
        check_config_field(name, key, report)
        if name == "save_intermediate_models":
            if value is not True:
                report.warn(
                    key,
                    "ignored: pytest-brainsmith needs FINN's checkpoints to resume segments "
                    "(BrainSmith forces it on too)",
                    "the cache keeps only each segment's last model unless "
                    "--brainsmith-keep-step-models",
                )
            continue
        if name in path_config_fields() and value is not None:
            value = resolve_file(value, key, report, f"the {name}")
        result[name] = value
    return result


def _design_space(space: Any, report: FileReport) -> dict[str, Any]:
    key: KeyPath = ("design_space",)
    if not isinstance(space, dict):
        raise report.error(
            key, f"expected a mapping with steps, kernels, finn_config, got {typename(space)}"
        )
    for name in space:
        if name not in DESIGN_SPACE_KEYS:
            raise report.error(
                (*key, name),
                "unknown key",
                did_you_mean(str(name), DESIGN_SPACE_KEYS)
                or f"allowed keys: {', '.join(DESIGN_SPACE_KEYS)}",
            )
    result = {k: v for k, v in space.items() if v is not None}
    sweeps = result.get("finn_config")
    if sweeps is not None:
        skey = (*key, "finn_config")
        if not isinstance(sweeps, dict):
            raise report.error(
                skey, f"expected a mapping of field: [alternatives], got {typename(sweeps)}"
            )
        checked: dict[str, list[Any]] = {}
        for name, values in sweeps.items():
            fkey = (*skey, name)
            check_config_field(name, fkey, report)
            if name in UNSWEEPABLE_FIELDS:
                raise report.error(fkey, "cannot be swept", "fix it in the top-level finn_config")
            if not isinstance(values, list) or not values:
                raise report.error(
                    fkey,
                    f"expected a non-empty list of alternative values, got {typename(values)}",
                    "a single fixed value belongs under the top-level finn_config",
                )
            if name in path_config_fields():
                values = [
                    None if v is None else resolve_file(v, (*fkey, i), report, f"the {name}")
                    for i, v in enumerate(values)
                ]
            checked[name] = values
        result["finn_config"] = checked
    return result


def check_config_field(name: Any, key: KeyPath, report: Reporter) -> str:
    compiler = toolchain()
    if not isinstance(name, str) or name not in compiler.config_fields:
        raise report.error(
            key,
            f"unknown {compiler.name} config field (DataflowBuildConfig of "
            f"{compiler.name} {compiler.version})",
            did_you_mean(str(name), compiler.config_fields),
        )
    if name in RESERVED_CONFIG_FIELDS:
        raise report.error(key, "is set by pytest-brainsmith for each segment; remove it")
    return name


# -- the merged blueprint -----------------------------------------------------------------
def string_field(data: dict[Any, Any], name: str, default: str, report: Reporter) -> str:
    value = data.get(name, default)
    if not isinstance(value, str):
        raise report.error((name,), f"expected a string, got {typename(value)}")
    return value


def fixed_config(data: dict[Any, Any], report: Reporter) -> tuple[dict[str, Any], list[str] | None]:
    """finn_config plus the top-level shorthands: (config, generate_outputs or None).

    As in BrainSmith, finn_config is applied last: ``finn_config.synth_clk_period_ns``
    overrides ``clock_ns`` and ``finn_config.board`` overrides ``board`` (with a
    warning when they disagree)."""
    given: dict[str, Any] = dict(data.get("finn_config") or {})
    config: dict[str, Any] = {}
    for short, field_name in SHORTHANDS.items():
        if short not in data:
            continue
        value = data[short]
        if field_name in given and given[field_name] != value:
            report.warn(
                ("finn_config", field_name),
                f"{given[field_name]!r} overrides {short}: {value!r}, as in BrainSmith",
                "set it in one place",
            )
            continue
        config[field_name] = value
    outputs = given.pop("generate_outputs", None)
    config.update(given)
    for short, field_name in SHORTHANDS.items():
        where: KeyPath = ("finn_config", field_name) if field_name in given else (short,)
        if field_name in config:
            check_types({field_name: config[field_name]}, where, report, whole_key=True)
    check_types(
        {k: v for k, v in config.items() if k not in SHORTHANDS.values()}, ("finn_config",), report
    )
    clock = config.get("synth_clk_period_ns")
    if clock is not None and clock <= 0:
        where = (
            ("finn_config", "synth_clk_period_ns")
            if "synth_clk_period_ns" in given
            else ("clock_ns",)
        )
        raise report.error(where, f"expected a positive clock period in ns, got {clock!r}")
    if outputs is not None:
        outputs = _outputs(outputs, report)
    return config, outputs


def _outputs(value: Any, report: Reporter) -> list[str]:
    key: KeyPath = ("finn_config", "generate_outputs")
    if not isinstance(value, list) or not value:
        raise report.error(key, f"expected a list of FINN outputs, got {typename(value)}")
    for i, item in enumerate(value):
        if item not in output_types():
            raise report.error(
                (*key, i),
                f"unknown FINN output {item!r}; expected one of {', '.join(output_types())}",
                did_you_mean(str(item), output_types()),
            )
    if len(set(value)) != len(value):
        raise report.error(key, "lists the same output twice")
    return list(value)


def check_types(
    config: dict[str, Any], key: KeyPath, report: Reporter, whole_key: bool = False
) -> None:
    """Check simple scalar types against DataflowBuildConfig's annotations."""
    for name, value in config.items():
        if isinstance(value, Path) or value is None:
            continue
        where = key if whole_key else (*key, name)
        field = toolchain().config_fields[name]
        choices = field.get("choices")
        if choices is not None and not _among(value, choices):
            raise report.error(
                where,
                f"{name} expects one of {', '.join(map(str, choices))}, got {value!r}",
                did_you_mean(str(value), map(str, choices)),
            )
        annotation = field["type"]
        base = annotation.removeprefix("Optional[").removesuffix("]").replace(" | None", "")
        expected = _TYPES.get(base)
        if expected is None:
            continue
        ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
        if ok and isinstance(value, float) and not math.isfinite(value):
            raise report.error(where, f"{name} expects a finite number, got {value!r}")
        if not ok:
            raise report.error(
                where, f"{name} expects {base}, got {typename(value)} {_short(value)}"
            )


def _among(value: Any, choices: Any) -> bool:
    try:
        return value in choices
    except TypeError:  # an unhashable value asked of a set
        return False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
