"""The Pareto fronts of folding searches, written as FINN folding JSON files at the end of a
run (``build/brainsmith/foldings/<blueprint>/<prefix>/trial-N.json``), ready to be a
blueprint's ``folding_config_file``. Read from the design records; the views only read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..core.toolchain import current as toolchain
from ..views.folding import front, objectives_of, searches


def export_fronts(records: list[dict[str, Any]], folder: Path) -> dict[str, list[Path]]:
    """Each search's front as ``<folder>/<blueprint>/<prefix>/trial-N.json``, ready for
    ``folding_config_file`` (a file an earlier run wrote is kept: a blueprint may use it)."""
    written: dict[str, list[Path]] = {}
    for search, trials in searches(records).items():
        target = folder / _safe(search)
        paths = []
        for record in front(trials, objectives_of(trials)):
            source = Path(record["folding"]["file"])
            folding = json.loads(source.read_text())
            folding.pop("Defaults", None)
            paths.append(
                toolchain().folding.write(
                    target / f"trial-{record['folding']['trial']}.json", folding
                )
            )
        if paths:
            written[search] = paths
    return written


def _safe(search: str) -> str:
    """``blueprints/a.blueprint.yaml::x..y`` -> ``blueprints/a/x..y`` (a relative path)."""
    blueprint, *parts = search.split("::")
    stem = blueprint.removesuffix(".yaml").removesuffix(".yml").removesuffix(".blueprint")
    names = [*stem.split("/"), *parts]
    clean = ["".join(c if c.isalnum() or c in "._-[]" else "_" for c in n) for n in names]
    return os.path.join(*[n for n in clean if n not in ("", ".", "..")] or ["search"])
