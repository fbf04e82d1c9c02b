"""In the engine: a segment's outcome judged by its verification record.

The first step whose model fails fails the segment that holds it (kind
``verification``; its descendants are blocked by it, as by a build failure), e.g.
``verification failed after step_streamline: 5 of 8 outputs differ, max |err| 3
(atol 0)``. A recorded failure is reported as ``failed-before``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .plan import plan_for
from .records import read_record

if TYPE_CHECKING:
    from ..cache import SegmentCache
    from ..outcomes import SegmentOutcome
    from ..tree import Segment


def judge(
    segment: Segment, outcome: SegmentOutcome, cache: SegmentCache, *, now: bool = False
) -> SegmentOutcome | None:
    """A usable segment outcome with its verification applied: a failed record fails
    the segment (kind ``verification``). None when the record for the current
    settings is missing (the segment must be verified first). ``now``: verified in this
    run (else a recorded result, reported as ``failed-before``)."""
    plan = plan_for(segment, cache)
    if plan is None or not outcome.key or not segment.steps:
        return outcome
    record = read_record(plan, outcome.key)
    if record is None:
        return None
    outcome.verification = record
    if record.get("status") == "failed":
        outcome.status = "failed" if now else "failed-before"
        outcome.kind = "verification"
        outcome.step = record.get("failed_step")
        outcome.error = record.get("message")
        failing = next((s for s in record.get("steps", []) if s.get("status") == "failed"), {})
        outcome.traceback = failing.get("traceback")
    return outcome
