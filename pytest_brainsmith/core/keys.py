"""Cache keys: a hash of everything that can change a segment's result.

Like Snakemake's provenance hash and DVC's run cache, the key covers the input
(the content of the parent segment's output model, or of the model file at the
root), the steps and the identity of their code (FINN and its libraries' versions,
a hash of a user step's source), and every config field those steps can read
(files by content). Readable names (the design's choices) are not part of the key:
two blueprints that ask for the same work share it, and so do two designs whose
choices above made the same model (``MVAU: rtl`` where FINN builds ``MVAU_hls``
anyway): the work below such a no-op choice is built once (content dedupe). A
child's key is therefore known once its parent is built or found in the cache
(its manifest records its output's digest). The components are stored with the
entry so that a miss can be explained.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

from .registry import Step
from .toolchain import current as current_toolchain

#: Bump when the meaning of a key or of an entry's layout changes. 2: manifests record
#: every file's digest (entries without them cannot be verified, so they are not reused).
#: 3: a child's input is its parent's output content, not its parent's key.
KEY_SCHEME = 3
_TOOLCHAIN = ("finn-plus", "qonnx", "onnx", "onnxruntime", "numpy", "brevitas", "torch")
_digests: dict[tuple[str, int, int, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's content, memoized by (path, size, mtime, ctime, inode): a file
    rewritten in place, even with its mtime set back, gets a new ctime."""
    st = os.stat(path)
    memo = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if memo not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _digests[memo] = digest.hexdigest()
    return _digests[memo]


@cache
def toolchain() -> dict[str, str]:
    """Versions of the libraries whose code runs inside FINN steps (no import needed)."""
    versions = {"python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    for name in _TOOLCHAIN:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def canonical(value: Any) -> Any:
    """A JSON-stable form of a config value; files are represented by their content."""
    if isinstance(value, Path):
        return {"file": value.name, "sha256": file_digest(value)}
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def relevant_config(steps: tuple[Step, ...] | list[Step], config: dict[str, Any]) -> dict[str, Any]:
    """The part of ``config`` that ``steps`` can read."""
    result = {}
    for name, value in config.items():
        if any(step.may_read(current_toolchain().field_read(name)) for step in steps):
            result[name] = value
    return result


def _step_component(step: Step) -> dict[str, Any]:
    """A step in a key; a repeated step also by which time it runs (its checkpoint name)."""
    component: dict[str, Any] = {"step": step.qualified, "code": step.code_id}
    if step.occurrence > 1:
        component["occurrence"] = step.occurrence
    return component


def segment_key(
    steps: tuple[Step, ...] | list[Step],
    config: dict[str, Any],
    *,
    parent_output: str | None = None,
    model: Path | None = None,
    parent_key: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """(hex digest, components) for running ``steps`` on the parent's output, given by
    the sha256 of its content (or on ``model`` at the start of the pipeline). With
    ``parent_key`` instead, the digest names the segment by where it is in a tree (its
    parent's such name): the engine's identity of a task, known before anything is
    built, never a cache key."""
    if parent_output:
        source: dict[str, Any] = {"parent_output": parent_output}
    elif parent_key:
        source = {"parent": parent_key}
    else:
        source = {"model": canonical(model)}
    components: dict[str, Any] = {
        "scheme": KEY_SCHEME,
        "input": source,
        "steps": [_step_component(s) for s in steps],
        "config": canonical(relevant_config(steps, config)),
        "toolchain": toolchain(),
    }
    text = json.dumps(components, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest(), components
