"""Designs that are the same design: a choice that changed nothing.

``MVAU: rtl`` on layers FINN can only build as ``MVAU_hls``, ``VVAU: [hls, rtl]`` on a
network without a VVAU, two ``mvau_wwidth_max`` values that fold a layer alike: the
choices differ, the designs do not. Their segments' outputs have the same content, so
the work below is keyed alike and built once (``keys.py``); here a design learns which
earlier design it equals, and why, so that the views show one representative.

A design's representative is found by walking its path from the root: at each
level, the first earlier sibling whose output has the same content (and under which
the next segment has the same key, so the work below is the same) takes the place of
the design's own segment; at the last level, the first earlier sibling with the same
model and the same estimates. The design found at the end must have the same model
and estimates as the design itself, or there is no representative.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..outcomes import Equivalent, SegmentOutcome
from ..tree import Segment, trial_of


@dataclass
class Facts:
    """What the walk asks of the engine. ``settle`` waits for a segment's outcome if
    some submitted design needs it (None: not needed, stopped, or the run ended)."""

    settle: Callable[[Segment], SegmentOutcome | None]
    digest: Callable[[SegmentOutcome], str | None]
    key: Callable[[Segment], str | None]
    estimates: Callable[[Segment], dict[str, Any]]


def representative(leaf: Segment, facts: Facts) -> Equivalent | None:
    """The earlier design that ``leaf``'s design equals, if any (its own outcome is done)."""
    chain = leaf.chain()
    if trial_of(leaf) is not None:  # a folding search's trial: the search reports it
        return None
    mirror = chain[0]
    #: (depth, own, the sibling in its place, the segment after which both are the same)
    taken: list[tuple[int, Segment, Segment, Segment]] = []
    for depth in range(1, len(chain)):
        current = _mirror(mirror, chain[depth])
        if current is None:
            return None
        below = chain[depth + 1 :]
        for sibling in mirror.children:
            if sibling is current:
                break
            proof = _same(sibling, current, below, facts)
            if proof is not None:
                taken.append((depth, current, sibling, proof))
                current = sibling
                break
        mirror = current
    if not taken or mirror is leaf or not _same_result(mirror, leaf, facts):
        return None
    reasons = []
    for depth, own, sibling, proof in taken:
        last = not any(s.steps for s in chain[depth + 1 :])
        reasons.append(_reason(own, sibling, proof, last=last))
    return Equivalent(mirror, "; ".join(reasons))


def _mirror(parent: Segment, segment: Segment) -> Segment | None:
    """The child of ``parent`` in ``segment``'s place (trees repeat their levels under
    every sibling, so the n-th child stands for the same choice)."""
    assert segment.parent is not None
    if segment.parent is parent:
        return segment
    index = segment.parent.children.index(segment)
    if index >= len(parent.children) or parent.children[index].name != segment.name:
        return None
    return parent.children[index]


def _same(a: Segment, b: Segment, below: list[Segment], facts: Facts) -> Segment | None:
    """``a`` stands for ``b``: the same output model and, down the design's path below,
    the same outputs until the next segments share a key (the work under both is then
    the same) or, at the end, the same estimates. A choice whose segment has no steps of
    its own (``MVAU: rtl`` takes effect at ``specialize_layers`` below it) changes the
    key below, not the model: it is judged by the outputs there. Returns the segment
    after which the two are the same (None: they differ)."""
    if not _same_output(a, b, facts):
        return None
    proof: Segment = b  # named from the design's own side
    under_a: Segment | None = a
    under_b: Segment | None = b
    for segment in below:  # through segments without steps, which hand on their input
        under_a = _mirror(under_a, segment) if under_a is not None else None
        under_b = _mirror(under_b, segment) if under_b is not None else None
        if under_a is None or under_b is None:
            return None
        if not segment.steps:
            continue
        key = facts.key(under_a)
        if key is not None and key == facts.key(under_b):
            return proof
        if not _same_output(under_a, under_b, facts):
            return None
        proof = under_b
    return proof if _estimates(under_a, facts) == _estimates(under_b, facts) else None


def _same_output(a: Segment, b: Segment, facts: Facts) -> bool:
    oa, ob = facts.settle(a), facts.settle(b)
    if oa is None or ob is None or not (oa.ok and ob.ok):
        return False
    digest = facts.digest(oa)
    return digest is not None and digest == facts.digest(ob)


def _same_result(a: Segment, b: Segment, facts: Facts) -> bool:
    """Two designs end with the same model and the same estimates."""
    return _same_output(a, b, facts) and _estimates(a, facts) == _estimates(b, facts)


def _estimates(segment: Segment, facts: Facts) -> dict[str, Any]:
    found = dict(facts.estimates(segment))
    found.pop("report_dir", None)  # where they are, not what they say
    return found


def _reason(own: Segment, taken: Segment, proof: Segment, *, last: bool) -> str:
    """``MVAU=rtl changed nothing after specialize_layers: same model as MVAU=hls``
    (``proof``: the segment after which the two are the same)."""
    assert own.choice is not None and taken.choice is not None
    mine = "{}={}".format(*own.choice.describe())
    theirs = "{}={}".format(*taken.choice.describe())
    node: Segment | None = proof
    while node is not None and not node.steps:
        node = node.parent
    after = f" after {node.steps[-1].name}" if node is not None else ""
    what = "model and estimates" if last else "model"
    return f"{mine} changed nothing{after}: same {what} as {theirs}"
