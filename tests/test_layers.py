"""The layers stay honest: the core knows neither pytest nor FINN (the FINN adapter plugs
into it through ``core/toolchain.py``), and neither the core nor the adapter knows pytest."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import ROOT

PACKAGE = ROOT / "pytest_brainsmith"


def modules_of(*folders: str) -> list[str]:
    return sorted(
        "pytest_brainsmith." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for folder in folders
        for path in (PACKAGE / folder).rglob("*.py")
    )


def imports_after(modules: list[str]) -> list[str]:
    """The modules a fresh interpreter holds after importing ``modules``."""
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name.removesuffix('.__init__'))\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.split()


def test_the_core_and_the_finn_adapter_import_neither_pytest_nor_xdist():
    modules = modules_of("core", "finn")
    loaded = imports_after(modules)
    leaked = [m for m in loaded if m.split(".")[0] in ("pytest", "_pytest", "xdist")]
    assert not leaked, leaked
    assert len(modules) > 20


def test_the_core_imports_neither_finn_nor_its_adapter():
    # statically: no import statement in core/ names FINN, its libraries or our adapter
    named: list[str] = []
    for path in (PACKAGE / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                dots = "." * node.level
                names = [dots + (node.module or "")]
            else:
                continue
            for name in names:
                stripped = name.lstrip(".")
                top = stripped.split(".")[0]
                if top in ("finn", "qonnx", "brevitas", "torch") or (
                    "finn" in stripped.split(".") and name.startswith(".")
                ):
                    named.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
                if stripped.startswith("pytest_brainsmith.finn"):
                    named.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not named, "\n".join(named)
    # and at run time: importing every core module loads neither
    loaded = imports_after(modules_of("core"))
    leaked = [m for m in loaded if m.split(".")[0] in ("finn", "qonnx", "brevitas", "torch")]
    leaked += [m for m in loaded if m.startswith("pytest_brainsmith.finn")]
    assert not leaked, leaked


def _members(protocol: type) -> set[str]:
    """A Protocol's declared attributes and methods (its own, not typing's)."""
    own = set(getattr(protocol, "__annotations__", {}))
    own |= {n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")}
    return own


def test_the_finn_adapter_implements_each_facet_of_the_toolchain_door():
    """FINN's adapter has every member the core's door declares, facet by facet, and
    the door stays narrow: no facet over 25 members."""
    from pytest_brainsmith.core import toolchain as door
    from pytest_brainsmith.finn.toolchain import FinnToolchain

    adapter = FinnToolchain()
    facets = {
        "": (door.Toolchain, adapter),
        "folding": (door.FoldingFacts, adapter.folding),
        "execution": (door.ExecutionFacts, adapter.execution),
    }
    for facet, (protocol, implementation) in facets.items():
        declared = _members(protocol)
        missing = sorted(m for m in declared if not hasattr(implementation, m))
        assert not missing, f"FINN's adapter lacks {facet or 'toolchain'} members {missing}"
        assert len(declared) <= 25, f"{protocol.__name__}: {len(declared)} members"
