"""Blueprint YAML -> DesignSpace: reading, ``${VAR}`` expansion, ``extends``
merging, step operations, and resolving every name against the registry.

Every problem becomes a BlueprintError naming the file, the key (as a dotted path
such as ``design_space.finn_config.target_fps``), the line where known, and what
was expected. Nothing here imports FINN.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..finn import catalog as finn_catalog
from .errors import BlueprintError, RegistryError, did_you_mean
from .expectations import Expectation, parse_expectation
from .registry import Kernel, Registry, Step

DEFAULT_MAX_DESIGNS = 100_000

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
)
DESIGN_SPACE_KEYS = ("steps", "kernels", "finn_config")
OUTPUTS = ("estimates", "rtl", "bitfile")
SKIP_MARKERS = (None, "")

#: Fields the explorer sets itself for every segment; a blueprint may not set them.
RESERVED_CONFIG_FIELDS = frozenset(
    {"output_dir", "steps", "start_step", "stop_step", "generate_outputs", "model_path"}
)
#: Config fields that name files: resolved against the blueprint's folder, hashed by content.
PATH_CONFIG_FIELDS = frozenset(
    name
    for name in finn_catalog.CONFIG_FIELDS
    if name.endswith("_file") or name in {"verify_input_npy", "verify_expected_output_npy"}
)
#: Top-level shorthands and the FINN field each stands for.
SHORTHANDS = {"board": "board", "fpga_part": "fpga_part", "clock_ns": "synth_clk_period_ns"}
#: generate_outputs per output kind.
OUTPUT_PRODUCTS = {
    "estimates": ["estimate_reports"],
    "rtl": ["estimate_reports", "stitched_ip"],
    "bitfile": ["estimate_reports", "stitched_ip", "bitfile", "pynq_driver", "deployment_package"],
}

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def default_steps(output: str) -> list[str]:
    """FINN's own pipeline for an output kind (used when a blueprint lists no steps)."""
    if output == "estimates":
        return list(finn_catalog.ESTIMATE_STEPS)
    steps = list(finn_catalog.DEFAULT_STEPS)
    if output == "rtl":
        return steps[: steps.index("create_stitched_ip") + 1]
    return steps


# -- the parsed, resolved result ---------------------------------------------------
@dataclass(frozen=True)
class StepSlot:
    """One position in the pipeline: a fixed step, or a branch point over alternatives
    (None = skip this step)."""

    options: tuple[Step | None, ...]
    key: str  # where it came from, for messages

    @property
    def is_branch(self) -> bool:
        return len(self.options) > 1

    @property
    def branch_name(self) -> str:
        """How a design's choices name this branch point: its steps, ``a|b``."""
        return "|".join(s.name for s in self.options if s is not None)

    @property
    def choice_values(self) -> list[str]:
        return [s.name if s is not None else "skip" for s in self.options]

    def may_read(self, config_field: str) -> bool:
        return any(s is not None and s.may_read(config_field) for s in self.options)


@dataclass(frozen=True)
class KernelChoice:
    """A kernel and the backends to explore for it (empty: FINN's default choice)."""

    kernel: Kernel
    backends: tuple[str, ...]


@dataclass
class DesignSpace:
    """A blueprint after inheritance, expansion and name resolution."""

    path: Path
    name: str
    description: str
    model: Path
    output: str
    finn_config: dict[str, Any]  # fixed DataflowBuildConfig fields (paths resolved)
    slots: list[StepSlot]
    kernels: list[KernelChoice]
    sweeps: dict[str, list[Any]]  # field -> alternative values
    expect: list[Expectation]
    registry: Registry = field(repr=False)
    sources: list[Path] = field(default_factory=list)  # the file and its extends parents

    @property
    def generate_outputs(self) -> list[str]:
        return OUTPUT_PRODUCTS[self.output]

    def variation_points(self) -> dict[str, list[Any]]:
        """Each branch point as a design's choices name it, with its alternatives."""
        points: dict[str, list[Any]] = {}
        for choice in self.kernels:
            if len(choice.backends) > 1:
                points[choice.kernel.name] = list(choice.backends)
        for fname, values in self.sweeps.items():
            if len(values) > 1:
                points[fname] = list(values)
        for slot in self.slots:
            if slot.is_branch:
                points[slot.branch_name] = slot.choice_values
        return points

    def count_designs(self) -> int:
        count = 1
        for slot in self.slots:
            count *= len(slot.options)
        for choice in self.kernels:
            count *= max(1, len(choice.backends))
        for values in self.sweeps.values():
            count *= len(values)
        return count


# -- reading one file ----------------------------------------------------------------
@dataclass
class _Raw:
    """One YAML file's mapping, with the line of every key path."""

    path: Path
    data: dict[str, Any]
    lines: dict[tuple[Any, ...], int]


def _key_lines(node: yaml.Node, prefix: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, key_node.value)
            if path in out:  # PyYAML would silently keep the last one
                raise _DuplicateKey(path, key_node.start_mark.line + 1, out[path])
            out[path] = key_node.start_mark.line + 1
            _key_lines(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = (*prefix, index)
            out[path] = item.start_mark.line + 1
            _key_lines(item, path, out)


class _DuplicateKey(Exception):
    def __init__(self, key: tuple[Any, ...], line: int, first: int) -> None:
        self.key, self.line, self.first = key, line, first


def _read(path: Path) -> _Raw:
    try:
        text = path.read_text()
    except OSError as exc:
        raise BlueprintError(path, "", f"cannot read blueprint: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise BlueprintError(
            path,
            "",
            f"malformed YAML: {problem}",
            line=mark.line + 1 if mark else None,
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BlueprintError(
            path, "", f"expected a mapping of blueprint keys, got {type(data).__name__}", line=1
        )
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        try:
            _key_lines(node, (), lines)
        except _DuplicateKey as dup:
            raise BlueprintError(
                path,
                _dotted(dup.key),
                f"duplicate key (first set on line {dup.first})",
                line=dup.line,
            ) from None
    return _Raw(path, data, lines)


def _dotted(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class _Context:
    """Reports errors for one file, with lines."""

    def __init__(self, raw: _Raw) -> None:
        self.raw = raw

    def error(self, key: tuple[Any, ...], message: str, hint: str | None = None) -> BlueprintError:
        line = None
        for end in range(len(key), -1, -1):
            line = self.raw.lines.get(key[:end])
            if line:
                break
        return BlueprintError(self.raw.path, _dotted(key), message, line=line, hint=hint)


def _expand_vars(value: Any, key: tuple[Any, ...], ctx: _Context, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1)
            if name == "BLUEPRINT_DIR":
                return str(ctx.raw.path.parent)
            if name not in env:
                raise ctx.error(
                    key,
                    f"undefined variable ${{{name}}}",
                    "set it in the environment, or write $${...} for a literal",
                )
            return env[name]

        return _VAR.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _expand_vars(v, (*key, k), ctx, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_vars(v, (*key, i), ctx, env) for i, v in enumerate(value)]
    return value


# -- checks shared by every file -------------------------------------------------------
def _check_keys(
    mapping: Any, allowed: tuple[str, ...], key: tuple[Any, ...], ctx: _Context
) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise ctx.error(key, f"expected a mapping, got {_typename(mapping)}")
    for name in mapping:
        if name not in allowed:
            raise ctx.error(
                (*key, name),
                "unknown key",
                did_you_mean(str(name), allowed) or f"allowed keys: {', '.join(allowed)}",
            )
    return mapping


def _typename(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_config_field(name: Any, key: tuple[Any, ...], ctx: _Context) -> str:
    if not isinstance(name, str) or name not in finn_catalog.CONFIG_FIELDS:
        raise ctx.error(
            key,
            f"unknown FINN config field (DataflowBuildConfig of FINN {finn_catalog.FINN_VERSION})",
            did_you_mean(str(name), finn_catalog.CONFIG_FIELDS),
        )
    if name in RESERVED_CONFIG_FIELDS:
        raise ctx.error(key, "is set by pytest-brainsmith for each segment; remove it")
    return name


def _resolve_path(value: Any, key: tuple[Any, ...], ctx: _Context, what: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ctx.error(key, f"expected a path to {what}, got {_typename(value)}")
    path = Path(value)
    if not path.is_absolute():
        path = ctx.raw.path.parent / path
    path = Path(os.path.normpath(path))
    if not path.is_file():
        raise ctx.error(key, f"{what} not found: {path}")
    return path


def _normalize_file(raw: _Raw, env: Mapping[str, str]) -> dict[str, Any]:
    """Validate one file's keys and make its relative paths absolute (relative to
    *that* file, so an inherited path keeps pointing where its author meant)."""
    ctx = _Context(raw)
    data = _expand_vars(raw.data, (), ctx, env)
    _check_keys(data, TOP_LEVEL_KEYS, (), ctx)
    if "model" in data:
        data["model"] = _resolve_path(data["model"], ("model",), ctx, "the model file")
    if "finn_config" in data:
        config = data["finn_config"]
        if not isinstance(config, dict):
            raise ctx.error(
                ("finn_config",),
                f"expected a mapping of FINN config fields, got {_typename(config)}",
            )
        for name, value in config.items():
            key = ("finn_config", name)
            _check_config_field(name, key, ctx)
            if name in PATH_CONFIG_FIELDS and value is not None:
                config[name] = _resolve_path(value, key, ctx, f"the {name}")
    space = data.get("design_space")
    if space is not None:
        _check_keys(space, DESIGN_SPACE_KEYS, ("design_space",), ctx)
        sweeps = space.get("finn_config")
        if sweeps is not None:
            if not isinstance(sweeps, dict):
                raise ctx.error(
                    ("design_space", "finn_config"),
                    f"expected a mapping of field: [alternatives], got {_typename(sweeps)}",
                )
            for name, values in sweeps.items():
                key = ("design_space", "finn_config", name)
                _check_config_field(name, key, ctx)
                if not isinstance(values, list) or not values:
                    raise ctx.error(
                        key,
                        f"expected a non-empty list of alternative values, got {_typename(values)}",
                        "a single fixed value belongs under the top-level finn_config",
                    )
                if name in PATH_CONFIG_FIELDS:
                    sweeps[name] = [
                        None if v is None else _resolve_path(v, (*key, i), ctx, f"the {name}")
                        for i, v in enumerate(values)
                    ]
    return data


# -- extends -------------------------------------------------------------------------------
@dataclass
class _Merged:
    data: dict[str, Any]
    origin: dict[tuple[Any, ...], _Context]  # key path -> file that set it last
    sources: list[Path]


def _load_chain(path: Path, env: Mapping[str, str], stack: tuple[Path, ...]) -> _Merged:
    raw = _read(path)
    ctx = _Context(raw)
    data = _normalize_file(raw, env)
    parent_ref = data.pop("extends", None)
    origin = {key: ctx for key in raw.lines}
    origin[()] = ctx
    if parent_ref is None:
        return _Merged(data, origin, [path])
    if not isinstance(parent_ref, str) or not parent_ref:
        raise ctx.error(
            ("extends",), f"expected a path to a parent blueprint, got {_typename(parent_ref)}"
        )
    parent_path = Path(os.path.normpath(path.parent / parent_ref))
    if parent_path in stack or parent_path == path:
        chain = " -> ".join(str(p) for p in (*stack, path, parent_path))
        raise ctx.error(("extends",), f"extends cycle: {chain}")
    if not parent_path.is_file():
        raise ctx.error(("extends",), f"parent blueprint not found: {parent_path}")
    parent = _load_chain(parent_path, env, (*stack, path))
    return _merge(parent, data, origin, ctx, path)


def _merge(
    parent: _Merged,
    child: dict[str, Any],
    child_origin: dict[tuple[Any, ...], _Context],
    ctx: _Context,
    path: Path,
) -> _Merged:
    data = dict(parent.data)
    data.pop("abstract", None)  # a parent being abstract does not make its children so
    origin = dict(parent.origin)
    origin[()] = ctx  # errors about the whole blueprint name the file being loaded

    def take(key: tuple[Any, ...]) -> None:
        # the child's value replaces the parent's whole subtree under key
        for other in [k for k in origin if k[: len(key)] == key]:
            del origin[other]
        for other, where in child_origin.items():
            if other[: len(key)] == key:
                origin[other] = where

    for name, value in child.items():
        if name in ("finn_config", "expect") and isinstance(value, dict):
            merged = dict(data.get(name) or {})
            for sub, subvalue in value.items():
                merged[sub] = subvalue
                take((name, sub))
            data[name] = merged
            origin[(name,)] = ctx
        elif name == "design_space" and isinstance(value, dict):
            space = dict(data.get("design_space") or {})
            for sub, subvalue in value.items():
                key = ("design_space", sub)
                if sub == "finn_config" and isinstance(subvalue, dict):
                    sweeps = dict(space.get("finn_config") or {})
                    for fname, values in subvalue.items():
                        sweeps[fname] = values
                        take((*key, fname))
                    space[sub] = sweeps
                elif sub == "steps" and _is_operation_list(subvalue):
                    # operations apply to the inherited list; remember who wrote them
                    space["steps_operations"] = [
                        *(space.get("steps_operations") or []),
                        (subvalue, ctx),
                    ]
                else:
                    space[sub] = subvalue
                    if sub == "steps":  # a new list drops operations meant for the old one
                        space.pop("steps_operations", None)
                    take(key)
            data["design_space"] = space
        else:
            data[name] = value
            take((name,))
    return _Merged(data, origin, [path, *parent.sources])


def _is_operation_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


# -- step lists and operations -------------------------------------------------------------
_Slot = tuple[tuple[str | None, ...], tuple[Any, ...], "_Context"]  # options, key, ctx


def _parse_entry(entry: Any, key: tuple[Any, ...], ctx: _Context, top: bool) -> _Slot:
    if isinstance(entry, str) and entry:
        return ((entry,), key, ctx)
    if isinstance(entry, list):
        if not entry:
            raise ctx.error(key, "a branch point needs at least one alternative")
        options: list[str | None] = []
        for i, option in enumerate(entry):
            if option in SKIP_MARKERS:
                options.append(None)
            elif isinstance(option, str):
                options.append(option)
            else:
                raise ctx.error(
                    (*key, i),
                    f"a branch alternative must be a step name or ~ (skip), got {_typename(option)}",
                    "branch points do not nest",
                )
        if options.count(None) > 1:
            raise ctx.error(key, 'a branch point may have at most one skip (~, null or "")')
        if all(o is None for o in options):
            raise ctx.error(key, "a branch point needs at least one step besides the skip")
        named = [o for o in options if o is not None]
        if len(set(named)) != len(named):
            raise ctx.error(key, "a branch point lists the same step twice")
        return (tuple(options), key, ctx)
    if top and isinstance(entry, dict):
        raise ctx.error(
            key, "step operations (after/before/replace/...) need an inherited step list"
        )
    raise ctx.error(
        key,
        f"expected a step name or a list of alternatives, got {_typename(entry)}",
        "skip markers (~) are only allowed inside a branch point",
    )


def _parse_insert(value: Any, key: tuple[Any, ...], ctx: _Context) -> list[_Slot]:
    """An operation's X: a step, a list of steps, or [[a, b]] for a branch point."""
    if isinstance(value, str):
        return [_parse_entry(value, key, ctx, top=False)]
    if isinstance(value, list) and value:
        return [_parse_entry(v, (*key, i), ctx, top=False) for i, v in enumerate(value)]
    raise ctx.error(key, f"expected a step, a list of steps or [[a, b]], got {_typename(value)}")


_OPERATIONS = {
    "after": ("insert",),
    "before": ("insert",),
    "replace": ("with",),
    "remove": (),
    "at_start": None,
    "at_end": None,
}


def _apply_operations(
    slots: list[_Slot], operations: list[Any], key: tuple[Any, ...], ctx: _Context
) -> list[_Slot]:
    slots = list(slots)

    def find(name: Any, op_key: tuple[Any, ...]) -> int:
        if not isinstance(name, str):
            raise ctx.error(op_key, f"expected a step name, got {_typename(name)}")
        for index, (options, _, _) in enumerate(slots):
            if name in options or f"step_{name}" in options or name.split(":")[-1] in options:
                return index
        present = [o for options, _, _ in slots for o in options if o]
        raise ctx.error(
            op_key,
            f"step {name!r} is not in the inherited steps",
            did_you_mean(name, present) or f"steps: {', '.join(present)}",
        )

    for i, op in enumerate(operations):
        op_key = (*key, i)
        kinds = [k for k in op if k in _OPERATIONS]
        if len(kinds) != 1:
            raise ctx.error(
                op_key,
                "expected exactly one of after, before, replace, remove, at_start, at_end",
                did_you_mean(str(next(iter(op), "")), _OPERATIONS),
            )
        kind = kinds[0]
        if kind in ("at_start", "at_end"):
            body = op[kind]
            if not isinstance(body, dict) or set(body) != {"insert"} or len(op) != 1:
                raise ctx.error((*op_key, kind), "expected {insert: X}")
            new = _parse_insert(body["insert"], (*op_key, kind, "insert"), ctx)
            slots = new + slots if kind == "at_start" else slots + new
            continue
        allowed = (kind, *_OPERATIONS[kind])
        for extra in op:
            if extra not in allowed:
                raise ctx.error(
                    (*op_key, extra),
                    f"unknown key in a {kind!r} operation",
                    did_you_mean(str(extra), allowed),
                )
        for needed in _OPERATIONS[kind]:
            if needed not in op:
                raise ctx.error(op_key, f"a {kind!r} operation needs {needed!r}")
        index = find(op[kind], (*op_key, kind))
        if kind == "remove":
            del slots[index]
        elif kind == "replace":
            slots[index : index + 1] = _parse_insert(op["with"], (*op_key, "with"), ctx)
        elif kind == "after":
            slots[index + 1 : index + 1] = _parse_insert(op["insert"], (*op_key, "insert"), ctx)
        else:
            slots[index:index] = _parse_insert(op["insert"], (*op_key, "insert"), ctx)
    return slots


# -- the whole blueprint -------------------------------------------------------------------------
def load_design_space(
    path: Path,
    registry: Registry,
    *,
    env: Mapping[str, str] | None = None,
    max_designs: int = DEFAULT_MAX_DESIGNS,
) -> DesignSpace | None:
    """Parse, inherit, validate and resolve a blueprint file.

    Returns None for a blueprint marked ``abstract: true`` (a parent only meant to
    be extended, which has no designs of its own)."""
    path = Path(os.path.normpath(Path(path).absolute()))
    merged = _load_chain(path, os.environ if env is None else env, ())
    data = merged.data
    top = merged.origin[()]
    if data.get("abstract") is True:
        return None

    def ctx_for(*key: Any) -> _Context:
        for end in range(len(key), -1, -1):
            where = merged.origin.get(tuple(key[:end]))
            if where is not None:
                return where
        return top

    def err(key: tuple[Any, ...], message: str, hint: str | None = None) -> BlueprintError:
        return ctx_for(*key).error(key, message, hint)

    name = data.get("name", path.name.split(".")[0])
    if not isinstance(name, str):
        raise err(("name",), f"expected a string, got {_typename(name)}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise err(("description",), f"expected a string, got {_typename(description)}")
    if "model" not in data:
        raise err(
            (),
            "missing required key 'model' (the input ONNX/QONNX model, relative to the blueprint)",
        )
    output = data.get("output", "estimates")
    if output not in OUTPUTS:
        raise err(("output",), f"expected one of {', '.join(OUTPUTS)}, got {output!r}")

    # fixed FINN config: finn_config plus the top-level shorthands
    config: dict[str, Any] = dict(data.get("finn_config") or {})
    for short, field_name in SHORTHANDS.items():
        if short not in data:
            continue
        value = data[short]
        if field_name in config and config[field_name] != value:
            raise err(
                (short,),
                f"conflicts with finn_config.{field_name} ({config[field_name]!r})",
                "set it in one place",
            )
        config[field_name] = value
    _check_types(config, ("finn_config",), err)

    # design space
    space = data.get("design_space") or {}
    sweeps: dict[str, list[Any]] = dict(space.get("finn_config") or {})
    for fname, values in sweeps.items():
        key = ("design_space", "finn_config", fname)
        for i, value in enumerate(values):
            _check_types({fname: value}, (*key, i), err, whole_key=True)
        if len({repr(v) for v in values}) != len(values):
            raise err(key, "lists the same value twice")
        config.pop(fname, None)  # a sweep overrides an inherited fixed value
    if "synth_clk_period_ns" not in config and "synth_clk_period_ns" not in sweeps:
        raise err((), "missing required key 'clock_ns' (target clock period in ns)")
    if not any(k in config or k in sweeps for k in ("fpga_part", "board")):
        raise err((), "missing 'fpga_part' or 'board': FINN needs a target device")
    if output != "estimates" and "board" not in config and "board" not in sweeps:
        raise err(("output",), f"output {output!r} needs a 'board'")
    if config.get("target_fps") is None and "target_fps" not in sweeps:
        if config.get("folding_config_file") is None and "folding_config_file" not in sweeps:
            raise err(
                (),
                "FINN needs 'target_fps' or 'folding_config_file' in finn_config "
                "(or swept in design_space.finn_config)",
            )

    slots = _resolve_steps(data, space, output, registry, ctx_for, err)
    kernels = _resolve_kernels(space.get("kernels"), registry, err)
    result = DesignSpace(
        path=path,
        name=name,
        description=description,
        model=data["model"],
        output=output,
        finn_config=config,
        slots=slots,
        kernels=kernels,
        sweeps=sweeps,
        expect=[],
        registry=registry,
        sources=merged.sources,
    )
    result.expect = _resolve_expect(data.get("expect"), result.variation_points(), err)
    _check_readers(result, err)
    count = result.count_designs()
    if count > max_designs:
        raise err(
            ("design_space",),
            f"{count:,} designs exceed the cap of {max_designs:,}",
            "narrow the design space, or raise the cap with --brainsmith-max-designs "
            "or the ini option brainsmith_max_designs",
        )
    return result


_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "float": (int, float),
    "int": (int,),
    "str": (str,),
}


def _check_types(
    config: dict[str, Any], key: tuple[Any, ...], err: Any, whole_key: bool = False
) -> None:
    """Check simple scalar types against DataflowBuildConfig's annotations."""
    for name, value in config.items():
        if isinstance(value, Path) or value is None:
            continue
        choices = finn_catalog.CONFIG_FIELDS[name].get("choices")
        if choices is not None and value not in choices:
            where = key if whole_key else (*key, name)
            raise err(
                where,
                f"{name} expects one of {', '.join(map(str, choices))}, got {value!r}",
                did_you_mean(str(value), map(str, choices)),
            )
        annotation = finn_catalog.CONFIG_FIELDS[name]["type"]
        base = annotation.removeprefix("Optional[").removesuffix("]").replace(" | None", "")
        expected = _TYPES.get(base)
        if expected is None:
            continue
        if isinstance(value, bool) and bool not in expected:
            ok = False
        else:
            ok = isinstance(value, expected)
        if isinstance(value, float) and not math.isfinite(value):
            ok = False
        if not ok:
            where = key if whole_key else (*key, name)
            raise err(where, f"{name} expects {base}, got {_typename(value)} {value!r}")


def _resolve_steps(
    data: dict[str, Any],
    space: dict[str, Any],
    output: str,
    registry: Registry,
    ctx_for: Any,
    err: Any,
) -> list[StepSlot]:
    key = ("design_space", "steps")
    raw_steps = space.get("steps")
    ctx = ctx_for(*key)
    if raw_steps is None:
        slots: list[_Slot] = [((s,), key, ctx) for s in default_steps(output)]
    elif _is_operation_list(raw_steps):
        # only operations and nothing to apply them to: FINN's own pipeline
        slots = [((s,), key, ctx) for s in default_steps(output)]
        slots = _apply_operations(slots, raw_steps, key, ctx)
    else:
        if not isinstance(raw_steps, list) or not raw_steps:
            raise err(key, f"expected a non-empty list of steps, got {_typename(raw_steps)}")
        slots = [_parse_entry(e, (*key, i), ctx, top=True) for i, e in enumerate(raw_steps)]
    for operations, op_ctx in space.get("steps_operations") or []:
        slots = _apply_operations(slots, operations, key, op_ctx)

    resolved: list[StepSlot] = []
    for options, where, where_ctx in slots:
        steps: list[Step | None] = []
        for i, option in enumerate(options):
            if option is None:
                steps.append(None)
                continue
            try:
                steps.append(registry.step(option))
            except RegistryError as exc:
                raise where_ctx.error(
                    (*where, i) if len(options) > 1 else where,
                    str(exc),
                    "register your own steps with the pytest_brainsmith_register hook",
                ) from None
        resolved.append(StepSlot(tuple(steps), _dotted(where)))
    seen: set[str] = set()
    for slot in resolved:
        for step in slot.options:
            if step is not None:
                if step.qualified in seen:
                    raise err(
                        key,
                        f"step {step.name!r} appears twice; FINN names checkpoints by step, so each step may run once",
                    )
                seen.add(step.qualified)

    for bound in ("start_step", "stop_step"):
        if bound not in data:
            continue
        name = data[bound]
        try:
            step = registry.step(name) if isinstance(name, str) else None
        except RegistryError as exc:
            raise err((bound,), str(exc)) from None
        index = next(
            (i for i, s in enumerate(resolved) if step in s.options and not s.is_branch), None
        )
        if index is None:
            raise err((bound,), f"{name!r} is not a fixed step of the pipeline")
        resolved = resolved[index:] if bound == "start_step" else resolved[: index + 1]
    if not resolved:
        raise err(key, "the pipeline has no steps")
    return resolved


def _backend_name(value: Any, kernel: Kernel) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.split(":")[-1]
    return value.removeprefix(kernel.name + "_")


def _resolve_kernels(raw: Any, registry: Registry, err: Any) -> list[KernelChoice]:
    key = ("design_space", "kernels")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise err(key, f"expected a list of kernels, got {_typename(raw)}")
    choices: list[KernelChoice] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        ekey = (*key, i)
        if isinstance(entry, str):
            name, backends_raw = entry, None
        elif isinstance(entry, dict) and len(entry) == 1:
            name, backends_raw = next(iter(entry.items()))
        else:
            raise err(
                ekey, f"expected a kernel name or {{Kernel: backend(s)}}, got {_typename(entry)}"
            )
        try:
            kernel = registry.kernel(str(name))
        except RegistryError as exc:
            raise err(ekey, str(exc)) from None
        if kernel.qualified in seen:
            raise err(ekey, f"kernel {kernel.name!r} is listed twice")
        seen.add(kernel.qualified)
        if backends_raw is None:
            choices.append(KernelChoice(kernel, ()))
            continue
        listed = backends_raw if isinstance(backends_raw, list) else [backends_raw]
        backends: list[str] = []
        for j, value in enumerate(listed):
            backend = _backend_name(value, kernel)
            bkey = (*ekey, name, j) if isinstance(backends_raw, list) else (*ekey, name)
            if backend not in kernel.backends:
                raise err(
                    bkey,
                    f"{kernel.name} has no backend {value!r}",
                    f"expected one of: {', '.join(kernel.backends)}",
                )
            if backend in backends:
                raise err(bkey, f"backend {backend!r} listed twice")
            backends.append(backend)
        if not backends:
            raise err(ekey, "expected at least one backend")
        choices.append(KernelChoice(kernel, tuple(backends)))
    return choices


def _resolve_expect(raw: Any, points: dict[str, list[Any]], err: Any) -> list[Expectation]:
    """``expect:`` -- metric: "<op> <number>" for every design, and ``when:`` entries
    that hold the designs with some choices to other bounds."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise err(
            ("expect",), f'expected a mapping of metric: "<op> <number>", got {_typename(raw)}'
        )
    result = []
    for metric, text in raw.items():
        if metric == "when":
            continue
        try:
            result.append(parse_expectation(str(metric), text))
        except ValueError as exc:
            raise err(("expect", metric), str(exc)) from None
    narrowed = raw.get("when", [])
    if not isinstance(narrowed, list):
        raise err(
            ("expect", "when"),
            'expected a list of {choices: {name: value}, <metric>: "<op> <number>"}, '
            f"got {_typename(narrowed)}",
        )
    for n, entry in enumerate(narrowed):
        where = ("expect", "when", n)
        if not isinstance(entry, dict) or not isinstance(entry.get("choices"), dict):
            raise err(where, "expected a mapping with 'choices: {name: value}' and metrics")
        when = []
        for name, value in entry["choices"].items():
            if name not in points:
                hint = did_you_mean(str(name), points)
                known = ", ".join(points) or "none: this blueprint has no branch point"
                raise err(
                    (*where, "choices", name),
                    f"{name!r} is not a branch point of this blueprint"
                    + (f"; {hint}" if hint else f"; branch points: {known}"),
                )
            if value not in points[name]:
                raise err(
                    (*where, "choices", name),
                    f"{name} explores {', '.join(map(str, points[name]))}; got {value!r}",
                )
            when.append((str(name), value))
        metrics = {k: v for k, v in entry.items() if k != "choices"}
        if not metrics:
            raise err(where, 'expected at least one metric: "<op> <number>" besides choices')
        for metric, text in metrics.items():
            try:
                result.append(parse_expectation(str(metric), text, tuple(when)))
            except ValueError as exc:
                raise err((*where, metric), str(exc)) from None
    return result


def _check_readers(space: DesignSpace, err: Any) -> None:
    """A sweep or backend choice that no step reads would build identical designs."""
    for fname in space.sweeps:
        if not any(slot.may_read(fname) for slot in space.slots):
            raise err(
                ("design_space", "finn_config", fname),
                f"no step of the pipeline reads {fname}; every alternative would build the same design",
            )
    if any(len(c.backends) > 0 for c in space.kernels):
        if not any(slot.may_read("specialize_layers_config_file") for slot in space.slots):
            raise err(
                ("design_space", "kernels"),
                "backends are chosen by specialize_layers, which is not in the pipeline",
            )
