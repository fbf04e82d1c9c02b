"""The plan: what a worker needs to verify a segment, as plain data.

The engine makes it from the blueprint's ``verify:`` settings; its hash names the
segment's record (``records.py``), so a change of settings is verified anew while the
segment key, and so the entry, stays the same.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from ..keys import file_digest
from .records import RECORDS

if TYPE_CHECKING:
    from ..cache import SegmentCache
    from ..tree import Segment

#: bump when records change meaning: older ones are then not reused
SCHEME = 2


def plan_for(segment: Segment, cache: SegmentCache) -> dict[str, Any] | None:
    """What the worker needs to verify ``segment`` (None: the blueprint verifies nothing)."""
    settings = segment.tree.space.verify
    if settings is None:
        return None
    model = segment.model()
    inputs = file_digest(settings.inputs_file) if settings.inputs_file else None
    expected = file_digest(settings.expected_file) if settings.expected_file else None
    spec = {
        "scheme": SCHEME,
        "inputs": inputs or {"count": settings.count, "seed": settings.seed},
        # a segment's key names the model it reads, not the design's model: the
        # outputs it is compared with are those of this model
        "expected": expected or {"golden": settings.golden, "model": file_digest(model)},
        "after": list(settings.after) if settings.after is not None else None,
        "atol": settings.atol,
        "rtol": settings.rtol,
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "hash": digest,
        "settings": spec,
        "model": str(model),
        "inputs_file": str(settings.inputs_file) if settings.inputs_file else None,
        "expected_file": str(settings.expected_file) if settings.expected_file else None,
        "count": settings.count,
        "seed": settings.seed,
        "golden": settings.golden,
        "after": spec["after"],
        "atol": settings.atol,
        "rtol": settings.rtol,
        "base": str(cache.base / RECORDS),
        "executions": str(cache.base),  # where the golden outputs are kept
    }
