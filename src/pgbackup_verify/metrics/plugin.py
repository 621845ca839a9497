"""pytest plugin: at the end of every run, the run's Prometheus metrics, to node_exporter's textfile
collector (`--metrics FILE`) and to each target's Pushgateway (`[prometheus].pushgateway`).

Modelled on the Kuma reporter: a plain object registered in pytest_configure (not on xdist workers) that
counts nothing itself; at session finish it reads the run's one outcome fold (outcome.py) and the targets'
run facts. A run that never reaches a session (a config or usage error, a crash or Ctrl-C before the
checks) still writes them from pytest_unconfigure, where latest.* is replaced too: `run_ok 0` and its exit
code, the last run and last success of each concern carried unchanged, so no earlier OK stands.
A file not written or a push not accepted is a note in every report and exit 18 on an otherwise green run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from pgbackup_verify.config import ConfigError, PrometheusSection, iter_target_files, load_section
from pgbackup_verify.config.settings import SETTINGS_KEY, reports_path, target_paths
from pgbackup_verify.errors import CONFIG_ERROR, METRICS_NOT_DELIVERED, OK
from pgbackup_verify.fixtures.core import RUN_FACTS_KEY
from pgbackup_verify.metrics import collect, push, state, textfile
from pgbackup_verify.outcome import ABORTS, RunFold
from pgbackup_verify.report.summary import REFUSED_KEY, recorder

REPORTER = "pgbackup_verify_metrics_reporter"
DONE_KEY = pytest.StashKey[bool]()
HELP = ("write the run's Prometheus metrics to FILE (*.prom, replaced atomically, mode 0644) for node_exporter's "
        "textfile collector, at the end of every run")
Gateways = Sequence[tuple[str, PrometheusSection]]  # (target name, its [prometheus] section with a pushgateway)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgbackup-verify")
    group.addoption("--metrics", dest="pgbv_metrics", default=None, metavar="FILE", help=HELP)


def _skip_run(config: pytest.Config) -> bool:
    o = config.option
    return hasattr(config, "workerinput") or any(getattr(o, a, False) for a in (
        "help", "version", "collectonly", "markers", "showfixtures", "show_fixtures_per_test"))


def metrics_path(config: pytest.Config) -> Path | None:
    raw = config.getoption("pgbv_metrics", None)
    return Path(raw).absolute() if raw else None


def gateways(config: pytest.Config) -> Gateways:
    """The targets that name a Pushgateway; on a broken configuration, each file's readable [prometheus]."""
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is not None:
        return [(t.name, t.prometheus) for t in settings.targets if t.prometheus and t.prometheus.pushgateway]
    out: list[tuple[str, PrometheusSection]] = []
    try:
        files = [f for p in target_paths(config)[0] for f in iter_target_files(p, strict=False)]
    except (ConfigError, OSError):
        return out
    for f in files:
        try:
            section: PrometheusSection | None = load_section(f, "prometheus")
            named = load_section(f, "target")
        except (ConfigError, KeyError):
            continue
        if section is not None and section.pushgateway:
            out.append(((named.name if named else "") or f.stem, section))
    return out


def state_path(config: pytest.Config) -> Path | None:
    settings = config.stash.get(SETTINGS_KEY, None)
    try:
        reports = settings.reports_dir if settings else reports_path(config, bool(target_paths(config)[0]))
    except (ConfigError, ValueError):
        return None
    return reports / state.STATE_FILE if reports else None


def deliver(fold: RunFold, facts: dict[str, dict[str, object]], started: float, exit_code: int,
            path: Path | None, pushes: Gateways, kept: Path | None) -> tuple[list[str], list[str]]:
    """Write and push the run's metrics; (what was done, what failed), one line each, never a secret."""
    before = state.read(kept) if kept else state.State()
    snap = collect.snapshot(fold, facts, started, time.time(), exit_code, before)
    done, problems = [], []
    if path is not None:
        try:
            textfile.write(path, collect.registry(snap))
            done.append(f"metrics written to {path}")
        except OSError as e:
            problems.append(f"metrics file '{path}' not written ({e.strerror or type(e).__name__}); "
                            "fix --metrics or its directory")
    groups = [push.Group(p.pushgateway, p.job, name, p.push_timeout, collect.registry(snap, [name]))
              for name, p in pushes]
    for r in push.push_all(groups) if groups else []:
        g = r.group
        if r.ok:
            done.append(f"metrics of target {g.target} {r.detail}")
        else:
            problems.append(f"Prometheus push of target {g.target} FAILED: {r.detail}; check that the "
                            "Pushgateway runs and [prometheus].pushgateway names it")
    if kept is not None and snap.state != before:
        try:
            state.write(kept, snap.state)
        except OSError as e:
            problems.append(f"metrics state '{kept}' not written ({e.strerror}); the next run's last-success "
                            "times start over; fix the reports directory")
    return done, problems


class MetricsReporter:
    def __init__(self, config: pytest.Config, path: Path | None, pushes: Gateways) -> None:
        self.config = config
        self.path = path
        self.pushes = pushes
        self.done: list[str] = []
        self.problems: list[str] = []

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """After the core plugin folded the exit status (tryfirst), before pytest-html renders (trylast)."""
        self.config.stash[DONE_KEY] = True
        summary = recorder(self.config).summary
        self.done, self.problems = deliver(
            summary.fold, self.config.stash.get(RUN_FACTS_KEY, {}), summary.started, int(session.exitstatus),
            self.path, self.pushes, state_path(self.config))
        summary.notes.extend(self.problems)  # JSON, HTML and the terminal show the notes
        if self.problems and session.exitstatus == OK:
            session.exitstatus = METRICS_NOT_DELIVERED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        for line in self.done:
            terminalreporter.write_line(f"pgbackup-verify prometheus: {line}")


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if _skip_run(config) or config.pluginmanager.has_plugin(REPORTER):
        return
    path = metrics_path(config)
    if path is not None:
        try:
            textfile.check_path(path)
        except ConfigError as e:
            config.stash[REFUSED_KEY] = (f"usage error: {e}", CONFIG_ERROR)
            recorder(config).fold.refuse(f"usage error: {e}")
            config.stash[DONE_KEY] = True  # told below: a Pushgateway still hears of it
            _unstarted(config, path=None)
            raise pytest.UsageError(str(e)) from None
    pushes = gateways(config)
    if path is not None or pushes:
        config.pluginmanager.register(MetricsReporter(config, path, pushes), REPORTER)


def _unstarted(config: pytest.Config, path: Path | None) -> None:
    """No session ran: the metrics of a run that checked nothing, and why not (the reports say it too)."""
    reason, code = config.stash.get(REFUSED_KEY, (ABORTS[CONFIG_ERROR], CONFIG_ERROR))
    pushes = gateways(config)
    if path is not None or pushes:
        reports = state_path(config)
        not_started(path, reason or ABORTS.get(code, ABORTS[CONFIG_ERROR]), code,
                    reports.parent if reports else None, pushes)


def not_started(path: Path | None, reason: str, code: int, reports: Path | None, pushes: Gateways = ()) -> None:
    """The metrics of a run that judged nothing (run_ok 0, its exit code; earlier times carried unchanged)."""
    fold = RunFold()
    fold.refuse(reason)
    kept = reports / state.STATE_FILE if reports else None
    done, problems = deliver(fold, {}, time.time(), code, path, list(pushes), kept)
    _announce([*done, *problems])


def _announce(lines: Sequence[str]) -> None:
    import sys

    for line in lines:
        sys.stderr.write(f"pgbackup-verify prometheus: {line}\n")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _skip_run(config) or config.stash.get(DONE_KEY, False):
        return
    config.stash[DONE_KEY] = True
    _unstarted(config, metrics_path(config))
