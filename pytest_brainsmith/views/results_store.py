"""The results store: every run's designs in an SQLite database, and the
``brainsmith-results`` command to query it (runs, best designs, compare two runs of a
blueprint, export to CSV/JSON, a Pareto plot).

Only the pytest controller writes (xdist workers never open it), and ``explore()``
(``core/composition.py`` opens it); each design is committed as its report arrives,
so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..core import metrics
from .records import KEY_METRICS, verification_cell

SCHEMA_VERSION = 1
#: SQL column of each key metric.
METRIC_COLUMNS = metrics.COLUMNS
_BETTER = {metric: better for metric, _title, better in KEY_METRICS}

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started TEXT NOT NULL,
    finished TEXT,
    host TEXT,
    args TEXT,
    finn_version TEXT,
    exitstatus INTEGER
);
CREATE TABLE IF NOT EXISTS designs (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    design TEXT NOT NULL,          -- the pytest node id
    blueprint TEXT NOT NULL,
    blueprint_name TEXT,
    choices TEXT NOT NULL,         -- JSON
    config TEXT NOT NULL,          -- JSON: the effective FINN config
    outcome TEXT NOT NULL,         -- passed | failed | skipped | error
    {", ".join(f"{column} REAL" for column in METRIC_COLUMNS.values())},
    estimates TEXT NOT NULL,       -- JSON: every reported estimate
    finn_seconds REAL,             -- FINN time of the design's segments (built now or before)
    wall_seconds REAL,             -- this test item's time in this run
    segments_built INTEGER,
    segments_reused INTEGER,
    segments_fetched INTEGER,      -- from the remote cache (--brainsmith-remote-cache)
    segments_pruned INTEGER,       -- not built because a gate stopped this design
    gate TEXT,                     -- expect | pareto | budget: the gate that stopped it
    folding TEXT,                  -- JSON: a folding search trial's folding (trial, file, nodes)
    cache_key TEXT,
    error TEXT,
    recorded TEXT NOT NULL,
    PRIMARY KEY (run_id, design)
);
CREATE INDEX IF NOT EXISTS designs_by_design ON designs (design);
CREATE TABLE IF NOT EXISTS baseline_checks (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    test TEXT NOT NULL,            -- the pytest node id (<blueprint>::baseline::front, gone[...])
    kind TEXT NOT NULL,            -- front | gone
    blueprint TEXT NOT NULL,
    blueprint_name TEXT,
    outcome TEXT NOT NULL,         -- passed | failed | skipped | error
    verdict TEXT,                  -- the front's: regressed | worse | improved | same
    hypervolume REAL,
    baseline_hypervolume REAL,
    source TEXT,                   -- where the baseline was read
    detail TEXT NOT NULL,          -- JSON: the whole result
    PRIMARY KEY (run_id, test)
);
"""


#: Columns added since version 1 (added to older stores when opened).
_ADDED_COLUMNS = {
    "segments_pruned": "INTEGER",
    "gate": "TEXT",
    "folding": "TEXT",
    "verification": "TEXT",  # passed | failed | skipped | not-run | off
    "verification_step": "TEXT",  # the last step verified, or the one it failed after
    "verification_detail": "TEXT",  # JSON: per step status, vectors differing, max |err|
    "segments_fetched": "INTEGER",
    "uram": "REAL",
    "baseline": "TEXT",  # against the baseline: regressed | worse | mixed | improved | same | new
    "baseline_detail": "TEXT",  # JSON: each metric's baseline, value, change, tolerance
    "equivalent_to": "TEXT",  # the design (node id) this one equals: a choice changed nothing
}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class ResultsStore:
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly  # read as it is: no schema written (a baseline's source)
        self._db: sqlite3.Connection | None = None

    def connect(self) -> sqlite3.Connection:
        if self._db is None and self.readonly:
            db = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True, timeout=60)
            db.row_factory = sqlite3.Row
            self._db = db
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60)
            db.row_factory = sqlite3.Row
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise RuntimeError(
                    f"{self.path}: results store has schema version {version}, "
                    f"this pytest-brainsmith writes version {SCHEMA_VERSION}; move the file away"
                )
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(designs)")}
            for column, kind in _ADDED_COLUMNS.items():  # a store written before them
                if column not in columns:
                    db.execute(f"ALTER TABLE designs ADD COLUMN {column} {kind}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.commit()
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- writing (pytest controller) -----------------------------------------------
    def start_run(self, run_id: str, args: Sequence[str], finn_version: str) -> None:
        db = self.connect()
        with db:
            db.execute(
                "INSERT OR IGNORE INTO runs (run_id, started, host, args, finn_version) "
                "VALUES (?, ?, ?, ?, ?)",
                (run_id, _now(), _host(), json.dumps(list(args)), finn_version),
            )

    def add_design(self, run_id: str, record: dict[str, Any], wall_seconds: float) -> None:
        estimates = record.get("estimates") or {}
        states = [s["status"] for s in record["segments"] if s["steps"]]
        values = {
            "run_id": run_id,
            "design": record["nodeid"],
            "blueprint": record["blueprint"],
            "blueprint_name": record.get("blueprint_name"),
            "choices": json.dumps(record.get("choices") or {}),
            "config": json.dumps(record.get("config") or {}, sort_keys=True),
            "outcome": record["outcome"],
            "estimates": json.dumps(estimates, sort_keys=True),
            "finn_seconds": record.get("finn_seconds"),
            "wall_seconds": round(wall_seconds, 3),
            "segments_built": states.count("built"),
            "segments_reused": states.count("reused"),
            "segments_fetched": states.count("fetched"),
            "segments_pruned": states.count("pruned"),
            "gate": record.get("gate")
            or next((s["gate"] for s in record["segments"] if s.get("gate")), None),
            "cache_key": record.get("cache_key"),
            "folding": json.dumps(record["folding"]) if record.get("folding") else None,
            "error": record.get("error"),
            "equivalent_to": record.get("equivalent_to"),
            "verification": verification_cell(record)[0],
            "verification_step": verification_cell(record)[1] or None,
            "verification_detail": json.dumps(record.get("verification") or {}, sort_keys=True),
            "baseline": (record.get("baseline") or {}).get("status"),
            "baseline_detail": json.dumps(record["baseline"]) if record.get("baseline") else None,
            "recorded": _now(),
        }
        for metric, column in METRIC_COLUMNS.items():
            value = estimates.get(metric)
            values[column] = value if isinstance(value, (int, float)) else None
        names = ", ".join(values)
        marks = ", ".join(f":{name}" for name in values)
        db = self.connect()
        with db:
            db.execute(f"INSERT OR REPLACE INTO designs ({names}) VALUES ({marks})", values)

    def add_check(self, run_id: str, check: dict[str, Any]) -> None:
        """A blueprint's item against its baseline (its front, a design gone)."""
        front = check.get("front") or {}
        values = {
            "run_id": run_id,
            "test": check["nodeid"],
            "kind": check["kind"],
            "blueprint": check["blueprint"],
            "blueprint_name": check.get("blueprint_name"),
            "outcome": check["outcome"],
            "verdict": front.get("verdict"),
            "hypervolume": front.get("hypervolume"),
            "baseline_hypervolume": front.get("baseline_hypervolume"),
            "source": check.get("source"),
            "detail": json.dumps(check, sort_keys=True),
        }
        names = ", ".join(values)
        marks = ", ".join(f":{name}" for name in values)
        db = self.connect()
        with db:
            db.execute(f"INSERT OR REPLACE INTO baseline_checks ({names}) VALUES ({marks})", values)

    def finish_run(self, run_id: str, exitstatus: int) -> None:
        db = self.connect()
        with db:
            db.execute(
                "UPDATE runs SET finished = ?, exitstatus = ? WHERE run_id = ?",
                (_now(), int(exitstatus), run_id),
            )

    # -- reading -------------------------------------------------------------------
    def runs(self) -> list[sqlite3.Row]:
        """Every run, oldest first, with its counts and the blueprints of its designs
        (``blueprints``: names, comma-separated)."""
        return (
            self.connect()
            .execute(
                "SELECT r.*, COUNT(d.design) AS designs, "
                "SUM(d.outcome = 'passed') AS passed, SUM(d.outcome = 'failed') AS failed, "
                "GROUP_CONCAT(DISTINCT COALESCE(d.blueprint_name, d.blueprint)) AS blueprints "
                "FROM runs r LEFT JOIN designs d USING (run_id) "
                "GROUP BY r.run_id ORDER BY r.started, r.rowid"
            )
            .fetchall()
        )

    def blueprints(self, run_id: str) -> set[str]:
        """The blueprints (by name) a run has designs of."""
        rows = self.connect().execute(
            "SELECT DISTINCT COALESCE(blueprint_name, blueprint) FROM designs WHERE run_id = ?",
            (run_id,),
        )
        return {row[0] for row in rows}

    def resolve_run(self, ref: str | None, *, offset: int = 0) -> str:
        """A run id from a prefix, or the latest run (``offset`` 1: the one before)."""
        runs = [r["run_id"] for r in self.runs() if r["designs"]]
        if ref:
            matches = [r for r in runs if r.startswith(ref)]
            if len(matches) != 1:
                raise LookupError(
                    f"run {ref!r}: {'no run' if not matches else 'several runs'} match"
                )
            return matches[0]
        if len(runs) <= offset:
            raise LookupError(f"{self.path} holds {len(runs)} run(s) with designs")
        return runs[-1 - offset]

    def designs(self, run_id: str, blueprint: str | None = None) -> list[sqlite3.Row]:
        query = "SELECT * FROM designs WHERE run_id = ?"
        params: list[Any] = [run_id]
        if blueprint:
            query += " AND (blueprint = ? OR blueprint_name = ?)"
            params += [blueprint, blueprint]
        return self.connect().execute(query + " ORDER BY design", params).fetchall()

    def best(
        self, run_id: str, metric: str, limit: int = 5, blueprint: str | None = None
    ) -> list[sqlite3.Row]:
        column = METRIC_COLUMNS[metric]
        order = "DESC" if _BETTER[metric] == "max" else "ASC"
        query = (
            f"SELECT * FROM designs WHERE run_id = ? AND outcome = 'passed' "
            f"AND {column} IS NOT NULL"
        )
        params: list[Any] = [run_id]
        if blueprint:
            query += " AND (blueprint = ? OR blueprint_name = ?)"
            params += [blueprint, blueprint]
        query += f" ORDER BY {column} {order}, design LIMIT ?"
        return self.connect().execute(query, [*params, limit]).fetchall()

    def runs_to_compare(
        self, old: str | None, new: str | None, blueprint: str | None = None
    ) -> tuple[str, str]:
        """(old, new) run ids: as named (prefixes), else the latest run (with designs of
        ``blueprint``, if given) and the latest run before it that explored one of the
        same blueprints. LookupError when there is none."""
        new_id = self.resolve_run(new) if new else self._latest(blueprint, before=None)
        if old:
            return self.resolve_run(old), new_id
        wanted = {blueprint} if blueprint else self.blueprints(new_id)
        return self._latest(blueprint, before=new_id, among=wanted), new_id

    def _latest(
        self, blueprint: str | None, before: str | None, among: set[str] | None = None
    ) -> str:
        runs = [r["run_id"] for r in self.runs() if r["designs"]]
        if before is not None:
            runs = runs[: runs.index(before)]
        for run_id in reversed(runs):
            names = self.blueprints(run_id)
            if blueprint and blueprint not in names and not self.designs(run_id, blueprint):
                continue
            if among is not None and not names & among:
                continue
            return run_id
        if before is not None:
            what = ", ".join(sorted(among or ())) or "any blueprint"
            raise LookupError(f"no run before {before[:12]} explored {what}: nothing to compare")
        raise LookupError(
            f"{self.path} holds no run"
            + (f" with designs of {blueprint!r}" if blueprint else " with designs")
        )

    def compare(
        self, old: str, new: str, blueprint: str | None = None
    ) -> Iterator[tuple[str, str, str]]:
        """(design, what changed, how) for every design of a blueprint both runs
        explored that differs between them. Designs match by blueprint and choices (a
        node id moves with the tree's segments; another blueprint's design is never the
        same design); blueprints only one run explored are not compared."""
        from ..core.regression.baseline import identity

        def keyed(run_id: str) -> dict[tuple[str, str], sqlite3.Row]:
            return {
                (_blueprint(row), identity(json.loads(row["choices"]))): row
                for row in self.designs(run_id, blueprint)
            }

        before, after = keyed(old), keyed(new)
        shared = {k[0] for k in before} & {k[0] for k in after}
        for key in sorted((before.keys() | after.keys()), key=lambda k: k):
            if key[0] not in shared:
                continue
            a, b = before.get(key), after.get(key)
            if a is None:
                yield b["design"], "new", b["outcome"]  # type: ignore[index]
                continue
            if b is None:
                yield a["design"], "gone", a["outcome"]
                continue
            design = b["design"]
            if a["outcome"] != b["outcome"]:
                yield design, "outcome", f"{a['outcome']} -> {b['outcome']}"
            for metric, column in METRIC_COLUMNS.items():
                x, y = a[column], b[column]
                if x == y or x is None or y is None:
                    continue
                improved = (y > x) == (_BETTER[metric] == "max")
                change = f"{x:,.4g} -> {y:,.4g} ({(y - x) / x * 100 if x else 0:+.1f}%)"
                yield design, metric, f"{'better' if improved else 'worse'}: {change}"


def _blueprint(row: sqlite3.Row) -> str:
    return row["blueprint_name"] or row["blueprint"]


def _host() -> str:
    import os

    return os.uname().nodename


def row_dict(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    for name in ("choices", "config", "estimates"):
        data[name] = json.loads(data[name])
    return data


# -- the brainsmith-results command ----------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brainsmith-results",
        description="Query the results store that `pytest blueprints/` writes.",
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=Path("build/brainsmith/results.sqlite"),
        help="the store (default: build/brainsmith/results.sqlite, as pytest writes it)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("runs", help="list the runs")
    best = sub.add_parser("best", help="the best designs of a run per objective")
    best.add_argument("--run", help="run id or prefix (default: the latest)")
    best.add_argument("--metric", choices=list(METRIC_COLUMNS), help="one objective (default: all)")
    best.add_argument("--blueprint", help="only this blueprint (path or name)")
    best.add_argument("-n", "--limit", type=int, default=3)
    compare = sub.add_parser(
        "compare",
        help="what got better or worse between two runs, design by design (matched by "
        "blueprint and choices; only blueprints both runs explored)",
    )
    compare.add_argument(
        "old",
        nargs="?",
        help="run id or prefix (default: the latest run before NEW that explored one of "
        "its blueprints)",
    )
    compare.add_argument("new", nargs="?", help="run id or prefix (default: the latest)")
    compare.add_argument("--blueprint", help="only this blueprint (path or name)")
    plot = sub.add_parser(
        "plot", help="a run's designs as a Pareto plot, PNG, SVG or PDF (needs matplotlib)"
    )
    plot.add_argument("--run", help="run id or prefix (default: the latest)")
    plot.add_argument("--blueprint", help="only this blueprint (path or name)")
    plot.add_argument("-x", choices=list(METRIC_COLUMNS), default="LUT", help="(default LUT)")
    plot.add_argument(
        "-y",
        choices=list(METRIC_COLUMNS),
        default="estimated_throughput_fps",
        help="(default estimated_throughput_fps)",
    )
    plot.add_argument(
        "-o", "--output", type=Path, required=True, help="the image: .png, .svg or .pdf"
    )
    export = sub.add_parser("export", help="a run's designs as CSV or JSON")
    export.add_argument("--run", help="run id or prefix (default: the latest)")
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    export.add_argument("-o", "--output", type=Path, help="file (default: standard output)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.db.is_file():
        print(
            f"brainsmith-results: no results store at {args.db} (run pytest first, or --db)",
            file=sys.stderr,
        )
        return 2
    store = ResultsStore(args.db)
    try:
        return _run(store, args)
    except LookupError as exc:
        print(f"brainsmith-results: {exc.args[0]}", file=sys.stderr)
        return 2
    finally:
        store.close()


def _run(store: ResultsStore, args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.command == "runs":
        for run in store.runs():
            blueprints = ", ".join(sorted((run["blueprints"] or "").split(","))) or "-"
            args_given = json.loads(run["args"] or "[]")
            by = "explore()" if args_given[:1] == ["explore()"] else "pytest"
            out.write(
                f"{run['run_id'][:12]}  {run['started']}  {run['designs']:>5} designs  "
                f"{run['passed'] or 0} passed  {run['failed'] or 0} failed  "
                f"exit {run['exitstatus'] if run['exitstatus'] is not None else '?'}  "
                f"{by}: {blueprints}\n"
            )
    elif args.command == "best":
        run_id = store.resolve_run(args.run)
        for metric in [args.metric] if args.metric else list(METRIC_COLUMNS):
            rows = store.best(run_id, metric, args.limit, args.blueprint)
            out.write(f"{metric} ({'higher' if _BETTER[metric] == 'max' else 'lower'} is better)\n")
            for row in rows:
                out.write(f"  {row[METRIC_COLUMNS[metric]]:>14,.6g}  {row['design']}\n")
    elif args.command == "compare":
        old, new = store.runs_to_compare(args.old, args.new, args.blueprint)
        shared = store.blueprints(old) & store.blueprints(new)
        if args.blueprint:
            shared = {b for b in shared if b == args.blueprint} or shared
        if not shared:
            raise LookupError(
                f"runs {old[:12]} ({', '.join(sorted(store.blueprints(old)))}) and {new[:12]} "
                f"({', '.join(sorted(store.blueprints(new)))}) explored no blueprint in common: "
                "nothing to compare"
            )
        out.write(f"comparing run {old[:12]} -> {new[:12]} ({', '.join(sorted(shared))})\n")
        changes = list(store.compare(old, new, args.blueprint))
        for design, what, how in changes:
            out.write(f"  {design}\n      {what}: {how}\n")
        out.write(f"{len(changes)} change(s)\n")
    elif args.command == "plot":
        return _plot(store, args)
    elif args.command == "export":
        run_id = store.resolve_run(args.run)
        rows = [row_dict(row) for row in store.designs(run_id)]
        target = args.output.open("w", newline="") if args.output else out
        try:
            if args.format == "json":
                json.dump(rows, target, indent=2)
                target.write("\n")
            else:
                _write_csv(rows, target)
        finally:
            if args.output:
                target.close()
    return 0


def _plot(store: ResultsStore, args: argparse.Namespace) -> int:
    """The run's designs on two metrics, each blueprint a colour, the Pareto front drawn."""
    from . import pareto

    suffix = args.output.suffix.lower()
    if suffix not in (".png", ".svg", ".pdf"):
        raise LookupError(f"plot: {args.output}: expected a .png, .svg or .pdf file name")
    run_id = store.resolve_run(args.run)
    records = [
        {**row, "blueprint_name": _blueprint(row)}
        for row in (row_dict(r) for r in store.designs(run_id, args.blueprint))
    ]
    try:
        figure = pareto.pareto_figure(records, args.x, args.y)
    except pareto.PlotUnavailable as exc:
        print(f"brainsmith-results plot: {exc}", file=sys.stderr)
        return 2
    if figure is None:
        raise LookupError(
            f"run {run_id[:12]} has no design that reports both {args.x} and {args.y}"
        )
    figure.tight_layout()
    figure.savefig(args.output)
    plotted = len(pareto.plotted(records, args.x, args.y))
    sys.stdout.write(f"wrote {args.output}: {plotted} designs of run {run_id[:12]}\n")
    return 0


def _write_csv(rows: list[dict[str, Any]], target: Any) -> None:
    choice_names = sorted({name for row in rows for name in row["choices"]})
    fixed = [
        "design",
        "blueprint",
        "outcome",
        *METRIC_COLUMNS.values(),
        "finn_seconds",
        "wall_seconds",
        "segments_built",
        "segments_reused",
        "segments_fetched",
        "cache_key",
    ]
    writer = csv.writer(target)
    writer.writerow([*fixed, *(f"choice.{name}" for name in choice_names)])
    for row in rows:
        writer.writerow(
            [
                *(row[name] for name in fixed),
                *(row["choices"].get(name, "") for name in choice_names),
            ]
        )


if __name__ == "__main__":
    sys.exit(main())
