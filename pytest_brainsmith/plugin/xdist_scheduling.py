"""An xdist scheduler that gives each worker its own subtrees of the design space.

xdist's ``load`` hands out consecutive chunks of items, so with designs in tree
order both workers start inside the same subtree and one waits on the lock of
a segment the other is building. Here each worker starts on a different
subtree (split at the highest branch points, largest subtrees first, balanced by
design count); once a worker runs dry it steals the far end of the busiest
worker's queue (xdist's ``worksteal``), which is again a different subtree.

Only the controller runs this; it sees node ids only, so it needs no blueprint.
Built on xdist's WorkStealingScheduling (a private API: xdist is pinned).
"""

from __future__ import annotations

from collections.abc import Sequence

from xdist.scheduler.worksteal import WorkStealingScheduling


def _split(
    group: list[tuple[tuple[str, ...], int]], depth: int
) -> list[list[tuple[tuple[str, ...], int]]]:
    children: dict[str, list[tuple[tuple[str, ...], int]]] = {}
    for parts, index in group:
        children.setdefault(parts[depth] if len(parts) > depth else "", []).append((parts, index))
    return list(children.values())


def partition(collection: Sequence[str], workers: int) -> list[list[int]]:
    """Item indices per worker: whole subtrees, each worker's in tree order."""
    if workers <= 1 or not collection:
        return [list(range(len(collection)))] + [[] for _ in range(max(0, workers - 1))]
    items = [(tuple(nodeid.split("::")), i) for i, nodeid in enumerate(collection)]
    # groups of items sharing a prefix; start with one per file, split the biggest
    groups: list[tuple[int, list[tuple[tuple[str, ...], int]]]] = [(1, g) for g in _split(items, 0)]
    while len(groups) < workers:
        groups.sort(key=lambda g: len(g[1]), reverse=True)
        for n, (depth, group) in enumerate(groups):
            # descend through single-child levels (the root segment) to a branch point
            children = [group]
            while len(children) == 1 and any(len(p) > depth for p, _ in group):
                children = _split(group, depth)
                depth += 1
            if len(children) > 1:
                groups[n : n + 1] = [(depth, child) for child in children]
                break
        else:
            break  # nothing left to split: fewer designs than workers
    loads = [0] * workers
    assigned: list[list[int]] = [[] for _ in range(workers)]
    for _depth, group in sorted(groups, key=lambda g: (-len(g[1]), g[1][0][1])):
        target = loads.index(min(loads))
        assigned[target].extend(index for _parts, index in group)
        loads[target] += len(group)
    return [sorted(indices) for indices in assigned]


class TreeScheduling(WorkStealingScheduling):
    """``--dist load`` (xdist's default with -n) for sessions with blueprints."""

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None:
            self.check_schedule()
            return
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = next(iter(self.node2collection.values()))
        if not self.collection:
            return
        nodes = [node for node in self.nodes if not node.shutting_down]
        for node, indices in zip(nodes, partition(self.collection, len(nodes)), strict=True):
            if indices:
                self.node2pending[node].extend(indices)
                node.send_runtest_some(indices)
        self.check_schedule()  # shuts down workers that got nothing
