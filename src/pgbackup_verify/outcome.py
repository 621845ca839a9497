"""One verdict for the whole run: every output (summary line, JSON, HTML, history, per-target lines,
Kuma pushes) reads the outcome of a check, a target, a monitor and the run from this fold.

This is the only module that reads what pytest reported (`outcome`, `longrepr`, `wasxfail`...); it
reads reports by their attributes and imports no pytest, so the rules below are testable alone.

A check (one selected test) folds its phase reports (setup, call, teardown) into ONE outcome:

- passed   the call passed (also an XPASS of a non-strict xfail: the check's assertion held;
           kind "xpass").
- failed   the call failed; also a strict XPASS (kind "xpass strict"). A teardown error after a
           failed call does not make a second outcome: the check stays failed and the teardown's
           error is appended to its detail (the call's finding is what the operator fixes first).
- error    setup failed (kind "setup"), or teardown failed after a passed or skipped call
           (kind "teardown"): the check could not be judged cleanly.
- skipped  the check skipped itself or was skipped in setup. Kinds: "" (it could not judge, e.g.
           a section is missing), "not applicable" (the reason starts with `not applicable`, e.g.
           a custom-format TOC check on plain dumps), "not configured" (the reason starts with it: the
           target leaves out the optional section, e.g. [host]), "xfail" (an expected failure: not a healthy
           check, so it is not judged rather than passed), "not judged" (the reason starts with it:
           an upstream check already found its input bad, e.g. the drill of a 20-byte dump after the
           payload check failed; see evidence.require_upstream). Skips are named everywhere, never
           hidden, and do not fail the run; a "not judged" one counts as bad (is_bad) for its target,
           concern and Kuma monitor, never as a quiet skip.
- not run  selected but no verdict was reported (the run was interrupted, or -x stopped it).

Order by cause: what the operator fixes first comes first. CAUSE_ORDER ranks the concerns (the dump
role's grants cause bad dumps, bad dumps cause a failed drill...); the checks run in that order within
a target (so an upstream finding is known when a downstream check asks), and every output lists
concerns and checks by `order_key`: the console's failures, the HTML blocks, the JSON checks and the
first reason in a Kuma message.

A concern most of whose checks skipped (more skipped than judged) is PARTLY CHECKED (N of M judged),
not OK, in every output; it does not fail the run by itself.

A group of checks (a target, a Kuma monitor, the run) is OK only if none failed, errored or did
not run, at least one was judged (passed), and the run was not aborted. So the run is also FAILED
when it selected no check at all, or when every selected check skipped: nothing was judged, and
"cannot pass silently" holds for skips too (exit 5, like zero selected).
A Kuma monitor is stricter: it stays UP only if at least one of its checks passed (kuma/verdict).
A run is aborted when pytest reports it interrupted (exit 2, Ctrl-C, SIGTERM), a module failed to
collect, the suite hit an internal error (3), the run did not start (usage or config error, 4) or
selected no check (5). A check raising the project's UserError (exit codes 10-11: an unreachable
database...) is an ordinary failed/error check; the fold remembers its code for the exit status,
which is 1 instead when another check failed on its own finding (README: exit codes).
A failed Kuma push (12, 13) says nothing about the backups: it sets the exit code, not the status.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypedDict, TypeVar

T = TypeVar("T")

PASSED, FAILED, ERROR, SKIPPED, NOT_RUN = "passed", "failed", "error", "skipped", "not run"
BAD = (FAILED, ERROR, NOT_RUN)
RANK = {FAILED: 0, ERROR: 1, NOT_RUN: 2, SKIPPED: 3, PASSED: 4}  # worst first, for ordering
COUNTED = (FAILED, ERROR, SKIPPED, PASSED, NOT_RUN)  # order of counts in lines and JSON

# Kinds: why a check has its outcome when the outcome alone does not say.
NOT_APPLICABLE, XFAIL, XPASS, XPASS_STRICT, SETUP, TEARDOWN = (
    "not applicable", "xfail", "xpass", "xpass strict", "setup", "teardown")

OK_STATUS, FAILED_STATUS, SKIPPED_STATUS = "OK", "FAILED", "SKIPPED"
# Kind and concern status of checks whose optional section ([host], [offsite], [kuma]) the target
# leaves out: neither OK nor failed, and no reason to fail the run (the reason starts with it).
NOT_CONFIGURED = "not configured"
NOT_CONFIGURED_STATUS = "NOT CONFIGURED"
# Kind of a check whose input an upstream check already found bad ("not judged: <that finding>"),
# and the status of a concern whose only problems are such checks.
NOT_JUDGED = "not judged"
NOT_JUDGED_STATUS = "NOT JUDGED"
PARTLY_STATUS = "PARTLY CHECKED"

# Concerns in the order of cause and effect; a site's own concerns follow, then "other".
CAUSE_ORDER = ("grants", "dumps", "drill", "host", "offsite", "kuma", "trends", "sql")

# Set on reports by the pytest side (they survive xdist's report serialisation).
ROUTING_ATTR = "pgbv_routing"  # {"target": str, "concern": str, "markers": [str]}
USER_ERROR_ATTR = "pgbv_user_error"  # exit code of the UserError a phase raised
ROUTING_KEYS = ("target", "concern")  # user_properties set at collection, not evidence

ABORTS = {2: "run interrupted", 3: "internal error in the suite; see the report",
          4: "usage error: the run did not start", 5: "no check collected or selected"}
NOT_ABORTS = (0, 1, 10, 11, 12, 13, 14, 18)  # a verdict of the checks, a user error, a Kuma or metrics push failure
NO_CHECK_JUDGED = 5  # every selected check skipped: the same exit as "no check selected"


class Routing(TypedDict):
    """Where a check's outcome counts; stamped on its reports as ROUTING_ATTR."""

    target: str  # "" for a test that checks no target
    concern: str  # its concern marker, or "other"
    markers: list[str]  # every marker name (Kuma `covers` may name any)


class PhaseReport(Protocol):
    """What the fold reads of a pytest TestReport (duck typed: xdist's rebuilt reports qualify)."""

    @property
    def nodeid(self) -> str: ...
    @property
    def when(self) -> str | None: ...
    @property
    def outcome(self) -> str: ...
    @property
    def longrepr(self) -> object: ...
    @property
    def duration(self) -> float: ...
    @property
    def user_properties(self) -> Sequence[tuple[str, object]]: ...


class CollectionReport(Protocol):
    @property
    def nodeid(self) -> str: ...
    @property
    def outcome(self) -> str: ...


@dataclass
class CheckResult:
    """One check's folded outcome and what to show of it."""

    nodeid: str
    name: str
    target: str
    concern: str
    outcome: str  # passed, failed, error, skipped, not run
    message: str  # first line of the finding
    evidence: list[tuple[str, str]]
    seconds: float
    label: str = ""  # the check as a phrase: "payload follows its recent trend [registry lock coverage]"
    detail: str = ""  # the whole finding when it spans lines (cause, listed objects, fix)
    kind: str = ""  # see the module docstring: setup, teardown, not applicable, xfail, xpass...
    groups: frozenset[str] = field(default=frozenset(), repr=False)  # markers and module, for Kuma routing

    def as_dict(self) -> dict[str, object]:
        return {"nodeid": self.nodeid, "name": self.name, "target": self.target, "concern": self.concern,
                "outcome": self.outcome, "kind": self.kind, "message": self.message,
                "evidence": [list(e) for e in self.evidence], "seconds": self.seconds, "label": self.label,
                "detail": self.detail}


@dataclass(frozen=True)
class Phase:
    """One phase report, read once."""

    when: str
    outcome: str  # passed, failed, skipped as pytest reported it (after xfail handling)
    text: str  # the finding or skip reason; "" when passed
    kind: str  # xfail, xpass, xpass strict, not applicable or ""
    seconds: float
    evidence: tuple[tuple[str, str], ...] = ()


def label(nodeid: str, target: str) -> str:
    """`test_dump_role_has_usage[demo]` -> `dump role has usage`; other parameters stay in brackets."""
    name = nodeid.split("::")[-1]
    base, _, ident = name.partition("[")
    base = base.removeprefix("test_").replace("_", " ")
    ident = ident.removesuffix("]")
    if target and ident.startswith(target):
        ident = ident[len(target):].lstrip("-")
    return f"{base} [{ident}]" if ident else base


def check_name(nodeid: str) -> str:
    return nodeid.split("::")[-1].split("[")[0]


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")


def failure_text(rep: PhaseReport, max_lines: int = 40) -> str:
    """The whole finding of a failed or skipped phase (a multi-line one keeps its `fix:` line)."""
    if rep.outcome == PASSED:
        return ""
    longrepr = rep.longrepr
    wasxfail = getattr(rep, "wasxfail", None)
    if rep.outcome == SKIPPED and wasxfail is not None:
        return f"expected failure: {wasxfail}" if wasxfail else "expected failure"
    if rep.outcome == SKIPPED and isinstance(longrepr, tuple):
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    text = (str(crash.message) if crash is not None else str(longrepr)).strip()
    if text.startswith("[XPASS(strict)]"):
        return "unexpectedly passed (strict xfail): " + text.removeprefix("[XPASS(strict)]").strip()
    for prefix in ("AssertionError: ", "Failed: ", "assert "):
        text = text.removeprefix(prefix)
    text = text.split("\nassert ")[0]  # the assertion's introspection is not part of the finding
    lines = text.splitlines()
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], f"... {len(lines) - max_lines} more lines in the results table below"]
    return "\n".join(lines) or rep.outcome


def read_phase(rep: PhaseReport) -> Phase:
    """A phase report as the fold sees it: pytest's outcome, its text and its kind."""
    text = failure_text(rep)
    outcome = rep.outcome
    kind = ""
    if hasattr(rep, "wasxfail"):
        kind = XFAIL if outcome == SKIPPED else XPASS
    elif outcome == FAILED and str(rep.longrepr).startswith("[XPASS(strict)]"):
        kind = XPASS_STRICT
    elif outcome == SKIPPED and text.lower().startswith(NOT_APPLICABLE):
        kind = NOT_APPLICABLE
    elif outcome == SKIPPED and text.lower().startswith(NOT_CONFIGURED):
        kind = NOT_CONFIGURED
    elif outcome == SKIPPED and text.lower().startswith(NOT_JUDGED):
        kind = NOT_JUDGED
    evidence = tuple((str(k), str(v)) for k, v in rep.user_properties if k not in ROUTING_KEYS)
    return Phase(str(rep.when), outcome, text, kind, float(rep.duration), evidence)


def fold_phases(phases: Mapping[str, Phase]) -> tuple[str, str, str]:
    """(outcome, kind, detail) of one check from its phases; the rule is in the module docstring."""
    setup, call, teardown = phases.get("setup"), phases.get("call"), phases.get("teardown")
    if setup is not None and setup.outcome == FAILED:
        outcome, kind, detail = ERROR, SETUP, setup.text
    elif setup is not None and setup.outcome == SKIPPED:
        outcome, kind, detail = SKIPPED, setup.kind, setup.text
    elif call is None:
        outcome, kind, detail = NOT_RUN, "", "no verdict: the run ended before this check reported"
    else:
        outcome, kind, detail = call.outcome, call.kind, call.text
    if teardown is not None and teardown.outcome == FAILED:
        if outcome in (FAILED, ERROR):
            detail = f"{detail}\nteardown error: {teardown.text}"
        else:
            outcome, kind, detail = ERROR, TEARDOWN, teardown.text
    return outcome, kind, detail


def abort_reason(pytest_exit: int | None, collect_errors: Sequence[str] = (), signal: str | None = None,
                 refused: str | None = None) -> str | None:
    """Why the run as a whole has no verdict, or None. Checks' verdicts and user errors are not aborts."""
    if refused:
        return refused
    if signal:
        return f"run interrupted by {signal}"
    if collect_errors:
        return f"{len(collect_errors)} collection error(s): {', '.join(collect_errors)}"
    if pytest_exit is None or pytest_exit in NOT_ABORTS:
        return None
    return ABORTS.get(pytest_exit, f"run ended with exit code {pytest_exit}")


def counts(outcomes: Iterable[str]) -> dict[str, int]:
    out = dict.fromkeys(COUNTED, 0)
    for o in outcomes:
        out[o] += 1
    return out


def verdict(outcomes: Iterable[str], abort: str | None = None) -> str:
    """OK or FAILED of a target or the run: OK only if nothing failed, errored or did not run,
    something was judged (not everything skipped) and the run was not aborted. Skips next to
    passed checks are allowed (and named)."""
    seen = list(outcomes)
    if abort or not seen or any(o in BAD for o in seen) or all(o == SKIPPED for o in seen):
        return FAILED_STATUS
    return OK_STATUS


def cause_rank(concern: str) -> int:
    """Where a concern comes in the order of cause (CAUSE_ORDER); unknown ones after, "other" last."""
    if concern in CAUSE_ORDER:
        return CAUSE_ORDER.index(concern)
    return len(CAUSE_ORDER) + (concern == "other")


def order_key(r: CheckResult) -> tuple[int, str, int, str]:
    """Checks worst first, then per target in the order of cause: the one sort of every output.

    Within a concern the sort is stable: checks keep the order they ran in (upstream first)."""
    return (RANK[r.outcome], r.target, cause_rank(r.concern), r.concern)


def is_bad(r: CheckResult) -> bool:
    """Failed, errored, not run, or not judged because its input is known bad: never green."""
    return r.outcome in BAD or r.kind == NOT_JUDGED


def concern_status(outcomes: Iterable[str], kinds: Iterable[str] = ()) -> str:
    """A concern block's status: FAILED, NOT JUDGED (an upstream finding stopped its checks),
    SKIPPED (every check skipped; NOT CONFIGURED if its section is left out), PARTLY CHECKED (more
    skipped than judged) or OK."""
    seen, kinds = list(outcomes), list(kinds)
    if any(o in BAD for o in seen):
        return FAILED_STATUS
    if NOT_JUDGED in kinds:
        return NOT_JUDGED_STATUS
    skipped = sum(o == SKIPPED for o in seen)
    if seen and skipped == len(seen):
        # The section is left out: not checked, and not a failure.
        return NOT_CONFIGURED_STATUS if kinds and all(k == NOT_CONFIGURED for k in kinds) else SKIPPED_STATUS
    return PARTLY_STATUS if skipped * 2 > len(seen) else OK_STATUS


def judged_text(rs: Sequence[CheckResult]) -> str:
    """`2 of 9 judged`: checks that passed or failed, of the concern's checks."""
    return f"{sum(r.outcome != SKIPPED for r in rs)} of {len(rs)} judged"


def order_by_cause(items: Sequence[T], target_of: Callable[[T], object], concern_of: Callable[[T], str]) -> list[T]:
    """Collected checks in the order of cause within each run of one target's checks; runs stay where
    they are (pytest groups a session-scoped target's checks: moving them across would set it up twice)."""
    out: list[T] = []
    i = 0
    while i < len(items):
        j = i
        while j < len(items) and target_of(items[j]) == target_of(items[i]):
            j += 1
        out += sorted(items[i:j], key=lambda it: cause_rank(concern_of(it)))
        i = j
    return out


def count_text(c: Mapping[str, int]) -> str:
    """`1 failed, 13 passed`: the non-zero counts, worst first."""
    return ", ".join(f"{c[k]} {k}" for k in (FAILED, ERROR, PASSED, SKIPPED, NOT_RUN) if c.get(k))


@dataclass
class RunFold:
    """The run's checks and how the run ended; fed phase by phase, read by every output."""

    checks: dict[str, CheckResult] = field(default_factory=dict)
    phases: dict[str, dict[str, Phase]] = field(default_factory=dict)
    collect_errors: list[str] = field(default_factory=list)
    user_errors: set[int] = field(default_factory=set)
    user_error_checks: set[str] = field(default_factory=set)  # nodeids whose failure is a UserError
    signal: str | None = None  # "SIGTERM" when a signal interrupted the run
    refused: str | None = None  # the run did not start (config error...): the one-line reason
    pytest_exit: int | None = None  # pytest's own exit status, known at session finish

    def select(self, nodeid: str, target: str = "", concern: str = "other", markers: Iterable[str] = ()) -> None:
        """A check pytest will run; it stays `not run` until a phase reports."""
        if nodeid in self.checks:
            return
        self.checks[nodeid] = CheckResult(
            nodeid=nodeid, name=check_name(nodeid), target=target, concern=concern, outcome=NOT_RUN,
            message="not run", evidence=[], seconds=0.0, label=label(nodeid, target),
            detail="no verdict: the run ended before this check reported",
            groups=frozenset({*markers, module_of(nodeid)}))

    def record(self, rep: PhaseReport) -> CheckResult:
        """Fold one phase report in (works on the xdist controller too: it sees reports, not items)."""
        routing = getattr(rep, ROUTING_ATTR, None)
        if not isinstance(routing, dict):  # not stamped (a foreign plugin's report): user_properties
            props = dict(rep.user_properties)
            routing = {k: props[k] for k in ROUTING_KEYS if props.get(k)}
        self.select(rep.nodeid)
        code = getattr(rep, USER_ERROR_ATTR, None)
        if isinstance(code, int):
            self.user_errors.add(code)
            self.user_error_checks.add(rep.nodeid)
        phases = self.phases.setdefault(rep.nodeid, {})
        phases[str(rep.when)] = read_phase(rep)
        outcome, kind, detail = fold_phases(phases)
        old = self.checks[rep.nodeid]
        target = str(routing.get("target") or old.target)
        shown = detail if outcome != PASSED else ""
        self.checks[rep.nodeid] = CheckResult(
            nodeid=rep.nodeid, name=old.name, target=target, concern=str(routing.get("concern") or old.concern),
            outcome=outcome, message=shown.splitlines()[0] if shown else "",
            evidence=list(dict.fromkeys(e for p in phases.values() for e in p.evidence)),
            seconds=round(sum(p.seconds for p in phases.values()), 3), label=label(rep.nodeid, target),
            detail=shown, kind=kind, groups=old.groups | {str(m) for m in routing.get("markers") or ()})
        return self.checks[rep.nodeid]

    def record_collection(self, rep: CollectionReport) -> None:
        if rep.outcome == FAILED:
            self.collect_errors.append(rep.nodeid or "collection")

    def interrupt(self, signal: str) -> None:
        self.signal = self.signal or signal

    def refuse(self, reason: str) -> None:
        """The run did not start (a broken target file, a usage error): nothing was judged."""
        self.refused = self.refused or reason

    def finish(self, pytest_exit: int) -> None:
        self.pytest_exit = int(pytest_exit)

    def abort(self) -> str | None:
        reason = abort_reason(self.pytest_exit, self.collect_errors, self.signal, self.refused)
        if reason is None and self.pytest_exit == 0 and self.all_skipped():
            reason = f"no check judged: all {len(self.checks)} selected checks skipped"
        return reason

    def exit_code(self, pytest_exit: int) -> int:
        """pytest's exit status, or the highest user-error code when the checks themselves ran.

        A check that failed on its own finding keeps exit 1: a user-error code (10-11, "could not
        look") never hides "a check failed", which is what the printed lines say."""
        found = any(r.outcome in (FAILED, ERROR) and r.nodeid not in self.user_error_checks
                    for r in self.checks.values())
        if self.user_errors and pytest_exit in (0, 1) and not found:
            return max(self.user_errors)
        if pytest_exit == 0 and self.all_skipped():
            return NO_CHECK_JUDGED
        return pytest_exit

    def all_skipped(self) -> bool:
        return bool(self.checks) and all(r.outcome == SKIPPED for r in self.checks.values())

    def results(self, target: str | None = None) -> list[CheckResult]:
        return [r for r in self.checks.values() if target is None or r.target == target]

    def counts(self, target: str | None = None) -> dict[str, int]:
        return counts(r.outcome for r in self.results(target))

    def status(self, target: str | None = None) -> str:
        # A not-judged check only exists next to the failed upstream check, but is never read as green.
        return verdict((FAILED if is_bad(r) else r.outcome for r in self.results(target)), self.abort())

    def targets(self) -> list[str]:
        return sorted({r.target for r in self.checks.values() if r.target})

    def not_run(self) -> list[CheckResult]:
        return [r for r in self.checks.values() if r.outcome == NOT_RUN]

    def by_concern(self) -> dict[tuple[str, str], list[CheckResult]]:
        """Checks per (target, concern), worst first within each."""
        out: dict[tuple[str, str], list[CheckResult]] = {}
        for r in sorted(self.checks.values(), key=order_key):
            out.setdefault((r.target, r.concern), []).append(r)
        return out

    def concern_statuses(self, target: str | None = None) -> list[tuple[str, str, str, str]]:
        """(target, concern, status, `N of M judged`) per concern in the order of cause."""
        groups = self.by_concern()
        keys = sorted((k for k in groups if target is None or k[0] == target),
                      key=lambda k: (k[0], cause_rank(k[1]), k[1]))
        return [(t, c, concern_status((r.outcome for r in groups[t, c]), [r.kind for r in groups[t, c]]),
                 judged_text(groups[t, c])) for t, c in keys]

    def target_line(self, target: str) -> str:
        """`pgbackup-verify target alpha: FAILED (1 failed, 13 passed)`; an aborted run names why."""
        abort = self.abort()
        why = f"{abort}: " if abort else ""
        partly = [f"{c} {judged}" for _, c, status, judged in self.concern_statuses(target) if status == PARTLY_STATUS]
        part = f"; partly checked: {', '.join(partly)}" if partly else ""
        return (f"pgbackup-verify target {target}: {self.status(target)} "
                f"({why}{count_text(self.counts(target))}{part})")


def describe_not_run(fold: RunFold, limit: int = 5) -> str:
    """`2 of 5 selected checks not run: subject, zz after`, or "" when every check reported."""
    names = [r.label or r.name for r in fold.not_run()]
    shown = ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")
    return f"{len(names)} of {len(fold.checks)} selected checks not run: {shown}" if names else ""


def run_note(fold: RunFold) -> str:
    """The one line that says why a run has no full verdict, or "" when it has one."""
    abort = fold.abort()
    missing = describe_not_run(fold)
    if abort:
        return f"FAILED: {abort}" + (f" ({missing})" if missing else "")
    if not fold.checks and fold.pytest_exit is not None:
        return "FAILED: no check collected or selected"
    return f"FAILED: {missing}" if missing else ""
