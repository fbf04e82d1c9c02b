"""Running one segment through FINN's real builder (``build_dataflow_cfg``).

FINN is imported lazily, once per process, only when a segment must run. Around
each build this module undoes FINN's process-wide side effects: it redirects
sys.stdout/stderr, reconfigures the root logger, may chdir, reads global settings
and needs XILINX_VIVADO set even for estimate-only builds. Every step is wrapped to
seed Python's ``random`` with the step's name (qonnx names new tensors with it), so
checkpoints are byte-identical whether a pipeline runs in one go or resumed from a
cached prefix, and to capture the original exception of a failing step.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..core.registry import VITIS_HLS, VIVADO, Step
from ..core.toolchain import KERNEL_BACKENDS, ToolchainUnavailable

_DUMMY_VIVADO = "/nonexistent/Vivado/none"
_finn: dict[str, ModuleType] = {}
#: How many times this process imported FINN (the benchmark counts it).
import_count = 0


def available_tools(environ: dict[str, str] | None = None) -> dict[str, str | None]:
    """For each external tool: None if usable here, else why not."""
    env = os.environ if environ is None else environ
    reasons: dict[str, str | None] = {}
    vivado = env.get("XILINX_VIVADO")
    if not vivado or vivado == _DUMMY_VIVADO:
        reasons[VIVADO] = "Vivado is not installed here (XILINX_VIVADO is not set)"
    elif not (Path(vivado) / "bin" / "vivado").exists():
        reasons[VIVADO] = f"Vivado not found: {vivado}/bin/vivado does not exist"
    else:
        reasons[VIVADO] = None
    hls = env.get("XILINX_HLS") or env.get("HLS_PATH")
    if not hls:
        reasons[VITIS_HLS] = "Vitis HLS is not installed here (XILINX_HLS is not set)"
    elif not (Path(hls) / "bin" / "vitis_hls").exists():
        reasons[VITIS_HLS] = f"Vitis HLS not found: {hls}/bin/vitis_hls does not exist"
    else:
        reasons[VITIS_HLS] = None
    return reasons


class FinnUnavailable(ToolchainUnavailable):
    """FINN cannot be imported in this environment (not a design's failure)."""


#: The FINN report each design metric comes from.
METRIC_SOURCES: dict[str, str] = {
    "LUT": "estimate_layer_resources.json (total)",
    "BRAM_18K": "estimate_layer_resources.json (total)",
    "URAM": "estimate_layer_resources.json (total)",
    "DSP": "estimate_layer_resources.json (total)",
    "estimated_throughput_fps": "estimate_network_performance.json",
    "estimated_latency_ns": "estimate_network_performance.json",
    "critical_path_cycles": "estimate_network_performance.json",
    "max_cycles": "estimate_network_performance.json",
}


def import_finn() -> dict[str, ModuleType]:
    """Import FINN's builder once per process, with the workarounds it needs here."""
    if not _finn:
        try:
            _import_finn()
        except ImportError as exc:
            raise FinnUnavailable(
                f"cannot import FINN ({exc}); install finn-plus with scripts/setup-env"
            ) from exc
    return _finn


def finn_imported() -> bool:
    """FINN's builder is imported in this process."""
    return bool(_finn)


def _import_finn() -> None:
    global import_count
    with _patched_environ({"XILINX_VIVADO": os.environ.get("XILINX_VIVADO") or _DUMMY_VIVADO}):
        import finn.xsi

        # build_dataflow_steps imports SimEngine for a type hint only; binding it
        # here keeps finn.xsi from looking for Vivado's simulator.
        finn.xsi.SimEngine = None  # type: ignore[attr-defined]
        import finn.builder.build_dataflow as build_dataflow
        import finn.builder.build_dataflow_config as build_config
        import finn.builder.build_dataflow_steps as build_steps
        import finn.util.settings as settings
    import_count += 1
    _finn.update(
        build_dataflow=build_dataflow, config=build_config, steps=build_steps, settings=settings
    )


@contextlib.contextmanager
def _patched_environ(values: dict[str, str]) -> Iterator[None]:
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _isolated_process_state(work_dir: Path) -> Iterator[None]:
    """Give FINN what it needs and put back everything it changes."""
    finn = import_finn()
    stdout, stderr = sys.stdout, sys.stderr
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    cwd = os.getcwd()
    settings = finn["settings"]
    old_settings = settings._SETTINGS
    env = {
        "FINN_BUILD_DIR": str(work_dir),
        "XILINX_VIVADO": os.environ.get("XILINX_VIVADO") or _DUMMY_VIVADO,
    }
    with _patched_environ(env):
        settings._SETTINGS = None  # re-read FINN_BUILD_DIR for this segment
        try:
            yield
        finally:
            settings._SETTINGS = old_settings
            sys.stdout, sys.stderr = stdout, stderr
            for handler in root.handlers[:]:
                if handler not in handlers:
                    root.removeHandler(handler)
                    with contextlib.suppress(Exception):
                        handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
            os.chdir(cwd)


@dataclass
class StepFailure:
    step: str
    error: str
    traceback: str
    errno: int | None = None  # set for OSErrors: a full disk is not the design's fault
    #: set for BaseExceptions that are not errors (pytest.skip, KeyboardInterrupt):
    #: {"type", "module", "message"}
    control: dict[str, str] | None = None
    memory: bool = False  # a MemoryError: the step ran out of its memory limit

    @classmethod
    def of(cls, step: str, exc: BaseException, *, control: bool = False) -> StepFailure:
        """Record the exception being handled (call from an except block)."""
        code = _environment_errno(exc)
        what = None
        if control:
            kind = type(exc)
            what = {"type": kind.__name__, "module": kind.__module__, "message": str(exc)}
        return cls(
            step,
            f"{type(exc).__name__}: {exc}",
            traceback.format_exc(),
            code,
            what,
            isinstance(exc, MemoryError),
        )


def _environment_errno(exc: BaseException) -> int | None:
    """The errno of the first OSError in ``exc``'s chain: a library that wraps a full
    disk in its own exception (``raise ... from``) still names the machine's fault."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current.errno
        current = current.__cause__ or current.__context__
    text = str(exc)
    if "No space left on device" in text:
        return errno.ENOSPC
    if "Disk quota exceeded" in text:
        return errno.EDQUOT
    return None


@dataclass
class BuildOutcome:
    ok: bool
    output_model: Path | None
    log_path: Path
    step_seconds: dict[str, float] = field(default_factory=dict)
    failure: StepFailure | None = None


def checkpoint_name(step: Step) -> str:
    """FINN names a checkpoint after the step function's ``__name__`` (and finds
    start/stop steps by it), so a step listed again gets ``#2``, ``#3``: unique names."""
    name = f"step_{step.name}" if step.is_finn else f"{step.namespace}_{step.name}"
    return name if step.occurrence == 1 else f"{name}#{step.occurrence}"


def _wrap(
    step: Step,
    finn_steps: ModuleType,
    timings: dict[str, float],
    failures: list[StepFailure],
    on_step: Callable[[str], None] | None = None,
) -> Callable[..., Any]:
    name = checkpoint_name(step)
    func = finn_steps.build_dataflow_step_lookup[f"step_{step.name}"] if step.is_finn else step.func

    def run(model: Any, cfg: Any) -> Any:
        random.seed(name)  # deterministic tensor names: identical checkpoints when resumed
        if on_step is not None:
            on_step(step.name)
        start = time.perf_counter()
        try:
            return func(model, cfg)
        except Exception as exc:
            failures.append(StepFailure.of(name, exc))
            raise
        except BaseException as exc:
            # Ctrl-C, SystemExit, pytest.skip()/fail() in a user step: the run's or the
            # test's control flow, never the design's failure
            failures.append(StepFailure.of(name, exc, control=True))
            raise
        finally:
            timings[name] = round(time.perf_counter() - start, 4)

    run.__name__ = run.__qualname__ = name
    return run


def build_config_dict(
    config: dict[str, Any], out_dir: Path, generate_outputs: list[str]
) -> dict[str, Any]:
    """DataflowBuildConfig fields as plain data, with kernel backends turned into a
    specialize_layers config file (``Defaults`` with ``preferred_impl_style``)."""
    fields = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in config.items() if k != KERNEL_BACKENDS
    }
    backends = config.get(KERNEL_BACKENDS)
    if backends:
        special: dict[str, Any] = {}
        if fields.get("specialize_layers_config_file"):
            special = json.loads(Path(fields["specialize_layers_config_file"]).read_text())
        defaults = special.setdefault("Defaults", {})
        styles = list(defaults.get("preferred_impl_style", []))
        for kernel, backend in sorted(backends.items()):
            styles += [backend, [kernel]]
        defaults["preferred_impl_style"] = styles
        path = out_dir / "specialize_layers_config.json"
        path.write_text(json.dumps(special, indent=2, sort_keys=True))
        fields["specialize_layers_config_file"] = str(path)
    fields["output_dir"] = str(out_dir)
    fields["generate_outputs"] = list(generate_outputs)
    fields.setdefault("save_intermediate_models", True)
    fields.setdefault("console_log_level", "NONE")
    return fields


def run_segment(
    *,
    path_steps: list[Step],
    first: int,
    input_model: Path,
    config: dict[str, Any],
    generate_outputs: list[str],
    out_dir: Path,
    work_dir: Path,
    on_step: Callable[[str], None] | None = None,
) -> BuildOutcome:
    """Build ``path_steps[first:]`` in ``out_dir``, resuming from ``input_model``
    (the output of ``path_steps[:first]``, or the blueprint's model if first == 0)."""
    finn = import_finn()
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    failures: list[StepFailure] = []
    steps = [_wrap(s, finn["steps"], timings, failures, on_step) for s in path_steps]
    names = [s.__name__ for s in steps]
    log_path = out_dir / "build_dataflow.log"

    if first > 0:
        checkpoints = out_dir / "intermediate_models"
        checkpoints.mkdir(exist_ok=True)
        # one copy of the parent's checkpoint: FINN may rewrite files in place,
        # so never hand it a link into the cache
        shutil.copyfile(input_model, checkpoints / f"{names[first - 1]}.onnx")
    fields = build_config_dict(config, out_dir, generate_outputs)
    try:
        cfg = finn["config"].DataflowBuildConfig.from_dict(fields)
    except Exception as exc:  # mashumaro rejects a bad value (e.g. an enum)
        failure = StepFailure("config", f"invalid FINN config: {exc}", traceback.format_exc())
        log_path.write_text(failure.traceback)
        return BuildOutcome(False, None, log_path, failure=failure)
    cfg.steps = steps
    cfg.start_step = names[first] if first > 0 else None
    cfg.stop_step = names[-1]

    model_arg = str(input_model)
    with _isolated_process_state(work_dir):
        try:
            code = finn["build_dataflow"].build_dataflow_cfg(model_arg, cfg)
        except KeyboardInterrupt:
            raise  # the run stops; nothing is recorded
        except BaseException as exc:  # FINN re-raises when it sees PYTEST_CURRENT_TEST
            if not failures:
                failures.append(
                    StepFailure.of("builder", exc, control=not isinstance(exc, Exception))
                )
            code = -1
    control = next((f for f in failures if f.control), None)
    if control is not None:
        if control.control and control.control["type"] == "KeyboardInterrupt":
            raise KeyboardInterrupt  # FINN caught it: the run stops all the same
        return BuildOutcome(False, None, log_path, timings, control)
    output = out_dir / "intermediate_models" / f"{names[-1]}.onnx"
    if code == 0 and output.is_file() and not failures:
        return BuildOutcome(True, output, log_path, timings)
    failure = (
        failures[0]
        if failures
        else StepFailure(names[-1], f"FINN's builder returned {code}; see the log", "")
    )
    with contextlib.suppress(OSError), open(log_path, "a") as log:
        log.write(
            f"\n[pytest-brainsmith] {failure.step} failed: {failure.error}\n{failure.traceback}"
        )
    return BuildOutcome(False, None, log_path, timings, failure)


# -- what the engine asks of FINN: a segment into a staging directory, its reports ------
#: FINN's estimate reports, in ``build/report/`` of an entry.
ESTIMATE_FILES = ("estimate_network_performance.json", "estimate_layer_resources.json")
#: The model the segments below resume from, at the top of an entry.
OUTPUT_MODEL = "output.onnx"


def build_log(entry_dir: Path) -> Path:
    """Where a segment's FINN build log is, in an entry (or a staging directory)."""
    return entry_dir / "build" / "build_dataflow.log"


def report_dir(entry_dir: Path) -> Path:
    return entry_dir / "build" / "report"


def build_into(
    staged: Path,
    *,
    path_steps: list[Step],
    first: int,
    input_model: Path,
    config: dict[str, Any],
    generate_outputs: list[str],
    work_dir: Path,
    keep_step_models: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> BuildOutcome:
    """Build ``path_steps[first:]`` into ``staged/build`` and leave what an entry keeps:
    ``output.onnx`` (the last checkpoint, hard-linked), the log and the reports. FINN's
    model after each other step of the segment is dropped unless ``keep_step_models``
    (6 MB a step for CNV); the copy of the parent's checkpoint is the parent's."""
    out_dir = staged / "build"
    outcome = run_segment(
        path_steps=path_steps,
        first=first,
        input_model=input_model,
        config=config,
        generate_outputs=generate_outputs,
        out_dir=out_dir,
        work_dir=work_dir,
        on_step=on_step,
    )
    if not outcome.ok or outcome.output_model is None:
        return outcome
    checkpoints = out_dir / "intermediate_models"
    if first > 0:
        given = checkpoint_name(path_steps[first - 1])
        (checkpoints / f"{given}.onnx").unlink(missing_ok=True)
    if not keep_step_models:
        drop_step_models(staged, path_steps, first)
    os.link(outcome.output_model, staged / OUTPUT_MODEL)
    outcome.output_model = staged / OUTPUT_MODEL
    return outcome


def drop_step_models(staged: Path, path_steps: list[Step], first: int) -> None:
    """Remove FINN's model after each step of the segment but its last."""
    checkpoints = staged / "build" / "intermediate_models"
    for step in path_steps[first:-1]:
        (checkpoints / f"{checkpoint_name(step)}.onnx").unlink(missing_ok=True)


def read_estimates(entry_dir: Path) -> dict[str, Any] | None:
    """FINN's estimate totals and per-layer figures of an entry, or None if the segment
    wrote no estimate reports."""
    reports = report_dir(entry_dir)
    if not all((reports / name).is_file() for name in ESTIMATE_FILES):
        return None
    performance = json.loads((reports / ESTIMATE_FILES[0]).read_text())
    resources = json.loads((reports / ESTIMATE_FILES[1]).read_text())
    totals = resources.get("total", {})
    estimates: dict[str, Any] = dict(performance)
    estimates.update(totals)
    estimates["layers"] = {k: v for k, v in resources.items() if k != "total"}
    estimates["report_dir"] = str(reports)
    return estimates
