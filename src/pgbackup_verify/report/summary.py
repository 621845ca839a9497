"""The run's outcome in three forms: one line for cron mail / the journal, a JSON document
for machines, and the per-concern table that opens the HTML report (failing checks first).

All three read one fold (pgbackup_verify.outcome); the Recorder here feeds it from pytest's hooks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator
from pathlib import Path

import pytest

from pgbackup_verify import outcome
from pgbackup_verify.config.concerns import CONCERNS
from pgbackup_verify.outcome import RANK, ROUTING_ATTR, ROUTING_KEYS, CheckResult, Routing, RunFold, failure_text, label
from pgbackup_verify.safefs import atomic_write

__all__ = ["RANK", "ROUTING_KEYS", "CheckResult", "Recorder", "RunSummary", "failure_text", "label", "recorder",
           "routing", "routing_properties", "write_json"]

RECORDER = "pgbackup-verify-outcome"


def routing(item: pytest.Item) -> Routing:
    """Target, concern and markers of a check: where its outcome counts (report, target, Kuma)."""
    callspec = getattr(item, "callspec", None)
    target = callspec.params.get("target") if callspec else None
    concern = next((m.name for m in item.iter_markers() if m.name in CONCERNS), "other")  # the nearest wins
    return {"target": str(getattr(target, "name", "") or ""), "concern": concern,
            "markers": sorted({m.name for m in item.iter_markers()})}


def routing_properties(item: pytest.Item) -> list[tuple[str, str]]:
    """Target and concern of a check, carried on every report (and into JUnit) as properties."""
    r = routing(item)
    return [("target", r["target"]), ("concern", r["concern"])]


class RunSummary:
    """The run as reported: its fold, when it started, its exit status and notes to show."""

    def __init__(self, started: float | None = None, fold: RunFold | None = None) -> None:
        self.started = time.time() if started is None else started
        self.fold = fold or RunFold()
        self.exit_status: int | None = None  # the process's exit status (pytest's, a user error's, Kuma's)
        self.notes: list[str] = []  # e.g. why the run was aborted, Kuma push failures, history not written

    @property
    def results(self) -> dict[str, CheckResult]:
        return self.fold.checks

    @results.setter
    def results(self, value: dict[str, CheckResult]) -> None:
        self.fold.checks = value

    def finish(self, pytest_exit: int, exit_status: int) -> None:
        """At session finish: fix the run's end and say in a note why it has no full verdict."""
        self.fold.finish(pytest_exit)
        self.exit_status = exit_status
        note = outcome.run_note(self.fold)
        if note and note not in self.notes:
            self.notes.insert(0, note)

    def counts(self) -> dict[str, int]:
        return self.fold.counts()

    def status(self) -> str:
        return self.fold.status()

    def line(self, report_path: str | None) -> str:
        c = self.counts()
        targets = ",".join(self.fold.targets()) or "-"
        shown = [k for k in c if k != outcome.NOT_RUN or c[k]]
        parts = [f"pgbackup-verify: {self.status()}", f"targets={targets}",
                 *(f"{k.replace(' ', '_')}={c[k]}" for k in shown), f"exit={self.exit_status}",
                 f"seconds={time.time() - self.started:.1f}"]
        if report_path:
            parts.append(f"report={report_path}")
        abort = self.fold.abort()
        if abort:
            parts.append(f"abort={json.dumps(abort)}")
        return " ".join(parts)

    def to_json(self) -> str:
        doc = {"status": self.status(), "exit_status": self.exit_status, "abort": self.fold.abort(),
               "counts": self.counts(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
               "seconds": round(time.time() - self.started, 3), "notes": self.notes,
               "checks": [r.as_dict() for r in self.ordered(with_not_run=True)]}
        return json.dumps(doc, indent=2)

    def ordered(self, with_not_run: bool = False) -> list[CheckResult]:
        """Checks worst first; the ones that never reported are left to the notes unless asked for."""
        return sorted((r for r in self.results.values() if with_not_run or r.outcome != outcome.NOT_RUN),
                      key=lambda r: (RANK[r.outcome], r.target, r.concern, r.nodeid))

    def html(self, extra: str = "", targets: list[str] | None = None) -> str:
        """Per target and concern: status, the one-line cause, the evidence; failing concerns first."""
        from pgbackup_verify.report.html import render

        return render(self, CONCERNS, targets, extra)


class Recorder:
    """Feeds the run's one fold: registered once per pytest run (the core plugin and the Kuma plugin
    both ask for it); on xdist the controller receives every worker's reports, stamped with routing."""

    def __init__(self) -> None:
        self.summary = RunSummary()

    @property
    def fold(self) -> RunFold:
        return self.summary.fold

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        rep = yield
        setattr(rep, ROUTING_ATTR, routing(item))  # survives xdist: the controller routes like one process
        return rep

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            r = routing(item)
            self.fold.select(item.nodeid, r["target"], r["concern"], r["markers"])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: object, ids: list[str]) -> None:
        """xdist controller: the selected checks, so one that never reports is `not run`, not unseen."""
        for nodeid in ids:
            self.fold.select(nodeid)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self.fold.record_collection(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.fold.record(report)


def recorder(config: pytest.Config) -> Recorder:
    """The run's recorder, registering it on first use."""
    plugin = config.pluginmanager.get_plugin(RECORDER)
    if plugin is None:
        plugin = Recorder()
        config.pluginmanager.register(plugin, RECORDER)
    assert isinstance(plugin, Recorder)
    return plugin


def write_json(summary: RunSummary, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, summary.to_json())
