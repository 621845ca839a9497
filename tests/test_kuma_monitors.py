"""The kuma checks against a real Kuma: each seed failure (paused, DOWN, silent, stale, no
notification) fails them; a monitor this suite feeds is judged only for what the suite can know.

History that takes hours or days to happen (a last UP 10 days ago) is written into the running
Kuma's own heartbeat table, exactly as Kuma would have written it; everything else goes through
Kuma's APIs.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from checkrun import ChecksRun, TargetResult, run_checks
from kuma_helpers import MARKERS_INI, Pushed, kuma_toml, write_target
from pgbackup_verify_demo.kuma_server import push

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_kuma.py"
HOUR = 3600


KUMA_ABSENCE = "No heartbeat in the time window"  # what Kuma writes itself, with no ping


def backdate(kuma, monitor_id: int, status: int, age: timedelta, msg: str, ping: int | None = None) -> None:
    """A heartbeat as Kuma writes it: a push (ping set) or Kuma's own beat (ping NULL)."""
    when = (datetime.now(UTC) - age).strftime("%Y-%m-%d %H:%M:%S.000")
    with sqlite3.connect(kuma.server.db_path, timeout=10) as db:
        db.execute("INSERT INTO heartbeat (monitor_id, status, msg, time, important, ping, duration, down_count) "
                   "VALUES (?, ?, ?, ?, 1, ?, 0, 0)", (monitor_id, status, msg, when, ping))


@dataclass(repr=False)
class Monitors:
    """One checks run over a target per case, each naming its own monitor(s) of the session's Kuma."""

    run: ChecksRun
    monitors: dict[str, Pushed]

    def __getitem__(self, case: str) -> TargetResult:
        return self.run[case]


def _monitor(kuma, label: str, notify: bool = True, **kw) -> Pushed:
    """A fresh push monitor with a long interval, so Kuma's own timer stays out of the test, and
    (unless `notify` is false) a notification attached."""
    kw.setdefault("interval", HOUR)
    if notify:
        kw["notifications"] = [_notification(kuma)]
    name = f"{label} {secrets.token_hex(3)}"
    mid, token = kuma.admin.add_push_monitor(name, **kw)
    return Pushed(name, mid, token, "KUMA_PUSH_" + secrets.token_hex(4).upper())


_NOTIFICATION: dict[str, int] = {}


def _notification(kuma) -> int:
    if kuma.url not in _NOTIFICATION:
        _NOTIFICATION[kuma.url] = kuma.admin.add_webhook_notification(f"Ops webhook {secrets.token_hex(3)}")
    return _NOTIFICATION[kuma.url]


@pytest.fixture(scope="module")
def kuma_run(kuma, tmp_path_factory: pytest.TempPathFactory) -> Monitors:
    root = tmp_path_factory.mktemp("kuma-cases")
    monitors: dict[str, Pushed] = {}
    parts: dict[str, str] = {}
    for read in ("db", "socket"):
        m = monitors[f"healthy-{read}"] = _monitor(kuma, "PG Backup Local")
        assert push(kuma.url, m.token, "up", "OK: 7/7 checks passed")["ok"]
        parts[f"healthy-{read}"] = kuma_toml(kuma.url, [], f"monitors = {[m.name]!r}\n"
                                             + (db_read(kuma) if read == "db" else 'read = "socket"'))

    m = monitors["renamed"] = _monitor(kuma, "Renamed in Kuma")
    push(kuma.url, m.token, "up", "ok")
    listed = Pushed("PG Dump Permission Guard", m.id, m.token, m.env)
    parts["renamed"] = kuma_toml(kuma.url, [(listed, ["kuma"])], f"monitors = []\n{db_read(kuma)}")

    parts["missing"] = kuma_toml(kuma.url, [], f"monitors = ['PG Backup Nowhere']\n{db_read(kuma)}")

    m = monitors["paused"] = _monitor(kuma, "PG Backup GDrive")
    push(kuma.url, m.token, "up", "ok")
    kuma.admin.pause(m.id)
    parts["paused"] = kuma_toml(kuma.url, [], f"monitors = {[m.name]!r}\n{db_read(kuma)}")

    for read in ("db", "socket"):
        group = kuma.admin.add_group(f"Backups {secrets.token_hex(3)}")
        m = monitors[f"paused-group-{read}"] = _monitor(kuma, "PG Backup Local", parent=group)
        push(kuma.url, m.token, "up", "ok")
        kuma.admin.pause(group)
        parts[f"paused-group-{read}"] = kuma_toml(kuma.url, [], f"monitors = {[m.name]!r}\n"
                                                  + (db_read(kuma) if read == "db" else 'read = "socket"'))

    m = monitors["down"] = _monitor(kuma, "PG Backup Local")
    push(kuma.url, m.token, "down", "1 failed of 7: test_latest_dump_is_complete")
    parts["down"] = kuma_toml(kuma.url, [], f"monitors = {[m.name]!r}\n{db_read(kuma)}")

    # The seed's 41 h: the last beat is UP, but far older than the interval (Kuma's timer was reset).
    m = monitors["silent"] = _monitor(kuma, "PG Dump Permission Guard")
    backdate(kuma, m.id, 1, timedelta(hours=3), "OK: 5/5 checks passed")
    parts["silent"] = kuma_toml(kuma.url, [], f"monitors = {[m.name]!r}\n{db_read(kuma)}")

    # The seed's retired job: active, DOWN every day for weeks, last UP long ago.
    m = monitors["stale"] = _monitor(kuma, "PG Backup Workflow")
    backdate(kuma, m.id, 1, timedelta(days=12), "ok")
    backdate(kuma, m.id, 0, timedelta(minutes=5), "No heartbeat in the time window")
    parts["stale"] = kuma_toml(kuma.url, [], f"monitors = {[m.name]!r}\n{db_read(kuma)}")

    # Monitors this suite feeds ([[kuma.push]]): only exists / active / notified / on schedule count.
    fed: list[Pushed] = []
    for case, notify in (("fed-new", True), ("fed-down", True), ("fed-late", True),
                         ("fed-unnotified-db", False), ("fed-unnotified-socket", False)):
        m = monitors[case] = _monitor(kuma, "PG Backup Local", notify=notify)
        fed.append(m)
        read = 'read = "socket"' if case.endswith("socket") else db_read(kuma)
        parts[case] = kuma_toml(kuma.url, [(m, ["kuma"])], f"monitors = []\n{read}")
    # Last night's run was red: its DOWN push must not make tonight's run red again.
    assert push(kuma.url, monitors["fed-down"].token, "down", "1 failed of 7: test_latest_dump_is_complete",
                ping=5000)["ok"]
    # The suite's last push was 3 h ago (interval 1 h); since then only Kuma's own absence beat.
    backdate(kuma, monitors["fed-late"].id, 1, timedelta(hours=3), "OK: 7/7 checks passed", ping=4200)
    backdate(kuma, monitors["fed-late"].id, 0, timedelta(minutes=5), KUMA_ABSENCE)

    (root / "run").mkdir()
    (root / "run" / "pytest.ini").write_text(MARKERS_INI)
    targets = []
    for case, part in parts.items():
        (root / case).mkdir()
        targets.append(write_target(root / case, part, name=case))
    env = {"KUMA_USERNAME": kuma.username, "KUMA_PASSWORD": kuma.password, listed.env: listed.token,
           **{m.env: m.token for m in fed}}
    return Monitors(run_checks(root / "run", targets, [CHECKS], env=env), monitors)


def run_checks_alone(pytester, kuma, names: list[str], extra: str = "") -> pytest.RunResult:
    pytester.makefile(".ini", pytest=MARKERS_INI)
    part = kuma_toml(kuma.url, [], extra=f"monitors = {names!r}\n{extra}")
    target = write_target(pytester.path, part)
    return pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", "-rA",
                                         "--reports-dir", str(pytester.path / "reports"), str(CHECKS))


def db_read(kuma) -> str:
    return f'db = "{kuma.server.db_path}"'


@pytest.mark.parametrize("read", ["db", "socket"])
def test_healthy_monitor_passes_every_check(kuma_run, kuma, read):
    m, result = kuma_run.monitors[f"healthy-{read}"], kuma_run[f"healthy-{read}"]
    result.assert_outcomes(passed=6, skipped=1)  # no [[kuma.push]]: the on-schedule check does not apply
    out = result.text
    assert f"{m.name}: found by name" in out and "UP " in out and "last UP " in out
    assert f"{m.name}: notifies Ops webhook " in out
    assert kuma.password not in kuma_run.run.stdout and m.token not in kuma_run.run.stdout


def test_monitor_found_by_push_token_under_another_name(kuma_run):
    m = kuma_run.monitors["renamed"]
    kuma_run["renamed"].assert_outcomes(passed=4, skipped=3)  # fed by this suite: its beats are not judged
    assert f"found by push token (named '{m.name}' in Kuma)" in kuma_run["renamed"].text


def test_missing_monitor_fails(kuma_run):
    kuma_run["missing"].assert_outcomes(passed=2, failed=1, skipped=4)
    assert "Kuma monitor 'PG Backup Nowhere': FAILED (not found by name or push token" in kuma_run["missing"].text


def test_paused_monitor_fails(kuma_run):
    m, result = kuma_run.monitors["paused"], kuma_run["paused"]
    result.assert_outcomes(passed=2, failed=1, skipped=4)
    assert f"Kuma monitor '{m.name}': FAILED (paused by the monitor: pushes are refused with 404)" in result.text
    assert "fix: resume the monitor in Kuma" in result.text


@pytest.mark.parametrize("read", ["db", "socket"])
def test_monitor_in_paused_group_fails_naming_the_group(kuma_run, read):
    result = kuma_run[f"paused-group-{read}"]
    result.assert_outcomes(passed=2, failed=1, skipped=4)
    result.fnmatch_line("*FAILED (paused by group 'Backups *': Kuma accepts its pushes, but its dashboard shows it "
                        "paused); fix: resume group 'Backups *' in Kuma*")


def test_down_monitor_fails(kuma_run):
    m, result = kuma_run.monitors["down"], kuma_run["down"]
    result.assert_outcomes(passed=4, failed=2, skipped=1)  # latest not UP, and no UP at all
    result.fnmatch_line(f"*Kuma monitor '{m.name}': FAILED (latest heartbeat DOWN at * UTC, "
                        "'1 failed of 7: test_latest_dump_is_complete' vs UP); fix: *")


def test_silent_monitor_fails_although_kuma_shows_it_up(kuma_run):
    """The seed's 41 h: the last beat is UP, but far older than the interval (Kuma's timer was reset)."""
    m, result = kuma_run.monitors["silent"], kuma_run["silent"]
    result.assert_outcomes(passed=5, failed=1, skipped=1)
    result.fnmatch_line(f"*Kuma monitor '{m.name}': FAILED (last UP 3.0 h ago vs limit 3900 s = "
                        "interval 3600 s + grace 300 s; Kuma may still show it green*")


def test_stale_monitor_fails_with_advice_to_pause(kuma_run):
    """The seed's retired job: active, DOWN every day for weeks, last UP long ago."""
    m, result = kuma_run.monitors["stale"], kuma_run["stale"]
    result.assert_outcomes(passed=3, failed=3, skipped=1)  # latest DOWN, last UP too old, stale
    out = result.text
    assert f"Kuma monitor '{m.name}': FAILED (stale: last UP " in out and "12.0 days vs 7 days" in out
    assert "pause the monitor in Kuma" in out


def test_brand_new_monitor_fed_by_this_suite_passes(kuma_run):
    m, result = kuma_run.monitors["fed-new"], kuma_run["fed-new"]
    result.assert_outcomes(passed=4, skipped=3)
    assert f"{m.name}: no push yet: a new monitor, this run's push is its first" in result.text


def test_last_nights_down_push_is_not_an_input(kuma_run):
    """Red night, then a healthy night: the DOWN this suite pushed does not fail tonight's checks."""
    m, result = kuma_run.monitors["fed-down"], kuma_run["fed-down"]
    result.assert_outcomes(passed=4, skipped=3)
    result.fnmatch_line(f"*{m.name}: previous push * s ago (DOWN; limit 3900 s = interval 3600 s + grace 300 s)*")
    assert result.outcome("test_latest_heartbeat_is_up") == "skipped"


def test_a_missed_push_of_this_suite_fails_once(kuma_run):
    """The seed's silence: the suite's last push is 3 h old (interval 1 h); Kuma's own absence
    beat since then is not a push."""
    m, result = kuma_run.monitors["fed-late"], kuma_run["fed-late"]
    result.assert_outcomes(passed=3, failed=1, skipped=3)
    result.fnmatch_line(f"*Kuma monitor '{m.name}': FAILED (previous push of this suite 3.0 h ago at * UTC vs limit "
                        "3900 s = interval 3600 s + grace 300 s: a scheduled run did not push); fix: check the cron*")


@pytest.mark.parametrize("read", ["db", "socket"])
def test_monitor_without_notification_fails(kuma_run, read):
    """The seed's ~37 h DOWN nobody noticed: a monitor with no notification reaches nobody."""
    m, result = kuma_run.monitors[f"fed-unnotified-{read}"], kuma_run[f"fed-unnotified-{read}"]
    result.assert_outcomes(passed=3, failed=1, skipped=3)
    assert result.outcome("test_every_monitor_has_an_active_notification") == "failed"
    result.fnmatch_line(f"*Kuma monitor '{m.name}': FAILED (no active notification attached vs at least one: its "
                        "DOWN reaches nobody); fix: attach a notification in Kuma*")


def test_unreadable_kuma_is_one_line_error(pytester, kuma, monkeypatch):
    monkeypatch.delenv("KUMA_USERNAME", raising=False)
    result = run_checks_alone(pytester, kuma, ["PG Backup Local"], 'read = "socket"')
    result.assert_outcomes(errors=7)
    assert result.ret == 13
    assert "not set; export the Kuma login or set [kuma].db" in result.stdout.str()
