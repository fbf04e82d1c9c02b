"""The pytest controller's view of a run: gathers every design's record from its
reports (whichever process ran it), writes the results store as they arrive,
exports the execution trees and prints the terminal summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ..core.tree import dot_from_dict
from ..finn import catalog as finn_catalog
from .records import (
    KEY_METRICS,
    best_designs,
    gates_line,
    group_by_blueprint,
    outcomes_line,
    segment_counts,
    sharing,
    short_id,
    tree_from_records,
)
from .results_store import ResultsStore


def _outcome(report: pytest.TestReport) -> str | None:
    """The design's outcome from the report that carries its record."""
    if report.when == "call":
        return report.outcome
    if report.when == "setup":
        return {"skipped": "skipped", "failed": "error"}.get(report.outcome)
    return None


class RunRecorder:
    """Controller-only plugin (registered once, never in an xdist worker)."""

    def __init__(
        self,
        config: pytest.Config,
        run_id: str,
        store: ResultsStore | None,
        tree_dir: Path | None,
    ) -> None:
        self.config = config
        self.run_id = run_id
        self.store = store
        self.tree_dir = tree_dir
        self.records: dict[str, dict[str, Any]] = {}
        self._run_started = False
        self.store_error: str | None = None
        self.trees_written: list[Path] = []

    def ordered_records(self) -> list[dict[str, Any]]:
        """The designs in tree order (xdist delivers them in completion order)."""
        return sorted(self.records.values(), key=lambda r: (r["blueprint"], r.get("order", 0)))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = getattr(report, "brainsmith", None)
        outcome = _outcome(report)
        if record is None or outcome is None:
            return
        record["outcome"] = outcome
        if outcome == "skipped" and isinstance(report.longrepr, tuple):
            record["error"] = str(report.longrepr[2]).removeprefix("Skipped: ")
        self.records[report.nodeid] = record
        self._store(record, report.duration)

    def _store(self, record: dict[str, Any], seconds: float) -> None:
        if self.store is None or self.store_error:
            return
        try:
            if not self._run_started:
                self.store.start_run(
                    self.run_id, self.config.invocation_params.args, finn_catalog.FINN_VERSION
                )
                self._run_started = True
            self.store.add_design(self.run_id, record, seconds)
        except Exception as exc:  # the store must never cost the run its results
            self.store_error = f"{type(exc).__name__}: {exc}"

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.store is not None and self._run_started and not self.store_error:
            try:
                self.store.finish_run(self.run_id, int(exitstatus))
            except Exception as exc:
                self.store_error = f"{type(exc).__name__}: {exc}"
        if self.store is not None:
            self.store.close()
        if self.tree_dir is not None and self.records:
            self.export_trees(self.tree_dir)

    def export_trees(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for blueprint, records in group_by_blueprint(self.ordered_records()).items():
            tree = tree_from_records(blueprint, records)
            stem = Path(blueprint).name.removesuffix(".yaml").removesuffix(".yml")
            for suffix, text in (
                (".tree.json", json.dumps(tree, indent=2)),
                (".tree.dot", dot_from_dict(tree)),
            ):
                path = directory / f"{stem}{suffix}"
                path.write_text(text)
                written.append(path)
        self.trees_written = written
        return written

    def summary_lines(self) -> list[str]:
        records = self.ordered_records()
        if not records:
            return []
        counts = segment_counts(records)
        executed, naive = sharing(records)
        saved = f" ({100 * (1 - executed / naive):.0f}% saved by sharing)" if naive else ""
        lines = [
            outcomes_line(records),
            "segments: "
            + ", ".join(
                f"{counts.get(state, 0)} {state}"
                for state in ("built", "reused", "failed", "failed-before")
            )
            + (f", {counts['pruned']} pruned" if counts.get("pruned") else ""),
            f"FINN steps: {executed} for {len(records)} designs instead of {naive}{saved}",
        ]
        gates = gates_line(records)
        if gates:
            lines.append(gates)
        titles = {metric: title for metric, title, _ in KEY_METRICS}
        for metric, record, value in best_designs(records):
            lines.append(f"best {titles[metric]}: {value:,.6g}  {short_id(record)}")
        if self.store is not None:
            if self.store_error:
                lines.append(f"results store {self.store.path} NOT written: {self.store_error}")
            else:
                lines.append(
                    f"results: {self.store.path} (run {self.run_id[:12]}; "
                    "`brainsmith-results best|compare|export`)"
                )
        for path in self.trees_written:
            if path.suffix == ".dot":
                lines.append(f"tree: {path} (+ .json)")
        return lines
