"""``search: exact`` (the default): FINN's cost model solved, the front built in order.

Once the prefix is built, FINN's own per-node cost model of every setting of every node
is read from its model in process (``finn/cost_model.py``, through the toolchain) and
solved (``solver.py``): the cheapest design at every throughput within the part (and
the ``expect:`` bounds). The trials are the designs of that front, built on real FINN
in order (the cheapest meeting each ``targets`` throughput and each FINN folding's
throughput first); each trial's record holds what the model predicted of it beside
FINN's estimates. Nothing depends on what a trial measured, so the plan is kept in the
cache (``memo.py``) and a warm run needs no FINN.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ..blueprint.space import FoldingSearchSettings
from . import parts
from .bounds import solver_bounds
from .memo import FoldingMemo, code_identity
from .proposer import Proposal, Result, SearchStopped, Start
from .solver import plan

if TYPE_CHECKING:
    from ..toolchain import Toolchain


class ExactPlan:
    """The solved front's designs, proposed in build order as trials are wanted."""

    measures = False  # nothing depends on what a trial measured

    def __init__(
        self, settings: FoldingSearchSettings, memo: FoldingMemo, compiler: Toolchain
    ) -> None:
        self.settings = settings
        self.compiler = compiler
        self.memo = memo
        self.capacity: dict[str, int] | None = None  # the part's
        #: the designs, in build order (folding, model), and how they were solved
        self.plan: list[dict[str, Any]] = []
        self.solved: dict[str, Any] = {}

    def open(self, start: Start) -> None:
        """The plan: FINN's cost model of the prefix's model solved (from the memo, else
        with FINN)."""
        config = start.prefix.config()
        clock = float(config.get("synth_clk_period_ns") or 0)
        if clock <= 0:
            raise SearchStopped("the exact search needs the clock (clock_ns) to count throughput")
        self.capacity = start.capacity
        capacity, max_cycles = solver_bounds(start.bounds, start.capacity, clock)
        targets = [int(1e9 / clock / fps) for fps in self.settings.targets]
        targets += [
            int(found[0]["max_cycles"])
            for _, found in start.warm
            if found is not None and isinstance(found[0].get("max_cycles"), int | float)
        ]
        part = parts.part_of(config) or self.compiler.fpga_part(config)
        identity = {
            "prefix": start.key,
            "settings": self.settings.key(),
            "attributes": {k: list(v) for k, v in sorted(self.settings.attributes.items())},
            "part": part,
            "capacity": capacity,
            "max_cycles": max_cycles,
            "targets": targets,
            "clock": clock,
            "minimize_bit_width": config.get("minimize_bit_width", True),
            "code": code_identity(self.compiler.folding),
        }
        found = self.memo.get("plan", identity)
        if found is None:
            found = self._solve(start, part, capacity, max_cycles, targets, clock)
            self.memo.put("plan", identity, found)
        self.solved = {k: v for k, v in found.items() if k != "designs"}
        self.plan = found["designs"]
        if not self.plan:  # every trial an infeasible proposal: the last one fails
            raise SearchStopped(
                f"the exact search found no design to build: {found.get('why')}", exhausted=True
            )

    def _solve(
        self,
        start: Start,
        part: str | None,
        capacity: dict[str, float] | None,
        max_cycles: int | None,
        targets: list[int],
        clock: float,
    ) -> dict[str, Any]:
        """The plan, with FINN: its cost table of the model, solved."""
        model = start.model()
        if not part:
            raise SearchStopped("the exact search needs the part (fpga_part or board)")
        config = start.prefix.config()
        compiler = self.compiler
        compiler.prepare()
        started = time.perf_counter()
        table = compiler.folding.cost_table(
            model,
            part,
            {k: list(v) for k, v in self.settings.attributes.items()},
            ultra=bool(start.capacity and start.capacity.get("URAM")),
            minimize_bit_width=bool(config.get("minimize_bit_width", True)),
        )
        found = plan(
            table,
            objective=next(m for d, m in self.settings.objectives if d == "minimize"),
            capacity=capacity,
            clock_ns=clock,
            max_cycles=max_cycles,
            targets=targets,
            metric="cost" if self.settings.estimates == "corrected" else "finn",
        )
        found["stats"]["table_seconds"] = round(
            time.perf_counter() - started - found["stats"]["seconds"], 3
        )
        return json.loads(json.dumps(found))  # what the memo gives back, also now

    def ask(self, first: int) -> list[Proposal]:
        """The plan's next ``batch`` designs, from trial ``first``."""
        if first >= len(self.plan):
            raise SearchStopped(
                f"the solved front has {len(self.plan)} design(s), all built as "
                f"trial-0..{len(self.plan) - 1}: there is no trial-{first} to build",
                exhausted=True,
            )
        front = self.solved.get("front") or [{}]
        return [
            Proposal(
                entry["folding"],
                {
                    **entry["model"],
                    "capacity": self.capacity,
                    "estimates": self.settings.estimates,
                    "solver": self.solved.get("stats", {}),
                    "front": len(self.solved.get("front", [])),
                    "fastest": front[0].get("estimated_throughput_fps"),
                },
            )
            for entry in self.plan[first : first + self.settings.batch]
        ]

    def tell(self, results: list[Result], complete: bool) -> None:
        """Nothing to tell: the plan does not depend on what a trial measured."""

    def close(self) -> None:
        """Nothing to write: the plan is in the memo."""
