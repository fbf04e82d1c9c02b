"""pytest's private API is used in one module only, and the pytest versions it is used
with are bounded in pyproject.toml."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import pytest_brainsmith
from pytest_brainsmith.plugin import pytest_internals

PACKAGE = Path(pytest_brainsmith.__file__).parent


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_only_pytest_internals_imports_private_pytest():
    users = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(name.split(".")[0] == "_pytest" for name in _imports(path))
    )
    assert users == ["plugin/pytest_internals.py"]


def test_pytest_is_bounded_to_the_versions_tested():
    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    (pytest_req,) = [
        Requirement(r) for r in pyproject["project"]["dependencies"] if r.startswith("pytest")
    ]
    assert pytest_req.specifier == Requirement(f"pytest{pytest_internals.TESTED}").specifier
    assert any(s.operator == "<" for s in pytest_req.specifier)  # an upper bound
    assert Version(pytest.__version__) in pytest_req.specifier
