"""How the command line, ini file and environment shape the loading of a blueprint:
the model for blueprints that name none, and whether blueprint warnings are errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

_TRUE = ("1", "true", "yes", "on")


def blueprint_options(config: pytest.Config) -> dict[str, Any]:
    """Keyword arguments for ``load_design_space``."""
    return {"model": _model(config), "strict": _strict(config)}


def _model(config: pytest.Config) -> Path | None:
    """--brainsmith-model (relative to where pytest was started), BRAINSMITH_MODEL
    (relative to the working directory), the ini option (relative to the ini file)."""
    given = config.getoption("brainsmith_model", None)
    if given:
        return config.invocation_params.dir / Path(given).expanduser()
    given = os.environ.get("BRAINSMITH_MODEL")
    if given:
        return Path(given).expanduser().absolute()
    given = config.getini("brainsmith_model")
    if given:
        base = config.inipath.parent if config.inipath else config.rootpath
        return base / Path(given).expanduser()
    return None


def _strict(config: pytest.Config) -> bool:
    """--brainsmith-strict, BRAINSMITH_STRICT, the ini option brainsmith_strict, or
    (when that is unset) pytest's own ``strict``, as pytest's strict_* options do."""
    if config.getoption("brainsmith_strict", False):
        return True
    if os.environ.get("BRAINSMITH_STRICT", "").lower() in _TRUE:
        return True
    value = config.getini("brainsmith_strict")
    if value is None:
        try:
            value = config.getini("strict")
        except ValueError:  # a pytest without the umbrella strict option
            value = False
    return bool(value)
