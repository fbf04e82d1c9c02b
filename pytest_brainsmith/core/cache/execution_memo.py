"""Outputs of executing a model, kept by content so a warm run never starts FINN.

Executing a model needs FINN imported (its custom ops register with qonnx): seconds
before the first vector. A user's check in Python (``design.execute(inputs)``, the
reference model executed for comparison) asks the same question on every run of an
unchanged design, so its answer is kept in the cache like a build's:
``executions/<digest>.npz``, keyed by what the answer depends on (the model files'
content, the inputs' bytes, shape and dtype, the toolchain's versions) as DVC's run
cache keys a stage's outputs. The file holds the outputs and their own digest: a file
torn or edited is not read back but computed again (nothing corrupt is reused).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..keys import file_digest, toolchain

#: Cache subfolder of the kept executions.
EXECUTIONS = "executions"
#: bump when what a memo holds changes meaning: older ones are then not read
SCHEME = 1


def execution_digest(models: list[Path], inputs: Any) -> str:
    """What an execution's outputs depend on, as one sha256."""
    import numpy as np

    array = np.ascontiguousarray(inputs)
    identity = {
        "scheme": SCHEME,
        "models": [file_digest(Path(m)) for m in models],
        "inputs": hashlib.sha256(array.tobytes()).hexdigest(),
        "shape": list(array.shape),
        "dtype": array.dtype.str,
        "toolchain": toolchain(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _outputs_digest(outputs: Any) -> str:
    import numpy as np

    array = np.ascontiguousarray(outputs)
    return hashlib.sha256(
        array.tobytes() + repr((array.shape, array.dtype.str)).encode()
    ).hexdigest()


class ExecutionMemo:
    """The kept executions under one cache folder (``base``: the cache's own)."""

    def __init__(self, base: Path | str) -> None:
        self.root = Path(base) / EXECUTIONS

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.npz"

    def read(self, digest: str) -> Any | None:
        """The kept outputs, or None when absent, torn or not matching their digest."""
        import numpy as np

        try:
            with np.load(self.path(digest), allow_pickle=False) as data:
                outputs, kept = data["outputs"], str(data["digest"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
        return outputs if kept == _outputs_digest(outputs) else None

    def write(self, digest: str, outputs: Any) -> None:
        """Keep ``outputs`` (whole or not at all: a rename; a read-only cache is fine)."""
        import numpy as np

        path = self.path(digest)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        except OSError:
            return
        try:
            with os.fdopen(fd, "wb") as out:
                np.savez(out, outputs=outputs, digest=np.array(_outputs_digest(outputs)))
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)

    def check(
        self, identity: str, inputs: Any, compute: Callable[[], dict[str, Any]]
    ) -> tuple[dict[str, Any], bool]:
        """A verification check (``outputs`` and JSON-able facts) of the model whose
        ``identity`` (the toolchain's numerics digest) is given, on ``inputs``: kept ones
        if any (then True). Models that differ only where the check cannot see share it."""
        import numpy as np

        array = np.ascontiguousarray(inputs)
        digest = hashlib.sha256(
            json.dumps(
                {
                    "scheme": SCHEME,
                    "check": identity,
                    "inputs": hashlib.sha256(array.tobytes()).hexdigest(),
                    "shape": list(array.shape),
                    "dtype": array.dtype.str,
                    "toolchain": toolchain(),
                },
                sort_keys=True,
            ).encode()
        ).hexdigest()
        facts = self.path(digest).with_suffix(".json")
        kept = self._kept(digest, facts)
        if kept is not None:
            return kept, True
        try:  # one process computes it; another asking meanwhile waits and reads it
            facts.parent.mkdir(parents=True, exist_ok=True)
            lock: Any = FileLock(str(facts.with_suffix(".lock")))
            lock.acquire()
        except OSError:  # a read-only cache: compute without sharing
            lock = None
        try:
            kept = self._kept(digest, facts)
            if kept is not None:
                return kept, True
            return self._computed(digest, facts, compute), False
        finally:
            if lock is not None:
                lock.release()

    def _kept(self, digest: str, facts: Path) -> dict[str, Any] | None:
        outputs = self.read(digest)
        if outputs is None:
            return None
        try:
            return {**json.loads(facts.read_text()), "outputs": outputs}
        except (OSError, ValueError):
            return None

    def _computed(
        self, digest: str, facts: Path, compute: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        result = compute()
        try:
            facts.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=facts.parent, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w") as out:
                json.dump({k: v for k, v in result.items() if k != "outputs"}, out)
            os.replace(tmp, facts)
        except (OSError, TypeError, ValueError):
            return result
        self.write(digest, result["outputs"])
        return result

    def run(self, models: list[Path], inputs: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``'s outputs for ``models`` on ``inputs``: kept ones if any."""
        digest = execution_digest(models, inputs)
        outputs = self.read(digest)
        if outputs is None:
            outputs = compute()
            self.write(digest, outputs)
        return outputs
