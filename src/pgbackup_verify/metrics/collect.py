"""The run as Prometheus series: read from the one outcome fold (outcome.RunFold) and the targets' numeric
run facts (facts/history.py's contract), never counted here. Names and labels: names.py."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge

from pgbackup_verify.facts import history
from pgbackup_verify.metrics import names as n
from pgbackup_verify.metrics.state import State
from pgbackup_verify.outcome import OK_STATUS, PARTLY_STATUS, PASSED, CheckResult, RunFold

# A concern counts as a success when it was judged and found healthy (a partly checked one found nothing wrong).
SUCCESS_STATUSES = (OK_STATUS, PARTLY_STATUS)
# Run fact -> (metric, factor): the figures the fixtures already store for the history.
FACT_METRICS = {
    history.DUMP_AGE_HOURS: (n.DUMP_AGE, 3600.0),
    history.GOOD_DUMP_AGE_HOURS: (n.GOOD_DUMP_AGE, 3600.0),
    history.PAYLOAD_BYTES: (n.DUMP_PAYLOAD, 1.0),
    history.DRILL_SECONDS: (n.DRILL_DURATION, 1.0),
    history.DRILL_TIER: (n.DRILL_TIER, 1.0),
    history.TABLES_RESTORED: (n.DRILL_TABLES, 1.0),
    history.DRILL_ROWS: (n.DRILL_ROWS, 1.0),
    history.GRANT_FINDINGS: (n.GRANT_FINDINGS, 1.0),
}


def check_id(r: CheckResult) -> str:
    """`test_dump_role_has_usage`, or `test_custom_sql[registry_lock]` for a parametrized check (the target's
    own part of the id left out): a function name and a configured name, never a message."""
    ident = r.nodeid.split("::")[-1].partition("[")[2].removesuffix("]")
    if r.target and ident.startswith(r.target):
        ident = ident[len(r.target):].lstrip("-")
    return f"{r.name}[{ident}]" if ident else r.name


@dataclass(frozen=True)
class Snapshot:
    """What the metrics say about one run, decided once at its end."""

    ok: bool
    exit_code: int
    ended: float
    seconds: float
    counts: Mapping[str, int]
    targets: tuple[str, ...]
    target_ok: Mapping[str, bool]
    concerns: Mapping[tuple[str, str], str]  # (target, concern) -> status
    checks: tuple[tuple[str, str, str, bool], ...]  # (target, concern, check id, passed)
    facts: Mapping[str, Mapping[str, float]]
    state: State = field(default_factory=State)  # last run / last success, this run's included


def snapshot(fold: RunFold, facts: Mapping[str, Mapping[str, object]], started: float, ended: float,
             exit_code: int, before: State) -> Snapshot:
    """The run's series; `before` (what earlier runs left) is carried on for concerns this run did not judge
    healthy, so a red night keeps the time of the last green one."""
    concerns = {(t, c): status for t, c, status, _ in fold.concern_statuses() if t}
    started_checks = fold.refused is None and bool(fold.checks)
    state = before.updated(
        ran=list(concerns) if started_checks else [],
        succeeded=[k for k, st in concerns.items() if st in SUCCESS_STATUSES] if started_checks else [],
        at=ended, keep=fold.targets() if started_checks else None)
    checks = tuple((r.target, r.concern, check_id(r), r.outcome == PASSED) for r in fold.results() if r.target)
    targets = tuple(sorted({*fold.targets(), *(t for t, _ in state.keys())}))
    # A run that did not start judged no target: each known one is not OK.
    target_ok = {t: False for t in targets} | {t: fold.status(t) == OK_STATUS for t in fold.targets()}
    return Snapshot(ok=fold.status() == OK_STATUS and exit_code == 0, exit_code=exit_code, ended=ended,
                    seconds=max(0.0, ended - started), counts=fold.counts(), targets=targets, target_ok=target_ok,
                    concerns=concerns,
                    checks=checks, facts={t: history.numeric_facts(facts.get(t, {})) for t in fold.targets()},
                    state=state)


def registry(s: Snapshot, targets: Iterable[str] | None = None) -> CollectorRegistry:
    """A registry of the run's series and those of `targets` (default: every target)."""
    wanted = set(s.targets if targets is None else targets)
    reg = CollectorRegistry(auto_describe=True)

    def gauge(m: n.Metric) -> Gauge:
        return Gauge(m.name, m.help, m.labels, registry=reg)

    gauge(n.RUN_OK).set(int(s.ok))
    gauge(n.RUN_EXIT_CODE).set(s.exit_code)
    gauge(n.RUN_TIMESTAMP).set(s.ended)
    gauge(n.RUN_DURATION).set(round(s.seconds, 3))
    checks_by = gauge(n.RUN_CHECKS)
    for outcome, count in s.counts.items():
        checks_by.labels(outcome).set(count)
    target_ok, concern_ok, status, passed = gauge(n.TARGET_OK), gauge(n.CONCERN_OK), gauge(n.CONCERN_STATUS), \
        gauge(n.CHECK_PASSED)
    for t in sorted(wanted):  # a target this run did not judge (a refused run's pushed group) is not OK
        target_ok.labels(t).set(int(s.target_ok.get(t, False)))
    for (t, c), st in sorted(s.concerns.items()):
        if t in wanted:
            concern_ok.labels(t, c).set(int(st not in ("FAILED", "NOT JUDGED")))
            status.labels(t, c).set(n.STATUS_CODES.get(st, n.STATUS_CODES["FAILED"]))
    for t, c, check, ok in s.checks:
        if t in wanted:
            passed.labels(t, c, check).set(int(ok))
    last_run, last_success = gauge(n.LAST_RUN), gauge(n.LAST_SUCCESS)
    for (t, c), (ran, good) in sorted(s.state.items()):
        if t in wanted and ran is not None:
            last_run.labels(t, c).set(ran)
        if t in wanted and good is not None:
            last_success.labels(t, c).set(good)
    by_metric = {m: gauge(m) for m, _ in FACT_METRICS.values()}
    for t, values in sorted(s.facts.items()):
        for fact, value in values.items():
            if t in wanted and fact in FACT_METRICS:
                m, factor = FACT_METRICS[fact]
                by_metric[m].labels(t).set(value * factor)
    return reg
