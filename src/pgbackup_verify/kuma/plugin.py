"""pytest plugin: at the end of every run, tell each Uptime Kuma push monitor the truth.

Modelled on testinfra's NagiosReporter: a reporter object registered in pytest_configure (not on
xdist workers) counts outcomes in pytest_runtest_logreport and acts in pytest_sessionfinish.
Never silent: failures, errors, all covered checks skipped, zero selected checks, an internal error, an interrupted run
(Ctrl-C or SIGTERM) and a broken target file all push `down`. Usable by any suite:
`pytest -p pgbackup_verify.kuma.plugin --kuma-config FILE` (a TOML file with a [kuma] section).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from pgbackup_verify.config import KUMA_MARKERS, ConfigError, KumaSection
from pgbackup_verify.config.loader import _build
from pgbackup_verify.kuma import verdict as kr

REPORTER = "pgbackup_verify_kuma_reporter"
CONFIG_ENV = "PGBACKUP_VERIFY_KUMA_CONFIG"
DONE_KEY = pytest.StashKey[bool]()
ABORTS = {2: "run interrupted", 3: "internal error in the suite; see the report",
          4: "usage error: the run did not start", 5: "no check collected or selected"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgbackup-verify kuma")
    group.addoption("--kuma-dry-run", action="store_true", default=False,
                    help="print what would be pushed to the Kuma push monitors; send nothing")
    group.addoption("--kuma-config", default=None,
                    help=f"TOML file with a [kuma] section (default: the target files). Env: {CONFIG_ENV}")


def _skip_run(config: pytest.Config) -> bool:
    o = config.option
    return any(getattr(o, a, False) for a in ("help", "version", "collectonly", "markers", "showfixtures",
                                              "show_fixtures_per_test"))


def _kuma_file(path: Path) -> list[kr.PushMonitor]:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"kuma config '{path}': cannot be read ({e}); fix it") from None
    try:
        section = _build(KumaSection, raw.get("kuma"), "kuma", path.resolve().parent)
        section.validate()
    except ConfigError as e:
        raise ConfigError(f"kuma config '{path}': {e}") from None
    return kr.monitors_of(section, None)


def _paths(config: pytest.Config) -> tuple[list[Path], bool]:
    own = config.getoption("kuma_config", None) or os.environ.get(CONFIG_ENV)
    if own:
        return [Path(own)], True
    raw = config.option.pgbv_target or os.environ.get("PGBACKUP_VERIFY_TARGET")
    if not raw:
        try:
            raw = config.getini("pgbackup_verify_target") or None
        except ValueError:
            raw = None
    raw = raw if isinstance(raw, list) else ([raw] if raw else [])
    files: list[Path] = []
    for p in map(Path, map(str, raw)):
        files.extend(sorted(p.glob("*.toml")) if p.is_dir() else [p])
    return files, False


def load_monitors(config: pytest.Config) -> tuple[list[kr.PushMonitor], str | None]:
    """The push monitors and, if the configuration is broken, its one-line error.

    On a broken file only its [kuma] tables are read, so the monitors still hear about it.
    """
    if not hasattr(config.option, "pgbv_target"):  # core plugin not loaded: only --kuma-config
        config.option.pgbv_target = None
    paths, own = _paths(config)
    try:
        if own:
            return _kuma_file(paths[0]), None
        if not paths:
            return [], None
        from pgbackup_verify.config.settings import resolve
        from pgbackup_verify.plugin import SETTINGS_KEY

        settings = config.stash.get(SETTINGS_KEY, None) or resolve(config)
        return kr.monitors_for(list(settings.targets)), None
    except ConfigError as e:
        return [m for p in paths for m in kr.tolerant_monitors(p)], str(e)


def _announce(lines: list[str]) -> None:
    for line in lines:
        sys.stderr.write(f"pgbackup-verify kuma: {line}\n")


def push_all(verdicts: list[kr.Verdict], dry_run: bool) -> list[kr.PushResult]:
    """All monitors at once: a hung Kuma costs one timeout + retry, not one per monitor."""
    if len(verdicts) <= 1:
        return [kr.send(v, dry_run=dry_run) for v in verdicts]
    with ThreadPoolExecutor(max_workers=min(8, len(verdicts))) as pool:
        return list(pool.map(lambda v: kr.send(v, dry_run=dry_run), verdicts))


def describe(r: kr.PushResult) -> str:
    v = r.verdict
    state = "PUSH FAILED" if not r.ok else ("would push" if "dry run" in r.detail else "pushed")
    return f"{v.monitor.name}: {state} status={v.status} msg='{v.msg}' ping={v.ping_ms} ms -> {r.detail}"


class KumaReporter:
    def __init__(self, config: pytest.Config, monitors: list[kr.PushMonitor]) -> None:
        self.config = config
        self.monitors = monitors
        self.dry_run = bool(config.getoption("kuma_dry_run", False))
        self.started = time.monotonic()
        self.outcomes = kr.Outcomes()
        self.collect_errors: list[str] = []
        self.results: list[kr.PushResult] = []
        self.signal: str | None = None
        self.finished = False
        self._old_term: Any = None
        try:
            self._old_term = signal.signal(signal.SIGTERM, self._on_term)
        except ValueError:  # not the main thread: leave signals alone
            self._old_term = None

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        if self.signal:  # a second SIGTERM must not break the DOWN push already under way
            return
        self.signal = "SIGTERM"
        raise KeyboardInterrupt("SIGTERM")  # pytest then ends the session as interrupted

    def ping_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors.append(report.nodeid or "collection")

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            groups = {m.name for m in item.iter_markers()}
            groups.add(item.path.stem)
            params = getattr(getattr(item, "callspec", None), "params", {})
            t = params.get("target")
            self.outcomes.select(item.nodeid, groups, getattr(t, "name", None) if t is not None else None)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.nodeid not in self.outcomes.groups:
            # Under xdist the controller collects nothing: take markers and module from the report.
            module = report.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
            groups = {k for k in report.keywords if k in KUMA_MARKERS} | {module}
            param = report.nodeid.rsplit("[", 1)[1].rstrip("]") if report.nodeid.endswith("]") else ""
            names = {n for m in self.monitors for n in m.targets or ()}
            target = next((n for n in names if n in param.split("-")), None)
            self.outcomes.select(report.nodeid, groups, target)
        self.outcomes.record(report.nodeid, report.when, report.outcome)

    def abort_reason(self, exitstatus: int) -> str | None:
        if exitstatus in (0, 1):
            return None
        if self.signal:
            return f"run interrupted by {self.signal}"
        if self.collect_errors:
            return f"{len(self.collect_errors)} collection error(s): {', '.join(self.collect_errors)}"
        return ABORTS.get(exitstatus, f"run ended with exit code {exitstatus}")

    def finish(self, abort: str | None) -> None:
        self.finished = True
        ping = self.ping_ms()
        self.outcomes.claimed = {c for m in self.monitors for c in m.covers}
        verdicts = [kr.judge(m, self.outcomes, ping, abort) for m in self.monitors]
        self.results = push_all(verdicts, self.dry_run)

    @pytest.hookimpl(tryfirst=True)  # before pytest-html and junitxml write their files
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.finish(self.abort_reason(int(exitstatus)))
        failed = [r for r in self.results if not r.ok]
        if failed and session.exitstatus == 0:  # a dry run still fails on an unset token env var
            session.exitstatus = max(r.exit_code for r in failed)
        self._to_reports()

    def _to_reports(self) -> None:
        from _pytest.junitxml import xml_key

        xml = self.config.stash.get(xml_key, None)
        for r in self.results:
            if xml is not None:
                xml.add_global_property(f"kuma push {r.verdict.monitor.name}", describe(r))

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str]) -> None:
        from pgbackup_verify.report.render import render_text

        prefix.extend(render_text("kuma.html.j2", ok=r.ok, line=describe(r)) for r in self.results)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.results:
            return
        terminalreporter.section("Uptime Kuma push")
        for r in self.results:
            terminalreporter.write_line(describe(r), red=not r.ok, green=r.ok and r.verdict.status == "up")
        if any(not r.ok for r in self.results):
            terminalreporter.write_line(f"Kuma push failed: exit code {max(r.exit_code for r in self.results)} "
                                        "unless a check failed (1)", red=True)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if not self.finished:  # configured, but no session ran (another plugin's usage error)
            self.finish(ABORTS[4])
            _announce([describe(r) for r in self.results])
        config.stash[DONE_KEY] = True
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or _skip_run(config) or config.pluginmanager.has_plugin(REPORTER):
        return
    monitors, error = load_monitors(config)
    if error is not None:
        _push_config_error(config, monitors, error)
        raise pytest.UsageError(error)
    if monitors:
        config.pluginmanager.register(KumaReporter(config, monitors), REPORTER)


def _push_config_error(config: pytest.Config, monitors: list[kr.PushMonitor], error: str) -> None:
    config.stash[DONE_KEY] = True
    # Kuma shows ~200 characters: the file's name says enough, its directory is in the terminal.
    msg = "config error: " + re.sub(r"'(?:[^']*/)([^'/]+)'", r"'\1'", error)
    outcomes = kr.Outcomes()
    verdicts = [kr.judge(m, outcomes, 0, msg) for m in monitors]
    results = push_all(verdicts, bool(config.getoption("kuma_dry_run", False)))
    _announce([describe(r) for r in results])


def pytest_unconfigure(config: pytest.Config) -> None:
    """A usage error raised before our pytest_configure ran (e.g. the core plugin's) still pushes down."""
    if hasattr(config, "workerinput") or _skip_run(config) or config.stash.get(DONE_KEY, False):
        return
    if config.pluginmanager.has_plugin(REPORTER):
        return
    monitors, error = load_monitors(config)
    if monitors:
        _push_config_error(config, monitors, error or ABORTS[4])
