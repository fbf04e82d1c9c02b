"""A blueprint file -> DesignSpace, stage by stage: read and merge (``extends``),
variables (per file, while reading), validation, the pipeline with its step
operations, kernels, sweeps, expectations, limits, and the design cap."""

from __future__ import annotations

import os
import warnings as python_warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import BlueprintError, BlueprintWarning
from ..registry import Registry
from ..toolchain import current as toolchain
from .expect import resolve_expect
from .explore import resolve_explore
from .extends import load_chain
from .folding import check_trial_choices, resolve_folding
from .kernels import check_backend_reader, check_kernels_in_models, resolve_kernels
from .limits import (
    resolve_max_memory,
    resolve_step_resources,
    resolve_step_timeouts,
    resolve_timeout,
)
from .pipeline import resolve_pipeline
from .regress import resolve_regress
from .report import MergedReport, Reporter, Warnings
from .space import DEFAULT_MAX_DESIGNS, OUTPUTS, DesignSpace, ModelChoice
from .sweeps import check_readers, resolve_sweeps
from .validate import fixed_config, string_field
from .verify import resolve_verify


def _needs_device() -> frozenset[str]:
    """The compiler's steps that fail without a target device (they resolve ``fpga_part``)."""
    reads = toolchain().step_reads
    return frozenset(step for step, fields in reads.items() if fields and "fpga_part" in fields)


def load_design_space(
    path: Path,
    registry: Registry,
    *,
    env: Mapping[str, str] | None = None,
    max_designs: int = DEFAULT_MAX_DESIGNS,
    model: Path | None = None,
    strict: bool = False,
) -> DesignSpace | None:
    """Parse, inherit, validate and resolve a blueprint file.

    ``model`` is the model for a blueprint without ``model:`` (``--brainsmith-model``).
    ``strict`` turns every warning into an error. Warnings are issued as Python
    warnings (``BlueprintWarning``, placed on the blueprint's file and line) and kept
    on the result. Returns None for a blueprint marked ``abstract: true`` (a parent
    only meant to be extended, which has no designs of its own)."""
    path = Path(os.path.normpath(Path(path).absolute()))
    found = Warnings(strict)
    try:
        space = _load(path, registry, os.environ if env is None else env, max_designs, model, found)
    finally:
        _issue(found.items)
    if space is not None:
        space.warnings = found.items
    return space


def _issue(items: list[BlueprintWarning]) -> None:
    for warning in items:
        try:
            python_warnings.warn_explicit(
                warning, BlueprintWarning, str(warning.file), warning.line or 0
            )
        except BlueprintWarning:  # -W error::BlueprintWarning: an error like --brainsmith-strict
            raise BlueprintError(
                warning.file, warning.key, warning.text, line=warning.line, hint=warning.hint
            ) from None


def _load(
    path: Path,
    registry: Registry,
    env: Mapping[str, str],
    max_designs: int,
    model: Path | None,
    found: Warnings,
) -> DesignSpace | None:
    merged = load_chain(path, env, found)
    data = merged.data
    report = MergedReport(merged.origin, merged.top)
    if data.get("abstract") is True:
        return None
    name = string_field(data, "name", path.name.split(".")[0], report)
    description = string_field(data, "description", "", report)
    output = data.get("output", "estimates")
    if output not in OUTPUTS:
        raise report.error(
            ("output",), f"expected one of {', '.join(OUTPUTS)}, got {output!r}"[:200]
        )
    models = _models(data, model, report)
    config, outputs = fixed_config(data, report)
    space = data.get("design_space") or {}
    sweeps = resolve_sweeps(space.get("finn_config") or {}, config, report)
    slots = resolve_pipeline(merged.steps, output, registry, merged.top, data, report)
    _check_required(
        config, sweeps, output, [s for slot in slots for s in slot.options if s], report
    )
    result = DesignSpace(
        path=path,
        name=name,
        description=description,
        model=models[0].path,
        output=output,
        finn_config=config,
        slots=slots,
        kernels=resolve_kernels(space.get("kernels"), registry, report),
        sweeps=sweeps,
        expect=[],
        registry=registry,
        sources=merged.sources,
        models=models,
        outputs=outputs,
        timeout=resolve_timeout(data, report),
        step_timeouts=resolve_step_timeouts(data.get("step_timeouts"), slots, registry, report),
        max_memory=resolve_max_memory(data, report),
        step_resources=resolve_step_resources(data.get("step_resources"), slots, registry, report),
        explore=resolve_explore(data.get("explore"), slots, registry, report),
        folding=resolve_folding(space.get("folding"), slots, report),
        verify=resolve_verify(
            data.get("verify"), slots, registry, [m.path for m in models], report
        ),
    )
    result.expect = resolve_expect(data.get("expect"), result.variation_points(), report)
    result.regress = resolve_regress(data.get("regress"), result.explore, result.folding, report)
    check_readers(sweeps, slots, report)
    check_backend_reader(result.kernels, slots, report)
    check_kernels_in_models(result.kernels, models, report)
    check_trial_choices(result, report)
    count = result.count_designs()
    if count > max_designs:
        raise report.error(
            ("design_space",),
            f"{count:,} designs exceed the cap of {max_designs:,}",
            "narrow the design space, or raise the cap with --brainsmith-max-designs "
            "or the ini option brainsmith_max_designs",
        )
    return result


def _models(data: dict[Any, Any], given: Path | None, report: MergedReport) -> list[ModelChoice]:
    """The blueprint's model(s), else the one given on the command line."""
    if "model" in data:
        paths = [p for p, _ in data["model"]]
    elif given is not None:
        given = Path(os.path.normpath(Path(given).absolute()))
        try:
            exists = given.is_file()
        except (OSError, ValueError):
            exists = False
        if not exists:
            raise report.error(
                (),
                f"the model file given by --brainsmith-model (ini brainsmith_model, "
                f"BRAINSMITH_MODEL) not found: {given}",
            )
        paths = [given]
    else:
        raise report.error(
            (),
            "no model: this blueprint names none (model: FILE, relative to the blueprint)",
            "give one with --brainsmith-model PATH, the ini option brainsmith_model or "
            "BRAINSMITH_MODEL (BrainSmith takes it from its command line)",
        )
    names = [p.stem for p in paths]
    if len(set(names)) != len(names):  # same file name in two folders: name them by path
        common = Path(os.path.commonpath([str(p.parent) for p in paths]))
        names = [str(p.relative_to(common).with_suffix("")) for p in paths]
    return [ModelChoice(n, p) for n, p in zip(names, paths, strict=True)]


def _check_required(
    config: dict[str, Any],
    sweeps: dict[str, list[Any]],
    output: str,
    steps: list[Any],
    report: Reporter,
) -> None:
    """What FINN cannot build without: a clock (BrainSmith requires it too) and, where a
    FINN step of the pipeline resolves the FPGA part, a device."""
    if "synth_clk_period_ns" not in config and "synth_clk_period_ns" not in sweeps:
        raise report.error((), "missing required key 'clock_ns' (target clock period in ns)")
    has_device = any(k in config or k in sweeps for k in ("fpga_part", "board"))
    needs = [s.name for s in steps if s.is_finn and s.name in _needs_device()]
    if not has_device and needs:
        raise report.error(
            (),
            f"missing 'fpga_part' or 'board': FINN's {needs[0]} needs a target device",
        )
    if output != "estimates" and "board" not in config and "board" not in sweeps:
        raise report.error(("output",), f"output {output!r} needs a 'board'")
