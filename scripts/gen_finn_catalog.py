"""Regenerate pytest_brainsmith/finn/catalog.py from the installed FINN.

Collection must not import FINN (about 6 s), so the names a blueprint may use
(steps, DataflowBuildConfig fields, kernels and their backends) are stored as
data. tests/test_finn_catalog.py checks this file against the installed FINN.
    .venv/bin/python scripts/gen_finn_catalog.py
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
import os
import pprint
import sys
from pathlib import Path

os.environ.setdefault("XILINX_VIVADO", "/nonexistent/Vivado/none")
os.environ.setdefault("FINN_BUILD_DIR", "/tmp/finn-catalog")
import finn.xsi  # noqa: E402

finn.xsi.SimEngine = None  # type: ignore[attr-defined]
import finn.builder.build_dataflow_config as bc  # noqa: E402
from finn.builder.build_dataflow_steps import build_dataflow_step_lookup  # noqa: E402
from finn.custom_op.fpgadataflow import custom_op as hw_ops  # noqa: E402
from finn.custom_op.fpgadataflow.hls import custom_op as hls_ops  # noqa: E402
from finn.custom_op.fpgadataflow.rtl import custom_op as rtl_ops  # noqa: E402


def short(step: str) -> str:
    return step.removeprefix("step_")


def step_reads() -> dict[str, tuple[str, ...] | None]:
    """Config fields each FINN step can read, found by walking its source.

    Follows ``cfg`` into helper functions of the same module and into
    DataflowBuildConfig's own methods; a step that hands ``cfg`` to anything else
    may read any field and gets None (cache keys then include every field).
    """
    import ast
    import inspect

    import finn.builder.build_dataflow_steps as steps_module

    module = ast.parse(inspect.getsource(steps_module))
    funcs = {n.name: n for n in module.body if isinstance(n, ast.FunctionDef)}
    cls = ast.parse(inspect.getsource(bc.DataflowBuildConfig)).body[0]
    methods = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}

    def reads(fn: ast.FunctionDef, var: str, seen: set) -> set[str] | None:
        found: set[str] = set()
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == var
            ):
                found.add(node.attr)
            if not isinstance(node, ast.Call):
                continue
            positions = [
                i for i, a in enumerate(node.args) if isinstance(a, ast.Name) and a.id == var
            ]
            keywords = [
                k.arg for k in node.keywords if isinstance(k.value, ast.Name) and k.value.id == var
            ]
            if not positions and not keywords:
                continue
            callee = node.func.id if isinstance(node.func, ast.Name) else None
            if callee not in funcs:
                return None  # cfg escapes to code we do not follow
            params = [a.arg for a in funcs[callee].args.args]
            param = params[positions[0]] if positions else keywords[0]
            if (callee, param) not in seen:
                seen.add((callee, param))
                inner = reads(funcs[callee], param, seen)
                if inner is None:
                    return None
                found |= inner
        for name in list(found):
            if name in methods and ("self", name) not in seen:
                seen.add(("self", name))
                inner = reads(methods[name], "self", seen)
                if inner is None:
                    return None
                found |= inner
        return found

    field_names = {f.name for f in dataclasses.fields(bc.DataflowBuildConfig)}
    result: dict[str, tuple[str, ...] | None] = {}
    for name, fn in sorted(funcs.items()):
        if short(name) not in {short(s) for s in build_dataflow_step_lookup}:
            continue
        found = reads(fn, "cfg", set())
        result[short(name)] = None if found is None else tuple(sorted(found & field_names))
    return result


def main(target: Path) -> None:
    steps = sorted(short(s) for s in build_dataflow_step_lookup)
    fields = {}
    for f in dataclasses.fields(bc.DataflowBuildConfig):
        if f.name.startswith("_"):
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        if hasattr(default, "value"):  # enums
            default = default.value
        if isinstance(default, list):
            default = [getattr(x, "value", x) for x in default]
        fields[f.name] = {"type": str(f.type), "default": default}
        kind = getattr(bc, str(f.type).removeprefix("Optional[").removesuffix("]"), None)
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            fields[f.name]["choices"] = [member.value for member in kind]
    kernels = {}
    for name in sorted(hw_ops):
        backends = []
        if name + "_hls" in hls_ops:
            backends.append("hls")
        if name + "_rtl" in rtl_ops:
            backends.append("rtl")
        if backends:
            kernels[name] = backends
    text = f'''"""Static facts about FINN {importlib.metadata.version("finn-plus")}, generated by
scripts/gen_finn_catalog.py; do not edit by hand.

Collection reads these instead of importing FINN, which takes seconds.
"""

FINN_VERSION = {importlib.metadata.version("finn-plus")!r}

#: Every step in FINN's build_dataflow_step_lookup, without the ``step_`` prefix.
STEPS: tuple[str, ...] = {pprint.pformat(tuple(steps), width=96, compact=True)}

#: FINN's estimate-only flow (``estimate_only_dataflow_steps``).
ESTIMATE_STEPS: tuple[str, ...] = {pprint.pformat(tuple(short(s) for s in bc.estimate_only_dataflow_steps), width=96, compact=True)}

#: FINN's complete flow up to a bitfile (``default_build_dataflow_steps``).
DEFAULT_STEPS: tuple[str, ...] = {pprint.pformat(tuple(short(s) for s in bc.default_build_dataflow_steps), width=96, compact=True)}

#: DataflowBuildConfig fields: type annotation and default value.
CONFIG_FIELDS: dict[str, dict] = {pprint.pformat(fields, width=96, sort_dicts=True)}

#: Config fields each step reads (None: it may read any field).
STEP_READS: dict[str, tuple[str, ...] | None] = {pprint.pformat(step_reads(), width=96)}

#: Kernels (HW custom ops) that have HLS and/or RTL backends.
KERNEL_BACKENDS: dict[str, list[str]] = {pprint.pformat(kernels, width=96)}
'''
    target.write_text(text)
    print(f"wrote {target}")


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    main(
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else root / "pytest_brainsmith" / "finn" / "catalog.py"
    )
