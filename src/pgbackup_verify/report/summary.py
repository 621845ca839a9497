"""The run's outcome in three forms: one line for cron mail / the journal, a JSON document
for machines, and the per-concern table that opens the HTML report (failing checks first).

All three read one fold (pgbackup_verify.outcome); the Recorder here feeds it from pytest's hooks.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Generator
from pathlib import Path

import pytest

from pgbackup_verify import outcome
from pgbackup_verify.config.concerns import CONCERNS
from pgbackup_verify.config.settings import TARGET_ATTR
from pgbackup_verify.errors import CONFIG_ERROR, INTERNAL_ERROR
from pgbackup_verify.outcome import RANK, ROUTING_ATTR, ROUTING_KEYS, CheckResult, Routing, RunFold, failure_text, label
from pgbackup_verify.report.html import render as render_html
from pgbackup_verify.report.wording import LIKELY_CAUSE, name_of, warnings_of
from pgbackup_verify.safefs import atomic_write

__all__ = [
    "CONCERNS_KEY",
    "RANK",
    "REFUSED_KEY",
    "ROUTING_KEYS",
    "CheckResult",
    "CrashWitness",
    "Recorder",
    "RunSummary",
    "SigTermInterrupts",
    "check_lines",
    "concerns",
    "crash_reason",
    "failure_text",
    "label",
    "recorder",
    "refuse",
    "routing",
    "routing_properties",
    "write_json",
]

RECORDER = "pgbackup-verify-outcome"
REFUSED_KEY = pytest.StashKey[tuple[str, int]]()  # why the run checked nothing, and its exit status
ROUTING_KEY = pytest.StashKey[Routing]()  # a check's routing, computed once at collection finish
CONCERNS_KEY = pytest.StashKey[dict[str, str]]()  # this run's concerns: shipped ones + a site's (hook)


def concerns(config: pytest.Config) -> dict[str, str]:
    """The run's concern registry: the shipped CONCERNS plus what `pytest_pgbackup_verify_concerns` added."""
    if CONCERNS_KEY not in config.stash:
        registry = dict(CONCERNS)
        if hasattr(config.hook, "pytest_pgbackup_verify_concerns"):  # absent: the Kuma plugin used alone
            config.hook.pytest_pgbackup_verify_concerns(concerns=registry)
        config.stash[CONCERNS_KEY] = {**registry, **CONCERNS}  # a site adds; the shipped ones stay as they are
    return config.stash[CONCERNS_KEY]


def routing(item: pytest.Item) -> Routing:
    """Target, concern and markers of a check: where its outcome counts (report, target, Kuma).

    The markers are the Kuma routing keys; `pytest_pgbackup_verify_kuma_route` may add more."""
    callspec = getattr(item, "callspec", None)
    target = callspec.params.get("target") if callspec else getattr(item, TARGET_ATTR, None)
    known = concerns(item.config)
    concern = next((m.name for m in item.iter_markers() if m.name in known), "other")  # the nearest wins
    name = str(getattr(target, "name", "") or "")
    markers = {m.name for m in item.iter_markers()}
    if hasattr(item.config.hook, "pytest_pgbackup_verify_kuma_route"):  # absent: the Kuma plugin used alone
        for extra in item.config.hook.pytest_pgbackup_verify_kuma_route(
                nodeid=item.nodeid, groups=frozenset(markers | {outcome.module_of(item.nodeid)}),
                target=name or None):
            markers.update(str(g) for g in extra)
    return {"target": name, "concern": concern, "markers": sorted(markers)}


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
        self.fields: dict[str, list[tuple[str, str]]] = {}  # per target: a site's report fields (hook)
        self.facts: dict[str, dict[str, float]] = {}  # per target: the run's key figures (facts/history.py)

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
                 f"warnings={len(self.warnings())}", f"seconds={time.time() - self.started:.1f}"]
        if report_path:
            parts.append(f"report={report_path}")
        abort = self.fold.abort()
        if abort:
            parts.append(f"abort={json.dumps(abort)}")
        return " ".join(parts)

    def causes(self) -> list[CheckResult]:
        """The red lines a person fixes: failed or errored checks whose finding no other explains (a dump
        line naming its `likely cause` is the grant's consequence, not a cause of its own)."""
        return [r for r in self.ordered() if r.outcome in (outcome.FAILED, outcome.ERROR)
                and LIKELY_CAUSE not in r.message]

    def title(self) -> str:
        """`FAILED · demo · 2 causes`: the report's title, what a browser tab or a mail subject shows."""
        targets = ",".join(self.fold.targets()) or "-"
        if self.status() == outcome.OK_STATUS:
            n = len(self.warnings())
            return f"OK \u00b7 {targets}" + (f" \u00b7 {n} warning{'s' if n > 1 else ''}" if n else "")
        n = len(self.causes())
        why = f"{n} cause{'s' if n != 1 else ''}" if n else (self.fold.abort() or "not judged")
        return f"FAILED \u00b7 {targets} \u00b7 {why}"

    def warnings(self) -> list[dict[str, str]]:
        """Every warning of the run's checks, in the order of cause: true, not failing, worth a line."""
        return [{"target": r.target, "concern": r.concern, "check": name_of(r), "warning": w}
                for r in self.ordered() for w in warnings_of(r)]

    def to_json(self) -> str:
        doc = {"status": self.status(), "exit_status": self.exit_status, "abort": self.fold.abort(),
               "counts": self.counts(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
               "seconds": round(time.time() - self.started, 3), "notes": self.notes,
               "fields": {t: [list(f) for f in fs] for t, fs in self.fields.items()},
               "facts": self.facts,
               "targets": [{"name": t, "status": self.fold.status(t), "counts": self.fold.counts(t)}
                           for t in self.fold.targets()],
               "concerns": [{"target": t, "concern": c, "status": st, "judged": j}
                            for t, c, st, j in self.fold.concern_statuses()],
               "warnings": self.warnings(),
               "checks": [r.as_dict() for r in self.ordered(with_not_run=True)]}
        return json.dumps(doc, indent=2)

    def ordered(self, with_not_run: bool = False) -> list[CheckResult]:
        """Checks worst first; the ones that never reported are left to the notes unless asked for."""
        return sorted((r for r in self.results.values() if with_not_run or r.outcome != outcome.NOT_RUN),
                      key=outcome.order_key)

    def html(self, registry: dict[str, str] | None = None, extra: str = "", targets: list[str] | None = None) -> str:
        """Per target and concern (the run's registry, default the shipped one): status, the one-line
        cause, the evidence; failing concerns first."""
        return render_html(self, CONCERNS if registry is None else registry, targets, extra)


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
        # Stamped on every phase's report: it survives xdist, so the controller routes like one process.
        setattr(rep, ROUTING_ATTR, item.stash.get(ROUTING_KEY, None) or routing(item))
        return rep

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            # Once per check, after every plugin's collection_modifyitems has added its markers.
            r = item.stash[ROUTING_KEY] = routing(item)
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


def refuse(config: pytest.Config, reason: str, exit_status: int = CONFIG_ERROR) -> None:
    """The run cannot judge anything (its reason: "" when no report can be written): remember why, for
    the fold and for the report that replaces latest.* when no session runs (report.files)."""
    config.stash[REFUSED_KEY] = (reason, exit_status)
    if reason:
        recorder(config).fold.refuse(reason)


def crash_reason(e: BaseException) -> str:
    return f"internal error before the checks ran: {type(e).__name__}: {e}".splitlines()[0]


class CrashWitness:
    """Remembers an internal error before the session (another plugin's or a site's configure raised),
    so the report that replaces latest.* names it instead of a generic reason."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.started = False

    def pytest_sessionstart(self) -> None:
        self.started = True  # from here on the session's own reports say what happened

    def pytest_internalerror(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        if not self.started:
            refuse(self.config, crash_reason(excinfo.value), INTERNAL_ERROR)


class SigTermInterrupts:
    """SIGTERM (systemd's stop, a timeout) ends the session as interrupted, so every report says so."""

    def __init__(self, fold: RunFold) -> None:
        self.fold = fold

    def __call__(self, signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one ends the process
        self.fold.interrupt("SIGTERM")
        raise KeyboardInterrupt("SIGTERM")

    @classmethod
    def install(cls, fold: RunFold) -> None:
        """Unless someone else handles SIGTERM already (the Kuma reporter chains to what it found)."""
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                signal.signal(signal.SIGTERM, cls(fold))

    @classmethod
    def uninstall(cls) -> None:
        if isinstance(signal.getsignal(signal.SIGTERM), cls):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def check_lines(fold: RunFold, reportchars: str = "", limit: int = 3) -> list[str]:
    """Failed, errored and skipped checks in pytest's -r style, but named by target, concern and check
    instead of a source path (an installed copy's lies deep in site-packages), for the kinds pytest's own
    `reportchars` does not list already: `FAILED t grants · dump role can connect: <finding>`,
    `SKIPPED [5] t kuma: <reason> (a, b, c, +2 more)`; then one `WARNING` line per warning. Failures come
    in the order of cause (grants, dumps, drill...: outcome.order_key), whatever order pytest ran them in."""
    lines = []
    for r in sorted(fold.results(), key=outcome.order_key):
        shown = {outcome.FAILED: "f", outcome.ERROR: "E"}.get(r.outcome)
        if shown and shown not in reportchars:
            where = " ".join(x for x in (r.target, r.concern) if x)
            lines.append(f"{r.outcome.upper()} {where} \u00b7 {name_of(r)}: {r.message}")
    warned = [f"WARNING {' '.join(x for x in (r.target, r.concern) if x)} \u00b7 {name_of(r)}: {w}"
              for r in sorted(fold.results(), key=outcome.order_key) for w in warnings_of(r)]
    if "s" in reportchars:
        return lines + warned
    groups: dict[tuple[str, str, str], list[str]] = {}
    for r in fold.results():
        if r.outcome == outcome.SKIPPED:
            groups.setdefault((r.target, r.concern, r.message), []).append(r.label or r.name)
    for (target, concern, reason), names in groups.items():
        listed = ", ".join(names[:limit]) + (f", +{len(names) - limit} more" if len(names) > limit else "")
        lines.append(f"SKIPPED [{len(names)}] {' '.join(x for x in (target, concern) if x)}: {reason} ({listed})")
    return lines + warned


def write_json(summary: RunSummary, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, summary.to_json())
