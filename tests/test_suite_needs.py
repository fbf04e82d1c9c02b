"""The suite gives no silent green: a test whose need of the machine is missing skips
here but fails on CI (``need`` in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

NEEDY = """
from conftest import need, need_module

def test_needs_a_tool():
    need(False, "needs a tool that is not here")

def test_has_what_it_needs():
    need(True, "never said")

def test_needs_a_package():
    need_module("no_such_package_brainsmith")
"""


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_missing_need_skips_locally_and_fails_on_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # the suite's conftest
    pytester.makepyfile(test_needy=NEEDY)
    monkeypatch.setenv("CI", ci)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rfs")
    if ci:
        result.assert_outcomes(passed=1, failed=2)
        result.stdout.fnmatch_lines(["*needed on CI (CI=true): needs a tool that is not here*"])
    else:
        result.assert_outcomes(passed=1, skipped=2)
