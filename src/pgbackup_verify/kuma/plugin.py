"""pytest plugin: at the end of every run, tell each Uptime Kuma push monitor the truth.

Modelled on testinfra's NagiosReporter: a reporter object registered in pytest_configure (not on
xdist workers) acts in pytest_sessionfinish, judging each monitor from the run's one outcome fold
(pgbackup_verify.outcome), the same fold the summary line, JSON, HTML and history read.
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
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from pgbackup_verify.config import ConfigError, KumaSection, iter_target_files, load_section
from pgbackup_verify.config.settings import SETTINGS_KEY, resolve, target_paths
from pgbackup_verify.errors import EXIT_CODES
from pgbackup_verify.kuma import client, routing
from pgbackup_verify.kuma import verdict as kr
from pgbackup_verify.outcome import ABORTS, RunFold
from pgbackup_verify.report.console import printable
from pgbackup_verify.report.render import render_text
from pgbackup_verify.report.summary import recorder

REPORTER = "pgbackup_verify_kuma_reporter"
CONFIG_ENV = "PGBACKUP_VERIFY_KUMA_CONFIG"
DONE_KEY = pytest.StashKey[bool]()


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


def _kuma_file(path: Path) -> list[routing.PushMonitor]:
    try:
        section: KumaSection = load_section(path, "kuma")
    except ConfigError as e:
        raise ConfigError(f"kuma config {e}") from None
    return routing.monitors_of(section, None)


def _paths(config: pytest.Config) -> tuple[list[Path], bool]:
    """The Kuma file of --kuma-config, else the target files (the settings' one decision of which)."""
    own = config.getoption("kuma_config", None) or os.environ.get(CONFIG_ENV)
    if own:
        return [Path(own)], True
    paths, _ = target_paths(config)
    return [f for p in paths for f in iter_target_files(p, strict=False)], False


def load_monitors(config: pytest.Config) -> tuple[list[routing.PushMonitor], str | None, list[str]]:
    """The push monitors and, if the configuration is broken, its one-line error.

    On a broken file only its [kuma] tables are read, each [[kuma.push]] on its own, so every
    monitor whose entry is readable still hears about it, and hears which entries were not.
    """
    paths, own = _paths(config)
    try:
        if own:
            return _kuma_file(paths[0]), None, []
        if not paths:
            return [], None, []
        settings = config.stash.get(SETTINGS_KEY, None) or resolve(config)
        return routing.monitors_for(list(settings.targets), settings.broken), None, []
    except ConfigError as e:
        monitors: list[routing.PushMonitor] = []
        unreadable: list[str] = []
        for p in paths:
            found, lost = routing.tolerant_read(p)
            monitors += found
            unreadable += [f"{lost_one} of '{p.name}'" if len(paths) > 1 else lost_one for lost_one in lost]
        return monitors, str(e), unreadable


def _announce(lines: list[str]) -> None:
    for line in lines:
        sys.stderr.write(f"pgbackup-verify kuma: {line}\n")


def push_all(verdicts: list[kr.Verdict], dry_run: bool) -> list[client.PushResult]:
    """All monitors at once, under one deadline: a hung or trickling Kuma costs at most that."""
    return client.push_all(verdicts, dry_run=dry_run)


def describe(r: client.PushResult) -> str:
    v = r.verdict
    state = "PUSH FAILED" if not r.ok else ("would push" if "dry run" in r.detail else "pushed")
    # r.detail quotes Kuma's answer: no control character of it reaches the terminal (report.console).
    return printable(f"{v.monitor.name}: {state} status={v.status} msg='{v.msg}' ping={v.ping_ms} ms -> {r.detail}")


class KumaReporter:
    def __init__(self, config: pytest.Config, monitors: list[routing.PushMonitor]) -> None:
        self.config = config
        self.monitors = monitors
        self.dry_run = bool(config.getoption("kuma_dry_run", False))
        self.started = time.monotonic()
        self.run = recorder(config).fold  # the run's one fold: the same verdict as the reports
        self.results: list[client.PushResult] = []
        self.finished = False
        self.finishing = False  # the session is over: pushing, then writing reports
        self.late_signal: str | None = None  # a signal that arrived then
        self._old_term: Any = None
        self._old_int: Any = None
        try:
            self._old_term = signal.signal(signal.SIGTERM, self._on_term)
        except ValueError:  # not the main thread: leave signals alone
            self._old_term = None

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.finishing:
            # The verdict is decided: interrupting now would lose the push and the reports (and
            # print a traceback). Note it; the pushes end by their deadline, then exit 2.
            self.late_signal = self.late_signal or name
            return
        if self.run.signal:  # a second SIGTERM must not break the DOWN push already under way
            return
        self.run.interrupt(name)
        raise KeyboardInterrupt(name)  # pytest then ends the session as interrupted

    def _start_finishing(self) -> None:
        self.finishing = True
        try:  # Ctrl-C while pushing or writing reports: the same as SIGTERM then
            self._old_int = signal.signal(signal.SIGINT, self._on_term)
        except ValueError:
            self._old_int = None

    def exitstatus(self) -> int:
        session = getattr(self, "session", None)
        return int(session.exitstatus) if session is not None else 0

    def ping_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def finish(self, refused: str | None = None) -> None:
        self.finished = True
        if refused:
            self.run.refuse(refused)
        ping = self.ping_ms()
        claimed = {c for m in self.monitors for c in m.covers}
        verdicts = [kr.judge(m, self.run, ping, claimed) for m in self.monitors]
        self.results = push_all(verdicts, self.dry_run)

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> Any:
        """Push before every other sessionfinish (pytest-html and junitxml write their files then,
        with the push results); a signal meanwhile no longer interrupts, it ends the run with exit 2."""
        self._start_finishing()
        self.session = session
        try:
            self.run.finish(int(exitstatus))
            self.finish()
            failed = [r for r in self.results if not r.ok]
            if failed and session.exitstatus == 0:  # a dry run still fails on an unset token env var
                session.exitstatus = max(r.exit_code for r in failed)
            self._to_reports()
            return (yield)
        finally:
            if self.late_signal:
                session.exitstatus = 2
                sys.stderr.write(f"pgbackup-verify: {self.late_signal} while pushing to Kuma and writing the "
                                 f"reports: pushes finished or abandoned within the "
                                 f"{client.deadline_for(self.monitors):g} s deadline, reports written; exit 2\n")

    def _to_reports(self) -> None:
        from _pytest.junitxml import xml_key

        xml = self.config.stash.get(xml_key, None)
        for r in self.results:
            if xml is not None:
                xml.add_global_property(f"kuma push {r.verdict.monitor.name}", describe(r))

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str]) -> None:
        prefix.extend(render_text("kuma.html.j2", ok=r.ok, line=describe(r)) for r in self.results)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.results:
            return
        terminalreporter.section("Uptime Kuma push")
        for r in self.results:
            terminalreporter.write_line(describe(r), red=not r.ok, green=r.ok and r.verdict.status == "up")
        if any(not r.ok for r in self.results):
            # The exit status as it stands now (a failed check's 1 is never replaced by a push's 12/13).
            code = int(self.exitstatus())
            terminalreporter.write_line(f"Kuma push failed; exit code {code}: {EXIT_CODES.get(code, 'see README')}",
                                        red=True)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if not self.finished:  # configured, but no session ran (another plugin's usage error)
            self.finish(refused=ABORTS[4])
            _announce([describe(r) for r in self.results])
        config.stash[DONE_KEY] = True
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)
        if self._old_int is not None:
            signal.signal(signal.SIGINT, self._old_int)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if _skip_run(config):
        return
    recorder(config)  # on xdist workers too: their reports carry the routing the controller judges by
    if hasattr(config, "workerinput") or config.pluginmanager.has_plugin(REPORTER):
        return
    monitors, error, unreadable = load_monitors(config)
    if error is not None:
        _push_config_error(config, monitors, error, unreadable)
        raise pytest.UsageError(error)
    if monitors:
        config.pluginmanager.register(KumaReporter(config, monitors), REPORTER)


def _push_config_error(config: pytest.Config, monitors: list[routing.PushMonitor], error: str,
                       unreadable: Sequence[str] = ()) -> None:
    config.stash[DONE_KEY] = True
    # Kuma shows ~200 characters: the file's name says enough, its directory is in the terminal.
    msg = "config error: " + re.sub(r"'(?:[^']*/)([^'/]+)'", r"'\1'", error)
    if unreadable:  # named whatever the length of the error: those monitors hear nothing
        note = f" ({', '.join(unreadable)} unreadable, not told)"
        msg = kr.clip(msg, kr.MSG_LIMIT - len(note)) + note
    run = RunFold()
    run.refuse(msg)
    verdicts = [kr.judge(m, run, 0) for m in monitors]
    results = push_all(verdicts, bool(config.getoption("kuma_dry_run", False)))
    _announce([describe(r) for r in results])


def pytest_unconfigure(config: pytest.Config) -> None:
    """A usage error raised before our pytest_configure ran (e.g. the core plugin's) still pushes down."""
    if hasattr(config, "workerinput") or _skip_run(config) or config.stash.get(DONE_KEY, False):
        return
    if config.pluginmanager.has_plugin(REPORTER):
        return
    monitors, error, unreadable = load_monitors(config)
    if monitors:
        _push_config_error(config, monitors, error or ABORTS[4], unreadable)
