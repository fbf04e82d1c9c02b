"""The manual (docs/, built with mkdocs) and the README: the docs build without a warning,
the README stays short, and their code samples are what they say: every YAML sample
parses, every Python sample compiles, every blueprint sample loads."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, need

from pytest_brainsmith.core.blueprint import load_design_space
from pytest_brainsmith.core.toolchain import finn_registry

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def samples(kind: str) -> list[tuple[str, str]]:
    found = []
    for page in [ROOT / "README.md", *PAGES]:
        for lang, body in FENCE.findall(page.read_text()):
            if lang == kind:
                found.append((page.name, body))
    return found


def test_the_readme_is_short_and_points_to_the_manual():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    text = "\n".join(lines)
    assert "scripts/setup-env && .venv/bin/pytest blueprints/" in lines[3]
    assert "scripts/setup-env && .venv/bin/pytest tests/" in lines[4]
    for page in PAGES:
        if page.name != "index.md":
            assert f"docs/{page.name}" in text, f"the README does not point to {page.name}"


def test_the_manual_builds_without_a_warning(tmp_path: Path):
    need(
        subprocess.run(
            [sys.executable, "-m", "mkdocs", "--version"], capture_output=True
        ).returncode
        == 0,
        "mkdocs is not installed (pip install 'pytest-brainsmith[docs]')",
    )
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr


@pytest.mark.parametrize(("page", "body"), samples("yaml"), ids=lambda v: str(v)[:40])
def test_yaml_samples_parse(page: str, body: str):
    yaml.safe_load(body)


@pytest.mark.parametrize(("page", "body"), samples("python"), ids=lambda v: str(v)[:40])
def test_python_samples_compile(page: str, body: str):
    compile(body, page, "exec")


def _pass_through(model, cfg):
    return model


def blueprint_samples() -> list[tuple[str, str]]:
    """YAML samples that are blueprints (or fragments of one: a design_space)."""
    found = []
    for page, body in samples("yaml"):
        with contextlib.suppress(yaml.YAMLError):
            data = yaml.safe_load(body)
            if isinstance(data, dict) and "design_space" in data:
                found.append((page, body))
    return found


@pytest.mark.parametrize(("page", "body"), blueprint_samples(), ids=lambda v: str(v)[:40])
def test_blueprint_samples_load(page: str, body: str, tmp_path: Path):
    """A blueprint in the manual is one the plugin accepts (its model swapped for the
    bundled one; a fragment gets the keys every blueprint needs)."""
    model = ROOT / "models" / "tfc_w2a2.onnx"
    if re.search(r"(?m)^model:", body):
        text = re.sub(r"(?m)^model: *\S+", f"model: {model}", body)
    else:
        text = f"model: {model}\nfpga_part: xc7z020clg400-1\nclock_ns: 10\n{body}"
    (tmp_path / "models").symlink_to(ROOT / "models")  # what base.yaml names
    folder = tmp_path / "blueprints"
    folder.mkdir()
    shutil.copyfile(ROOT / "blueprints" / "base.yaml", folder / "base.yaml")
    path = folder / "sample.blueprint.yaml"
    path.write_text(text)
    registry = finn_registry()
    for name in set(re.findall(r"\b(my_\w+)", body)):  # the manual's own steps, as a user's
        registry.register_step(_pass_through, name=name, reads=())
    space = load_design_space(path, registry)
    assert space.slots, f"a blueprint of {page} names no step"
