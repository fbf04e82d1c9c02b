"""What a folding search derived, kept in the cache so that a re-run needs no FINN.

A search reads its space, FINN's foldings of the designs that start it and its balanced
proposals from built models (that takes FINN, seconds to import), then asks Optuna for
trials batch after batch. All of it is a function of cache entries and the search's
settings, so it is kept under the cache root (``v1/searches/<key>.json``), each record
keyed by a sha256 of everything it depends on (the prefix's and the models' cache keys,
the settings, the bounds, the code and library versions, what earlier batches measured).
A run whose records are all there asks the same trials without importing FINN or Optuna.

Nothing found is trusted blindly: a record holds the sha256 of its value and the identity
it was made for, and one that does not match (torn, edited) is ignored and made again.
Writing is best effort (a read-only cache works, it only derives again).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..toolchain import FoldingFacts

#: the record format; bump it when what a record means changes
FORMAT = 1
FOLDER = "searches"


class FoldingMemo:
    """Records under ``<cache>/v1/searches/``, looked up by identity."""

    def __init__(self, base: Path) -> None:
        self.root = base / FOLDER

    def _path(self, kind: str, identity: dict[str, Any]) -> tuple[Path, str]:
        text = _canonical({"format": FORMAT, "kind": kind, "identity": identity})
        key = hashlib.sha256(text.encode()).hexdigest()
        return self.root / f"{kind}-{key}.json", text

    def get(self, kind: str, identity: dict[str, Any]) -> Any | None:
        """The value stored for ``identity``, or None (absent, or not intact)."""
        path, text = self._path(kind, identity)
        try:
            record = json.loads(path.read_text())
            value = record["value"]
            intact = record["identity"] == text and record["sha256"] == _digest(value)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return value if intact else None

    def put(self, kind: str, identity: dict[str, Any], value: Any) -> None:
        path, text = self._path(kind, identity)
        record = {"identity": text, "sha256": _digest(value), "value": value}
        with contextlib.suppress(OSError):  # a read-only cache: derived again next time
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
            ) as handle:
                handle.write(json.dumps(record, sort_keys=True))
            os.replace(handle.name, path)


@cache
def code_identity(folding: FoldingFacts) -> dict[str, str]:
    """What the derivation's results depend on besides its inputs: the code reading the
    models (the toolchain's, ``finn/folding.py``), Optuna's and Python's versions (the
    sampler's draws)."""
    try:
        optuna = metadata.version("optuna")
    except metadata.PackageNotFoundError:
        optuna = ""
    return {
        "folding": folding.code(),
        "optuna": optuna,
        "python": ".".join(map(str, sys.version_info[:2])),
    }


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()
