"""The pytest controller's view of a run: gathers every design's record from its
reports (whichever process ran it), writes the results store as they arrive,
exports the execution trees and prints the terminal summary."""

from __future__ import annotations

import fnmatch
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ..core.progress import process_alive, status_files
from ..core.tree import dot_from_dict
from ..finn import catalog as finn_catalog
from . import baseline, folding
from .records import (
    KEY_METRICS,
    best_designs,
    equivalence_line,
    gates_line,
    group_by_blueprint,
    lost_record,
    outcomes_line,
    segment_counts,
    sharing,
    short_id,
    tree_from_records,
    verification_line,
)
from .results_store import ResultsStore


def _outcome(report: pytest.TestReport) -> str | None:
    """The design's outcome from the report that carries its record."""
    if report.when == "call":
        return report.outcome
    if report.when == "setup":
        return {"skipped": "skipped", "failed": "error"}.get(report.outcome)
    return None


def _cause(report: pytest.TestReport) -> str:
    """A failure in one line: the exception pytest shows, or the first line of its text
    (xdist's "worker 'gw0' crashed while running ...")."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and crash.message:
        text = crash.message.strip().splitlines()[0]
    else:
        text = (str(report.longrepr or "").strip().splitlines() or ["no report"])[0]
    return f"error in {report.when}: {text}" if report.when in ("setup", "teardown") else text


class RunRecorder:
    """Controller-only plugin (registered once, never in an xdist worker)."""

    def __init__(
        self,
        config: pytest.Config,
        run_id: str,
        store: ResultsStore | None,
        tree_dir: Path | None,
        export_foldings: Callable[[list[dict[str, Any]]], dict[str, list[Path]]] | None = None,
        running_dir: Path | None = None,
    ) -> None:
        self.config = config
        #: writes the Pareto fronts of folding searches (FINN folding JSON) from records:
        #: the plugin's, so that this view only reads
        self.export_foldings = export_foldings
        #: where builds in progress leave their status files (the cache's ``running``)
        self.running_dir = running_dir
        self.foldings_written: dict[str, list[Path]] = {}
        self.run_id = run_id
        self.store = store
        self.tree_dir = tree_dir
        self.records: dict[str, dict[str, Any]] = {}
        #: records sent with a design's setup, until its outcome arrives: all that is
        #: known of a design whose worker dies while it runs
        self.started: dict[str, dict[str, Any]] = {}
        self.run_started = time.time()
        self._run_started = False
        self.store_error: str | None = None
        self.trees_written: list[Path] = []
        self.tree_error: str | None = None
        self.record_errors: list[str] = []  # reports whose design could not be recorded
        #: each blueprint item's result against its baseline (``front``, ``gone[...]``)
        self.checks: dict[str, dict[str, Any]] = {}

    def ordered_records(self) -> list[dict[str, Any]]:
        """The designs in tree order (xdist delivers them in completion order)."""
        return sorted(self.records.values(), key=lambda r: (r["blueprint"], r.get("order", 0)))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        try:
            self._record(report)
        except Exception as exc:  # a view must never end the session
            self.record_errors.append(f"{report.nodeid}: {type(exc).__name__}: {exc}")

    def _record(self, report: pytest.TestReport) -> None:
        check = getattr(report, "brainsmith_baseline", None)
        if check is not None:  # a blueprint against its baseline, not a design
            self._check(report, check)
            return
        record = getattr(report, "brainsmith", None)
        if report.when == "setup" and report.passed:
            if record is not None:
                self.started[report.nodeid] = record
            return
        outcome = _outcome(report)
        if record is None or outcome is None:
            record = self._lost(report)
            if record is None:
                return
            report.brainsmith = record  # for the html row (html_report.py)
            lost = record.get("lost")
            if lost and lost != "no record" and isinstance(report.longrepr, str):
                report.longrepr += f"\nbrainsmith: {lost}"  # in FAILURES too
            outcome = record["outcome"]
        self.started.pop(report.nodeid, None)
        record["outcome"] = outcome
        if outcome == "skipped" and isinstance(report.longrepr, tuple):
            record["error"] = str(report.longrepr[2]).removeprefix("Skipped: ")
        self.records[report.nodeid] = record
        self._store(record, report.duration)

    def _check(self, report: pytest.TestReport, check: dict[str, Any]) -> None:
        outcome = _outcome(report)
        if outcome is None:
            return
        self.checks[report.nodeid] = {**check, "outcome": outcome}
        if self.store is not None and not self.store_error:
            try:
                self._start_store()
                self.store.add_check(self.run_id, self.checks[report.nodeid])
            except Exception as exc:
                self.store_error = f"{type(exc).__name__}: {exc}"

    def _lost(self, report: pytest.TestReport) -> dict[str, Any] | None:
        """A failure pytest counts for a design that sent no record with it: its worker
        died mid-design (xdist reports ``when='???'``), or its teardown failed. The design
        keeps its place in every view, with what is known of the cause."""
        if not report.failed or not self._is_design(report.nodeid):
            return None
        cause = _cause(report)
        earlier = self.records.get(report.nodeid)
        if earlier is not None:  # a teardown error or a crash after the design reported
            if earlier.get("outcome") != "passed":
                return None
            return {**earlier, "outcome": "error", "error": cause}
        known = self.started.get(report.nodeid)
        outcome = "error" if report.when in ("setup", "teardown") else "failed"
        return lost_record(report.nodeid, outcome, cause, known, self._building(report, known))

    def _is_design(self, nodeid: str) -> bool:
        if nodeid in self.started:
            return True
        path, sep, _ = nodeid.partition("::")
        patterns = self.config.getini("brainsmith_blueprints")
        return bool(sep) and any(fnmatch.fnmatch(Path(path).name, p) for p in patterns)

    def _building(
        self, report: pytest.TestReport, known: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The segment of this design whose build was abandoned in this run (the status
        file a dead process left behind), deepest first."""
        if report.when != "???":  # only a process that died leaves one behind
            return None
        try:
            running_dir = self.running_dir
            left = abandoned(running_dir, self.run_started) if running_dir else []
        except Exception:  # only a detail of the cause
            return None
        paths = {seg["path"] for seg in (known or {}).get("segments", [])}
        blueprint, _, rest = report.nodeid.partition("::")
        label = "::".join([Path(blueprint).name, rest])
        mine = [
            e
            for e in left
            if e.get("segment") in paths
            or label.startswith(f"{e.get('segment')}::")
            or label == e.get("segment")
        ]
        return max(mine, key=lambda e: len(str(e.get("segment")))) if mine else None

    def _store(self, record: dict[str, Any], seconds: float) -> None:
        if self.store is None or self.store_error:
            return
        try:
            self._start_store()
            self.store.add_design(self.run_id, record, seconds)
        except Exception as exc:  # the store must never cost the run its results
            self.store_error = f"{type(exc).__name__}: {exc}"

    def _start_store(self) -> None:
        if self.store is not None and not self._run_started:
            self.store.start_run(
                self.run_id, self.config.invocation_params.args, finn_catalog.FINN_VERSION
            )
            self._run_started = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        interrupted = int(exitstatus) == pytest.ExitCode.INTERRUPTED
        if self.store is not None and not self._run_started and not self.store_error:
            if interrupted and (self.started or session.items):  # a run row all the same
                try:
                    self.store.start_run(
                        self.run_id, self.config.invocation_params.args, finn_catalog.FINN_VERSION
                    )
                    self._run_started = True
                except Exception as exc:
                    self.store_error = f"{type(exc).__name__}: {exc}"
        if self.store is not None and self._run_started and not self.store_error:
            try:
                self.store.finish_run(self.run_id, int(exitstatus))
            except Exception as exc:
                self.store_error = f"{type(exc).__name__}: {exc}"
        if self.store is not None:
            self.store.close()
        if self.tree_dir is not None and self.records:
            try:
                self.export_trees(self.tree_dir)
            except OSError as exc:  # an unwritable directory must not end the session
                self.tree_error = f"{self.tree_dir}: {exc}"
        if self.export_foldings is not None and self.records:
            try:
                self.foldings_written = self.export_foldings(self.ordered_records())
            except (OSError, ValueError) as exc:
                self.record_errors.append(f"folding JSON files not written: {exc}")

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

    def built_segments(self) -> int:
        """Distinct segments built in this run for the designs that reported."""
        return segment_counts(self.ordered_records()).get("built", 0)

    def summary_lines(self, *, interrupted: bool = False) -> list[str]:
        records = self.ordered_records()
        if not records and not interrupted:
            return baseline.summary_lines([], self.checks.values())
        counts = segment_counts(records)
        executed, naive = sharing(records)
        saved = f" ({100 * (1 - executed / naive):.0f}% saved by sharing)" if naive else ""
        designs = outcomes_line(records)
        if interrupted:
            designs += f"; interrupted: {len(self.started)} started and not reported"
        lines = [
            designs,
            "segments: "
            + ", ".join(
                f"{counts.get(state, 0)} {state}"
                for state in ("built", "fetched", "reused", "failed", "failed-before")
                if state != "fetched" or counts.get(state)  # only once something was fetched
            )
            + (f", {counts['pruned']} pruned" if counts.get("pruned") else "")
            + (
                f", {counts['error']} lost (the machine's fault: not recorded, built again "
                "next run)"
                if counts.get("error")
                else ""
            ),
        ]
        if records:
            lines.append(
                f"FINN steps: {executed} for {len(records)} designs instead of {naive}{saved}"
            )
        gates = gates_line(records)
        if gates:
            lines.append(gates)
        same = equivalence_line(records)
        if same:
            lines.append(same)
        verified = verification_line(records)
        if verified:
            lines.append(verified)
        titles = {metric: title for metric, title, _ in KEY_METRICS}
        for metric, record, value in best_designs(records):
            lines.append(f"best {titles[metric]}: {value:,.6g}  {short_id(record)}")
        lines += folding.summary_lines(records, self.foldings_written)
        lines += baseline.summary_lines(records, self.checks.values())
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
        if self.tree_error:
            lines.append(f"trees NOT written: {self.tree_error}")
        for error in self.record_errors:
            lines.append(f"design NOT recorded: {error}")
        return lines


def abandoned(running_dir: Path, since: float = 0.0) -> list[dict[str, Any]]:
    """Builds started on this host since ``since`` whose process died without finishing:
    their live status file (``<cache>/v1/running/<key>.json``) is left behind. What a
    crashed worker was doing, oldest first."""
    return [
        entry
        for entry in status_files(running_dir)
        if entry.get("host") == os.uname().nodename
        and entry.get("started", 0) >= since
        and not process_alive(entry.get("pid"))
    ]
