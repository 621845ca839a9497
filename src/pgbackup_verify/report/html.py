"""The summary that opens the HTML report, in the style of the seed's monitor list: one line per
target and concern with its status, the one-line cause and the evidence; failing checks first,
each with its fix statement in a code block and a copy button.

`summary_data` turns a RunSummary into plain data for the template (like pytest-html's
report_data.py); templates/summary.html.j2 draws it, with report.css and report.js inlined.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pgbackup_verify.outcome import (
    NOT_CONFIGURED_STATUS,
    NOT_JUDGED,
    NOT_JUDGED_STATUS,
    PARTLY_STATUS,
    cause_rank,
    concern_status,
    judged_text,
)
from pgbackup_verify.report.figures import concern_rows
from pgbackup_verify.report.render import render_text
from pgbackup_verify.report.wording import IN_SHORT

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pgbackup_verify.outcome import CheckResult
    from pgbackup_verify.report.summary import RunSummary

# A not-judged concern is part of the failure's chain: it stands with the failed ones, in the order of cause.
STATUS_RANK = {"FAILED": 0, NOT_JUDGED_STATUS: 0, "SKIPPED": 1, PARTLY_STATUS: 2, "OK": 3, NOT_CONFIGURED_STATUS: 4}

FIX = re.compile(r"(?:;|\n)[ \t]*fix(?: \(([^)\n]*)\))?: ")


def split_message(message: str) -> tuple[str, str, str]:
    """`<name>: FAILED (<measured> vs <limit>); fix (as <who>): <statement>` -> (cause, statement, who).

    The statement is the rest of the fix line; lines after it (listed objects) belong to the cause.
    """
    m = FIX.search(message)
    if m is None:
        return message.strip(), "", ""
    fix, _, after = message[m.end():].partition("\n")
    cause = message[:m.start()].rstrip() + ("\n" + after.rstrip() if after.strip() else "")
    return cause.strip(), fix.strip(), (m.group(1) or "").strip()


@dataclass(frozen=True)
class FailedCheck:
    """A failed or errored check: its finding split into cause and the fix to copy."""

    nodeid: str
    outcome: str  # failed or error
    title: str
    cause: str
    fix: str  # empty: the finding names no fix
    who: str  # who runs the fix ("workflow_admin or a superuser"); empty: anyone
    evidence: list[tuple[str, str]]


@dataclass(frozen=True)
class SkippedCheck:
    nodeid: str
    title: str
    reason: str


@dataclass(frozen=True)
class ConcernBlock:
    """One target's concern: a line with its status; the failing checks in full, else one evidence line."""

    target: str
    concern: str
    description: str
    status: str  # FAILED, NOT JUDGED, SKIPPED (every check skipped), PARTLY CHECKED, OK or NOT CONFIGURED
    count: str
    failed: list[FailedCheck]
    skipped: list[SkippedCheck]
    evidence_rows: list[tuple[str, str]]  # only for a concern without failures: named values, each once


@dataclass(frozen=True)
class Unchecked:
    target: str
    concerns: list[str]


@dataclass(frozen=True)
class SummaryData:
    status: str  # FAILED or OK
    when: str
    failed: int  # failed and errored checks
    passed: int
    skipped: int
    targets: list[str]
    notes: list[str]
    blocks: list[ConcernBlock]  # failing first, then all-skipped, then healthy
    unchecked: list[Unchecked]


def failed_check(r: CheckResult) -> FailedCheck:
    cause, fix, who = split_message(r.detail or r.message)
    # What the block already says above its table (the finding in short, the fix to copy) is not repeated.
    shown = {IN_SHORT} | ({"fix"} if fix else set())
    return FailedCheck(nodeid=r.nodeid, outcome=r.outcome, title=r.label or r.name, cause=cause or r.outcome,
                       fix=fix, who=who.removeprefix("as "), evidence=[e for e in r.evidence if e[0] not in shown])


def skipped_checks(rs: list[CheckResult]) -> list[SkippedCheck]:
    """Skipped checks, those with the same reason on one line (five checks not judged for one finding)."""
    by_reason: dict[str, list[CheckResult]] = {}
    for r in rs:
        by_reason.setdefault(r.message, []).append(r)
    return [SkippedCheck(nodeid=same[0].nodeid, title=", ".join(r.label or r.name for r in same), reason=reason)
            for reason, same in by_reason.items()]


def concern_block(target: str, concern: str, description: str, rs: list[CheckResult]) -> ConcernBlock:
    bad = [r for r in rs if r.outcome in ("failed", "error")]
    skipped = [r for r in rs if r.outcome == "skipped"]
    status = concern_status((r.outcome for r in rs), [r.kind for r in rs])
    unjudged = sum(r.kind == NOT_JUDGED for r in rs)
    others = len(skipped) - unjudged
    unjudged_text = f", {unjudged} not judged (an upstream check failed)" if unjudged else ""
    why = (f", {others} skipped" if others else "") + unjudged_text
    if bad:
        count = f"{len(bad)} of {len(rs)} checks failed{unjudged_text}"
        evidence_rows = []
    else:
        count = f"{len(rs) - len(skipped)} of {len(rs)} checks passed{why}"
        if status == PARTLY_STATUS:
            count = f"partly checked ({judged_text(rs)}): {count}"
        # A healthy concern stays a few rows, like the seed's "latest success OK size=64M".
        evidence_rows = concern_rows(r.evidence for r in rs if r.outcome == "passed")
    return ConcernBlock(
        target=target, concern=concern, description=description, status=status, count=count,
        failed=[failed_check(r) for r in bad], evidence_rows=evidence_rows,
        skipped=skipped_checks(skipped))


def summary_data(run: RunSummary, concerns: Mapping[str, str], targets: list[str] | None = None) -> SummaryData:
    """The run per target and concern, failing concerns first, and what this run did not check."""
    by_concern: dict[tuple[str, str], list[CheckResult]] = {}
    for r in run.ordered():
        by_concern.setdefault((r.target, r.concern), []).append(r)
    blocks = [concern_block(t, c, concerns.get(c, ""), rs) for (t, c), rs in by_concern.items()]
    # Worst first; within a status, in the order of cause (grants before dumps before drill...).
    blocks.sort(key=lambda b: (STATUS_RANK[b.status], b.target, cause_rank(b.concern), b.concern))
    names = sorted({t for t, _ in by_concern} | set(targets or []))
    unchecked = [Unchecked(t, missing) for t in names
                 if (missing := [c for c in concerns if (t, c) not in by_concern])]
    c = run.counts()
    return SummaryData(status=run.status(), when=time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started)),
                       failed=c["failed"] + c["error"], passed=c["passed"], skipped=c["skipped"], targets=names,
                       notes=list(run.notes), blocks=blocks, unchecked=unchecked)


def render(run: RunSummary, concerns: Mapping[str, str], targets: list[str] | None = None, extra: str = "") -> str:
    """The summary section, with `extra` under it: markup such as charts.trends_html's (a plain str is text)."""
    return render_text("summary.html.j2", run=summary_data(run, concerns, targets), extra=extra)
