"""The exact folding solver (``core/search/solver.py``) against brute force: on tables of
per-node options small enough to enumerate every design, the least cost at every cycle
budget and the Pareto front it returns are the true ones, for each cost it minimises,
with the capacity binding or not; what is built first; the part table; and the views'
Pareto front of built trials (feasible ones only, on the corrected figures)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from pytest_brainsmith.core.search import parts
from pytest_brainsmith.core.search.solver import (
    Problem,
    folding_of,
    pick,
    plan,
    solve_front,
)
from pytest_brainsmith.views import folding as views

RESOURCES = parts.RESOURCES


def random_table(seed: int, units: int = 5, options: int = 5) -> dict:
    """Units of options as FINN's would be: fewer cycles cost more, in varying resources."""
    rng = random.Random(seed)
    table = {"units": []}
    for u in range(units):
        rows = []
        for o in range(options):
            cycles = rng.choice([10, 20, 40, 80, 160, 320, 640])
            speed = 640 / cycles
            cost = [
                round(rng.uniform(50, 400) * speed**0.7),  # LUT
                rng.choice([0, 1, 2, 4]) * (1 + int(speed > 8)),  # BRAM
                rng.choice([0, 0, 1]),  # URAM
                rng.choice([0, 1, 3]) * int(speed),  # DSP
            ]
            finn = [cost[0] - rng.choice([0, 0, 30]), *cost[1:]]
            rows.append(
                {
                    "attrs": {f"node{u}": {"PE": o + 1}},
                    "cycles": cycles,
                    "finn": finn,
                    "cost": cost,
                }
            )
        table["units"].append({"nodes": [f"node{u}"], "options": rows})
    return table


def brute(table: dict, objective: str, capacity: dict, max_cycles: int | None = None):
    """Every design: (max cycles, objective value) of those within the capacity."""
    caps = [capacity.get(r, math.inf) for r in RESOURCES]
    found = []
    for combo in itertools.product(*(u["options"] for u in table["units"])):
        cycles = max(o["cycles"] for o in combo)
        if max_cycles is not None and cycles > max_cycles:
            continue
        totals = [sum(o["cost"][i] for o in combo) for i in range(4)]
        if any(t > c for t, c in zip(totals, caps, strict=True)):
            continue
        if objective == "part":
            value = max(t / c for t, c in zip(totals, caps, strict=True) if math.isfinite(c))
        else:
            value = totals[RESOURCES.index(objective)]
        found.append((cycles, value))
    return found


def brute_front(designs: list[tuple[int, float]]) -> list[tuple[int, float]]:
    best, front = math.inf, []
    for cycles, value in sorted(designs):
        if value < best - 1e-9:
            front.append((cycles, value))
            best = value
    return front


CASES = [
    ("LUT", {}),  # no capacity: each unit's cheapest option is optimal
    ("LUT", {"BRAM_18K": 12, "DSP": 60}),  # binding: integer programs
    ("DSP", {"LUT": 2500, "URAM": 2}),
    ("BRAM_18K", {"LUT": 3000, "DSP": 80}),
    ("part", {"LUT": 3000, "BRAM_18K": 14, "URAM": 3, "DSP": 90}),
]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("objective", "capacity"), CASES)
def test_the_solver_is_optimal_at_every_budget_and_its_front_is_the_true_one(
    seed: int, objective: str, capacity: dict
):
    table = random_table(seed)
    designs = brute(table, objective, capacity)
    problem = Problem(table, objective, capacity)
    budgets = sorted({c for u in table["units"] for c in (o["cycles"] for o in u["options"])})
    for budget in budgets:
        best = min((v for c, v in designs if c <= budget), default=None)
        solved = problem.solve(budget)
        if best is None:
            assert solved is None, budget
            continue
        assert solved is not None and solved.value == pytest.approx(best), budget
        assert solved.max_cycles <= budget
        # the design is what it says: its options sum to its figures, within capacity
        options = [u["options"][i] for u, i in zip(table["units"], solved.choice, strict=True)]
        for r, name in enumerate(RESOURCES):
            assert solved.cost[name] == pytest.approx(sum(o["cost"][r] for o in options))
            assert solved.finn[name] == pytest.approx(sum(o["finn"][r] for o in options))
            assert solved.cost[name] <= capacity.get(name, math.inf) + 1e-6
        assert solved.max_cycles == max(o["cycles"] for o in options)
    solution = solve_front(Problem(table, objective, capacity))
    got = [(d.max_cycles, d.value) for d in solution.front]
    want = brute_front(designs)
    assert [c for c, _ in got] == [c for c, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want])
    if want:
        assert solution.fastest is not None and solution.fastest.max_cycles == want[0][0]


def test_a_flipped_objective_or_another_metric_would_fail_the_test_above():
    """The brute-force check above can tell: on these tables the design of least DSP is
    not the design of least LUT at some budget, and the most expensive design is not
    the cheapest (a solver that read another metric or maximised would be caught)."""
    capacity = {"BRAM_18K": 12, "DSP": 60}
    other_metric = flipped = 0
    for seed in range(6):
        table = random_table(seed)
        designs = brute(table, "LUT", capacity)
        for budget in sorted({c for c, _ in designs}):
            values = [v for c, v in designs if c <= budget]
            lut = Problem(table, "LUT", capacity).solve(budget)
            dsp = Problem(table, "DSP", capacity).solve(budget)
            assert lut is not None and dsp is not None
            other_metric += dsp.cost["LUT"] > min(values)
            flipped += max(values) > min(values)
    assert other_metric and flipped


def test_a_throughput_bound_and_an_impossible_capacity():
    table = random_table(1)
    bounded = solve_front(Problem(table, "LUT", {}, max_cycles=320))
    assert bounded.front and all(d.max_cycles <= 320 for d in bounded.front)
    assert [(d.max_cycles, d.value) for d in bounded.front] == brute_front(
        brute(table, "LUT", {}, max_cycles=320)
    )
    nothing = Problem(table, "LUT", {"LUT": 10})
    assert nothing.infeasible and "no setting within the capacity" in nothing.infeasible
    found = plan(table, objective="LUT", capacity={"LUT": 10}, clock_ns=10)
    assert found["designs"] == [] and "no setting within the capacity" in found["why"]
    with pytest.raises(ValueError, match="needs a part of known capacity"):
        Problem(table, "part", {})
    with pytest.raises(ValueError, match="unknown cost"):
        Problem(table, "LUTS", {})


def test_the_plan_builds_the_targets_first_then_the_fastest_and_spreads_the_rest():
    table = random_table(4, units=4, options=6)
    solution = solve_front(Problem(table, "LUT", {"DSP": 70}))
    front = solution.front
    assert len(front) >= 4
    target = front[len(front) // 2].max_cycles + 1
    order = pick(front, len(front), [target])
    assert order[0] is min(
        (d for d in front if d.max_cycles <= target), key=lambda d: d.value
    )  # the cheapest that meets the target
    assert order[1] is front[0]  # then the fastest
    assert sorted(map(id, order)) == sorted(map(id, front))  # every design, once
    made = plan(table, objective="LUT", capacity={"DSP": 70}, clock_ns=5, targets=[target])
    first = made["designs"][0]
    assert first["folding"] == folding_of(table, order[0])
    assert first["model"]["estimated_throughput_fps"] == pytest.approx(
        1e9 / 5 / order[0].max_cycles
    )
    assert made["stats"]["units"] == 4 and len(made["front"]) == len(front)


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        ("xc7z020clg400-1", (53_200, 280, 0, 220)),
        ("xczu7ev-ffvc1156-2-e", (230_400, 624, 96, 1_728)),
        ("xczu9eg-ffvb1156-2-e", (274_080, 1_824, 0, 2_520)),
        ("xcu250-figd2104-2L-e", (1_728_000, 5_376, 1_280, 12_288)),
    ],
)
def test_the_part_table(part: str, expected: tuple[int, ...]):
    assert parts.capacity(part) == dict(zip(RESOURCES, expected, strict=True))


def test_an_unknown_part_has_no_capacity():
    assert parts.capacity("xcvu9p-flga2104-2L-e") is None
    assert parts.capacity(None) is None


def record(trial: int, lut: float, fps: float, outcome: str = "passed", delta: float = 0.0):
    """A trial's record as the views read it (``delta``: the model's LUT correction)."""
    model = {
        "finn": {"LUT": 100.0, "BRAM_18K": 1, "URAM": 0, "DSP": 0},
        "corrected": {"LUT": 100.0 + delta, "BRAM_18K": 1, "URAM": 0, "DSP": 0},
        "max_cycles": 10,
        "capacity": {"LUT": 1000, "BRAM_18K": 10, "URAM": 0, "DSP": 10},
        "estimates": "corrected",
    }
    return {
        "nodeid": f"b.yaml::prefix::folding[trial-{trial}]",
        "blueprint": "b.yaml",
        "outcome": outcome,
        "estimates": {
            "LUT": lut,
            "estimated_throughput_fps": fps,
            "BRAM_18K": 1,
            "URAM": 0,
            "DSP": 0,
        },
        "folding": {
            "trial": trial,
            "objectives": [["minimize", "LUT"], ["maximize", "estimated_throughput_fps"]],
            "model": model,
        },
    }


def test_the_views_front_is_the_pareto_set_of_the_feasible_built_trials():
    trials = [
        record(0, 500, 100),
        record(1, 400, 100),  # beats trial 0
        record(2, 900, 1000),
        record(3, 300, 5000, outcome="skipped"),  # infeasible: never on the front
        record(4, 850, 900, delta=100),  # 950 corrected: beaten by trial 2
    ]
    objectives = views.objectives_of(trials)
    front = {r["folding"]["trial"] for r in views.front(trials, objectives)}
    assert front == {1, 2}
    assert views.corrected(trials[4], "LUT") == 950
    # the same records minimising the largest fraction of the part
    part = [["minimize", "part"], ["maximize", "estimated_throughput_fps"]]
    assert views.part_fraction(trials[2]) == pytest.approx(0.9)
    assert {r["folding"]["trial"] for r in views.front(trials, part)} == {1, 2}


def test_a_board_gives_its_part_without_the_toolchain():
    assert parts.part_of({"board": "ZCU104"}) == "xczu7ev-ffvc1156-2-e"
    assert parts.part_of({"fpga_part": "xc7z020clg400-1", "board": "ZCU104"}) == ("xc7z020clg400-1")
    assert parts.part_of({"board": "KV260_SOM"}) is None  # the toolchain knows it
