"""The core's shape (issue 31's bar), checked on the source: no core module over 500
lines, no class over 300 lines or 25 methods, no import inside a function in core/
except those that defer an optional or heavy library until its feature is used, and a
core that imports neither pytest nor FINN (finn/qonnx)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_brainsmith"
CORE = PACKAGE / "core"
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300
MAX_CLASS_METHODS = 25
FORBIDDEN_IN_CORE = ("pytest", "_pytest", "finn", "qonnx")

#: (module under core/, imported module) -> why it is imported inside a function: only
#: libraries that are optional, or heavy and needed by one feature, may wait
LAZY_FOR_COST = {
    ("search/journal.py", "optuna"): "optional (optuna-dashboard journal); heavy import",
    ("search/study.py", "optuna"): "optional: only the optuna folding search needs it",
    ("search/solver.py", "scipy.optimize"): "the exact folding search only; heavy import",
    ("search/solver.py", "scipy.sparse"): "the exact folding search only; heavy import",
    ("search/solver.py", "numpy"): "not a dependency of the core (comes with FINN/scipy)",
    ("regression/storage.py", "fsspec"): "optional: only a remote baseline store needs it",
    ("verify/golden.py", "numpy"): "not a dependency of the core (comes with the toolchain)",
    ("verify/execute.py", "numpy"): "not a dependency of the core (comes with the toolchain)",
    ("blueprint/verify.py", "numpy"): "not a dependency: only verify's .npy files need it",
    ("cache/execution_memo.py", "numpy"): "not a dependency of the core (comes with the toolchain)",
    ("cache/remote/storage.py", "fsspec"): "optional: only the remote cache tier needs it",
    ("cache/remote/storage.py", "fsspec.registry"): "optional: only the remote cache tier needs it",
}
#: optional cluster libraries (the ``cluster`` extra): lazy wherever the launchers live
LAZY_ANYWHERE = ("distributed", "dask", "dask_jobqueue", "cloudpickle")


def _sources(root: Path) -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in sorted(root.rglob("*.py"))]


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: our own package
        return ["." * node.level + (node.module or "")]
    return [node.module or ""]


def test_no_core_module_over_500_lines():
    big = {
        str(p.relative_to(CORE)): n
        for p in sorted(CORE.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not big, f"core modules over {MAX_MODULE_LINES} lines: {big}"


def test_no_class_over_300_lines_or_25_methods():
    big = []
    for path, tree in _sources(PACKAGE):
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            lines = node.end_lineno - node.lineno + 1
            methods = sum(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in node.body)
            if lines > MAX_CLASS_LINES or methods > MAX_CLASS_METHODS:
                big.append(
                    f"{path.relative_to(PACKAGE)}:{node.name} {lines} lines {methods} methods"
                )
    assert not big, "classes over the bar:\n" + "\n".join(big)


def test_function_level_imports_in_core_only_defer_optional_or_heavy_libraries():
    found = []
    for path, tree in _sources(CORE):
        module = path.relative_to(CORE).as_posix()
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                for name in _imported(node):
                    if (module, name) in LAZY_FOR_COST or name.split(".")[0] in LAZY_ANYWHERE:
                        continue
                    found.append(f"{module}:{node.lineno} {fn.name}() imports {name}")
    assert not found, "imports inside functions (move them up or fix the cycle):\n" + "\n".join(
        sorted(set(found))
    )


def test_lazy_allow_list_names_a_reason_for_each():
    assert all(reason.strip() for reason in LAZY_FOR_COST.values())


def test_core_imports_neither_pytest_nor_finn():
    found = []
    for path, tree in _sources(CORE):
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for name in _imported(node):
                    if name.split(".")[0] in FORBIDDEN_IN_CORE:
                        found.append(f"{path.relative_to(CORE)}:{node.lineno} imports {name}")
    assert not found, "core/ must reach FINN through the toolchain door:\n" + "\n".join(found)
