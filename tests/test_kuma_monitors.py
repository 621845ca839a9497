"""The kuma checks against a real Kuma: each seed failure (paused, DOWN, silent, stale) fails them.

History that takes days to happen (a last UP 10 days ago) is written into the running Kuma's own
heartbeat table, exactly as Kuma would have written it; everything else goes through Kuma's APIs.
"""

from __future__ import annotations

import secrets
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kuma_helpers import MARKERS_INI, Pushed, kuma_toml, new_monitor, write_target
from pgbackup_verify_demo.kuma_server import push

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_kuma.py"
HOUR = 3600


def backdate(kuma, monitor_id: int, status: int, age: timedelta, msg: str) -> None:
    when = (datetime.now(UTC) - age).strftime("%Y-%m-%d %H:%M:%S.000")
    with sqlite3.connect(kuma.server.db_path, timeout=10) as db:
        db.execute("INSERT INTO heartbeat (monitor_id, status, msg, time, important, ping, duration, down_count) "
                   "VALUES (?, ?, ?, ?, 1, NULL, 0, 0)", (monitor_id, status, msg, when))


@pytest.fixture
def monitor(kuma, monkeypatch):
    """A fresh push monitor with a long interval, so Kuma's own timer stays out of the test."""

    def _make(label: str, **kw) -> Pushed:
        kw.setdefault("interval", HOUR)
        return new_monitor(kuma, monkeypatch, f"{label} {secrets.token_hex(3)}", "KUMA_PUSH_CHECKED", **kw)

    return _make


def run_checks(pytester, kuma, names: list[str], extra: str = "", push: list | None = None) -> pytest.RunResult:
    pytester.makefile(".ini", pytest=MARKERS_INI)
    part = kuma_toml(kuma.url, push or [], extra=f"monitors = {names!r}\n{extra}")
    target = write_target(pytester.path, part)
    return pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", "-rA",
                                         "--reports-dir", str(pytester.path / "reports"), str(CHECKS))


def db_read(kuma) -> str:
    return f'db = "{kuma.server.db_path}"'


@pytest.mark.parametrize("read", ["db", "socket"])
def test_healthy_monitor_passes_every_check(pytester, kuma, monitor, monkeypatch, read):
    m = monitor("PG Backup Local")
    assert push(kuma.url, m.token, "up", "OK: 7/7 checks passed")["ok"]
    if read == "socket":
        monkeypatch.setenv("KUMA_USERNAME", kuma.username)
        monkeypatch.setenv("KUMA_PASSWORD", kuma.password)
        extra = 'read = "socket"'
    else:
        extra = db_read(kuma)
    result = run_checks(pytester, kuma, [m.name], extra)
    result.assert_outcomes(passed=5)
    out = result.stdout.str()
    assert f"{m.name}: found by name" in out and "UP " in out and "last UP " in out
    assert kuma.password not in out and m.token not in out


def test_monitor_found_by_push_token_under_another_name(pytester, kuma, monitor):
    m = monitor("Renamed in Kuma")
    push(kuma.url, m.token, "up", "ok")
    listed = Pushed("PG Dump Permission Guard", m.id, m.token, m.env)
    result = run_checks(pytester, kuma, [], db_read(kuma), push=[(listed, ["kuma"])])
    result.assert_outcomes(passed=5)
    assert f"found by push token (named '{m.name}' in Kuma)" in result.stdout.str()


def test_missing_monitor_fails(pytester, kuma):
    result = run_checks(pytester, kuma, ["PG Backup Nowhere"], db_read(kuma))
    result.assert_outcomes(passed=4, failed=1)
    assert "Kuma monitor 'PG Backup Nowhere': FAILED (not found by name or push token" in result.stdout.str()


def test_paused_monitor_fails(pytester, kuma, monitor):
    m = monitor("PG Backup GDrive")
    push(kuma.url, m.token, "up", "ok")
    kuma.admin.pause(m.id)
    result = run_checks(pytester, kuma, [m.name], db_read(kuma))
    result.assert_outcomes(passed=4, failed=1)
    assert f"Kuma monitor '{m.name}': FAILED (paused by the monitor" in result.stdout.str()
    assert "fix: resume the monitor in Kuma" in result.stdout.str()


@pytest.mark.parametrize("read", ["db", "socket"])
def test_monitor_in_paused_group_fails_naming_the_group(pytester, kuma, monitor, monkeypatch, read):
    group = kuma.admin.add_group(f"Backups {secrets.token_hex(3)}")
    m = monitor("PG Backup Local", parent=group)
    push(kuma.url, m.token, "up", "ok")
    kuma.admin.pause(group)
    monkeypatch.setenv("KUMA_USERNAME", kuma.username)
    monkeypatch.setenv("KUMA_PASSWORD", kuma.password)
    result = run_checks(pytester, kuma, [m.name], db_read(kuma) if read == "db" else 'read = "socket"')
    result.assert_outcomes(passed=4, failed=1)
    assert "FAILED (paused by group 'Backups " in result.stdout.str()


def test_down_monitor_fails(pytester, kuma, monitor):
    m = monitor("PG Backup Local")
    push(kuma.url, m.token, "down", "1 failed of 7: test_latest_dump_is_complete")
    result = run_checks(pytester, kuma, [m.name], db_read(kuma))
    result.assert_outcomes(passed=3, failed=2)  # latest not UP, and no UP at all
    result.stdout.fnmatch_lines([f"*Kuma monitor '{m.name}': FAILED (latest heartbeat DOWN at * UTC, "
                                 "'1 failed of 7: test_latest_dump_is_complete' vs UP); fix: *"])


def test_silent_monitor_fails_although_kuma_shows_it_up(pytester, kuma, monitor):
    """The seed's 41 h: the last beat is UP, but far older than the interval (Kuma's timer was reset)."""
    m = monitor("PG Dump Permission Guard")
    backdate(kuma, m.id, 1, timedelta(hours=3), "OK: 5/5 checks passed")
    result = run_checks(pytester, kuma, [m.name], db_read(kuma))
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines([f"*Kuma monitor '{m.name}': FAILED (last UP 3.0 h ago vs limit 3900 s = "
                                 "interval 3600 s + grace 300 s; Kuma may still show it green*"])


def test_stale_monitor_fails_with_advice_to_pause(pytester, kuma, monitor):
    """The seed's retired job: active, DOWN every day for weeks, last UP long ago."""
    m = monitor("PG Backup Workflow")
    backdate(kuma, m.id, 1, timedelta(days=12), "ok")
    backdate(kuma, m.id, 0, timedelta(minutes=5), "No heartbeat in the time window")
    result = run_checks(pytester, kuma, [m.name], db_read(kuma))
    result.assert_outcomes(passed=2, failed=3)  # latest DOWN, last UP too old, stale
    out = result.stdout.str()
    assert f"Kuma monitor '{m.name}': FAILED (stale: last UP " in out and "12.0 days vs 7 days" in out
    assert "pause the monitor in Kuma" in out


def test_unreadable_kuma_is_one_line_error(pytester, kuma, monkeypatch):
    monkeypatch.delenv("KUMA_USERNAME", raising=False)
    result = run_checks(pytester, kuma, ["PG Backup Local"], 'read = "socket"')
    result.assert_outcomes(errors=5)
    assert result.ret == 13
    assert "not set; export the Kuma login or set [kuma].db" in result.stdout.str()
