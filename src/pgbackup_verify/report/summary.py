"""The run's outcome in three forms: one line for cron mail / the journal, a JSON document
for machines, and the per-concern table that opens the HTML report (failing checks first).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from pgbackup_verify.config.concerns import CONCERNS
from pgbackup_verify.safefs import atomic_write

RANK = {"failed": 0, "error": 1, "skipped": 2, "passed": 3}
ROUTING_KEYS = ("target", "concern")  # user_properties set at collection, not evidence


def routing_properties(item: pytest.Item) -> list[tuple[str, str]]:
    """Target and concern of a check, carried on every report (and into JUnit) as properties."""
    callspec = getattr(item, "callspec", None)
    target = callspec.params.get("target") if callspec else None
    concern = next((m.name for m in item.iter_markers() if m.name in CONCERNS), "other")
    return [("target", getattr(target, "name", "")), ("concern", concern)]


@dataclass
class CheckResult:
    nodeid: str
    name: str
    target: str
    concern: str
    outcome: str  # passed, failed, error, skipped
    message: str
    evidence: list[tuple[str, str]]
    seconds: float
    label: str = ""  # the check as a phrase: "payload follows its recent trend [registry lock coverage]"
    detail: str = ""  # the whole finding when it spans lines (cause, listed objects, fix)


@dataclass
class RunSummary:
    started: float = field(default_factory=time.time)
    results: dict[str, CheckResult] = field(default_factory=dict)
    exit_status: int | None = None
    notes: list[str] = field(default_factory=list)  # e.g. Kuma push failures

    def record(self, rep: pytest.TestReport) -> None:
        """Fold one phase's report in; works on the xdist controller too (it sees reports, not items)."""
        outcome = rep.outcome if rep.when == "call" else ("error" if rep.failed else rep.outcome)
        if rep.when != "call" and rep.passed:
            return
        if rep.nodeid in self.results and RANK[self.results[rep.nodeid].outcome] <= RANK[outcome]:
            return  # keep the worst phase (a teardown error after a pass is still an error)
        props = dict(rep.user_properties)
        evidence = [(str(k), str(v)) for k, v in rep.user_properties if k not in ROUTING_KEYS]
        self.results[rep.nodeid] = CheckResult(
            nodeid=rep.nodeid, name=rep.nodeid.split("::")[-1].split("[")[0], target=str(props.get("target", "")),
            concern=str(props.get("concern", "other")), outcome=outcome, message=one_line(rep), evidence=evidence,
            seconds=round(rep.duration, 3), label=label(rep.nodeid, str(props.get("target", ""))),
            detail=failure_text(rep))

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(RANK, 0)
        for r in self.results.values():
            out[r.outcome] += 1
        return out

    def status(self) -> str:
        c = self.counts()
        if self.exit_status not in (0, None) or c["failed"] or c["error"] or not self.results:
            return "FAILED"
        return "OK"

    def line(self, report_path: str | None) -> str:
        c = self.counts()
        targets = ",".join(sorted({r.target for r in self.results.values() if r.target})) or "-"
        parts = [f"pgbackup-verify: {self.status()}", f"targets={targets}",
                 *(f"{k}={v}" for k, v in c.items()), f"exit={self.exit_status}",
                 f"seconds={time.time() - self.started:.1f}"]
        if report_path:
            parts.append(f"report={report_path}")
        return " ".join(parts)

    def to_json(self) -> str:
        doc = {"status": self.status(), "exit_status": self.exit_status, "counts": self.counts(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
               "seconds": round(time.time() - self.started, 3), "notes": self.notes,
               "checks": [asdict(r) for r in self.ordered()]}
        return json.dumps(doc, indent=2)

    def ordered(self) -> list[CheckResult]:
        return sorted(self.results.values(), key=lambda r: (RANK[r.outcome], r.target, r.concern, r.nodeid))

    def html(self, extra: str = "", targets: list[str] | None = None) -> str:
        """Per target and concern: status, the one-line cause, the evidence; failing concerns first."""
        from pgbackup_verify.report.html import render

        return render(self, CONCERNS, targets, extra)


class SummaryRecorder:
    """Registered in pytest_configure; on xdist the controller receives every worker's reports."""

    def __init__(self, summary: RunSummary) -> None:
        self.summary = summary

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if dict(report.user_properties).get("concern"):
            self.summary.record(report)


def label(nodeid: str, target: str) -> str:
    """`test_dump_role_has_usage[demo]` -> `dump role has usage`; other parameters stay in brackets."""
    name = nodeid.split("::")[-1]
    base, _, ident = name.partition("[")
    base = base.removeprefix("test_").replace("_", " ")
    ident = ident.removesuffix("]")
    if target and ident.startswith(target):
        ident = ident[len(target):].lstrip("-")
    return f"{base} [{ident}]" if ident else base


def failure_text(rep: pytest.TestReport, max_lines: int = 40) -> str:
    """The whole finding of a failed or skipped check (a multi-line one keeps its `fix:` line)."""
    if rep.passed:
        return ""
    if rep.skipped and isinstance(rep.longrepr, tuple):
        return str(rep.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(rep.longrepr, "reprcrash", None)
    text = (crash.message if crash is not None else str(rep.longrepr)).strip()
    for prefix in ("AssertionError: ", "Failed: ", "assert "):
        text = text.removeprefix(prefix)
    text = text.split("\nassert ")[0]  # the assertion's introspection is not part of the finding
    lines = text.splitlines()
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], f"... {len(lines) - max_lines} more lines in the results table below"]
    return "\n".join(lines) or rep.outcome


def one_line(rep: pytest.TestReport) -> str:
    return failure_text(rep).splitlines()[0] if not rep.passed else ""


def write_json(summary: RunSummary, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, summary.to_json())
