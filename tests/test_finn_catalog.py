"""The static FINN catalog (read at collection instead of importing FINN) must
match the installed FINN: regenerate it and compare."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_catalog_matches_installed_finn(tmp_path: Path):
    target = tmp_path / "catalog.py"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_finn_catalog.py"), str(target)],
        check=True,
        capture_output=True,
    )
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(target)], check=True)
    current = (ROOT / "pytest_brainsmith" / "finn" / "catalog.py").read_text()
    assert target.read_text() == current, (
        "pytest_brainsmith/finn/catalog.py is stale: run scripts/gen_finn_catalog.py"
    )
