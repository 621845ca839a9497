"""Helpers for the Kuma self-tests: push monitors with env tokens, target files, heartbeats."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from pgbackup_verify_demo import demo

MARKERS_INI = """[pytest]
markers =
    grants: g
    dumps: d
    drill: r
    kuma: k
    host: h
    offsite: o
"""

GRANT_CHECKS = """import pytest
pytestmark = pytest.mark.grants

def test_dump_role_has_usage_on_every_schema():
    pass

def test_dump_role_can_read_every_table():
    pass
"""

DUMP_CHECKS = """import pytest
pytestmark = pytest.mark.dumps

def test_latest_dump_is_fresh():
    pass

def test_latest_dump_is_complete():
    assert {ok}, "latest dump: FAILED (20 B vs 10000 B); fix: rerun pg-backup.sh"
"""

# A conftest for a checks run whose pushes are timed. The Kuma plugin pushes before every other
# sessionfinish hook, so the run stamps the end of each check and the start of the other sessionfinish
# hooks: between the two lies the push phase alone. The interpreter's start-up and the writing of the
# reports, which a loaded machine stretches by seconds, are not what a push deadline bounds.
STAMP_CONFTEST = """import pathlib, time
def _stamp(name):
    pathlib.Path(__file__).with_name(name).write_text(repr(time.time()))
def pytest_runtest_logfinish(nodeid, location):
    _stamp("checks-ended")
def pytest_sessionfinish(session, exitstatus):
    _stamp("pushes-ended")
"""


def stamp(run_dir: Path, name: str) -> float:
    """A time.time() stamp of STAMP_CONFTEST: "checks-ended" (the last check) or "pushes-ended"."""
    return float((run_dir / name).read_text())


def push_phase(run_dir: Path) -> float:
    """Seconds from the end of the run's last check to the end of its pushes (STAMP_CONFTEST)."""
    return stamp(run_dir, "pushes-ended") - stamp(run_dir, "checks-ended")


@dataclass
class Pushed:
    name: str
    id: int
    token: str
    env: str


def new_monitor(kuma, monkeypatch: pytest.MonkeyPatch, name: str, env: str, **kw) -> Pushed:
    mid, token = kuma.admin.add_push_monitor(name, **kw)
    monkeypatch.setenv(env, token)
    return Pushed(name, mid, token, env)


def kuma_toml(url: str, monitors: list[tuple[Pushed, list[str]]], extra: str = "") -> str:
    out = f'\n[kuma]\nurl = "{url}"\npush_timeout = 1\n{extra}\n'
    for m, covers in monitors:
        out += f'\n[[kuma.push]]\nmonitor = "{m.name}"\ntoken_env = "{m.env}"\ncovers = {covers!r}\n'
    return out


def write_target(tmp_path: Path, kuma_part: str, name: str = "selftest") -> Path:
    """A target file whose [database]/[backups] are valid but unused (the test files don't connect)."""
    backups = tmp_path / "backups"
    backups.mkdir(exist_ok=True)
    dsn = "host=127.0.0.1 port=1 dbname=directus user=directus"
    return demo.write_target_file(tmp_path / f"{name}.toml", dsn, backups, name=name, extra=kuma_part)


def beats(kuma, monitor_id: int) -> list[tuple[int, str, int]]:
    """(status, msg, ping) newest first, read from kuma.db read-only as an operator would."""
    with sqlite3.connect(f"file:{kuma.server.db_path}?mode=ro", uri=True) as db:
        return db.execute("SELECT status, msg, ping FROM heartbeat WHERE monitor_id = ? ORDER BY time DESC, id DESC",
                          (monitor_id,)).fetchall()
