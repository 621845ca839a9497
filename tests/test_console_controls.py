"""No terminal control character from the database or from Kuma reaches the console or cron mail.

A table named with `ESC [2J` (clear the screen), an OSC title sequence ended by BEL, a CR and a C1
CSI lacks SELECT for the dump role; a kuma.db (the SQLite file an attacker with Kuma's data
directory writes) holds a monitor whose latest heartbeat is DOWN with such a message and whose
notification carries such a name. The real `pgbackup-verify` runs over both, as cron runs it (-q)
and interactively with every section shown (-rA): its output holds no ESC, BEL, CR or C1 byte, and
the names are still there, escaped (`\\x1b[2J`).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from checkrun import pytester_env
from psycopg import sql

from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.grants import sql_ident
from pgbackup_verify.report.console import printable

HOSTILE = "\x1b[2J\x1b]0;owned\x07\rtbl\x9b31m"
MONITOR = "PG backup"


def kuma_db(path: Path) -> None:
    """The tables and columns of kuma.db the kuma checks read, as Kuma lays them out."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.000")
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE monitor (id INTEGER PRIMARY KEY, name TEXT, active BOOLEAN, interval INTEGER,
                                  parent INTEGER, push_token TEXT);
            CREATE TABLE heartbeat (id INTEGER PRIMARY KEY, monitor_id INTEGER, status INTEGER, msg TEXT,
                                    time DATETIME, important BOOLEAN, ping INTEGER, duration INTEGER,
                                    down_count INTEGER);
            CREATE TABLE notification (id INTEGER PRIMARY KEY, name TEXT, active BOOLEAN);
            CREATE TABLE monitor_notification (id INTEGER PRIMARY KEY, monitor_id INTEGER,
                                               notification_id INTEGER);""")
        db.execute("INSERT INTO monitor VALUES (1, ?, 1, 86400, NULL, NULL)", (MONITOR,))
        db.execute("INSERT INTO heartbeat (monitor_id, status, msg, time, important, ping, duration, down_count) "
                   "VALUES (1, 0, ?, ?, 1, 1, 0, 1)", (f"disk {HOSTILE} full", now))
        db.execute("INSERT INTO notification VALUES (1, ?, 1)", (f"mail {HOSTILE}",))
        db.execute("INSERT INTO monitor_notification VALUES (1, 1, 1)")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("console")
    kuma_db(root / "kuma.db")
    with ThrowawayCluster(tag="console-") as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE ROLE console_dump LOGIN")
            conn.execute("CREATE DATABASE console")
        with psycopg.connect(cluster.dsn("console"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE TABLE public.{} (id int)").format(sql.Identifier(HOSTILE)))
        target = root / "console.toml"
        target.write_text(f'[target]\nname = "console"\n[database]\ndsn = {json.dumps(cluster.dsn("console"))}\n'
                          f'dump_role = "console_dump"\n[backups]\ndirectory = {json.dumps(str(root))}\n'
                          f'[kuma]\nurl = "http://127.0.0.1:1"\nread = "db"\ndb = {json.dumps(str(root / "kuma.db"))}\n'
                          f"monitors = [{json.dumps(MONITOR)}]\n")
        out = {}
        for mode, flags in (("cron", ["-q"]), ("interactive", ["-rA", "-k", "grants or kuma"])):
            proc = subprocess.run([sys.executable, "-m", "pgbackup_verify.cli", "--target", str(target),
                                   "--reports-dir", str(root / mode), *flags],
                                  cwd=root, env=pytester_env(root), capture_output=True, timeout=300, check=False)
            out[mode] = proc.stdout + proc.stderr
    return out


@pytest.mark.parametrize("mode", ["cron", "interactive"])
def test_console_holds_no_control_character(outputs: dict[str, bytes], mode: str) -> None:
    text = outputs[mode]
    for byte in (b"\x1b", b"\x07", b"\r", "\x9b".encode()):
        assert byte not in text, (byte, text.count(byte), text[max(0, text.find(byte) - 200):text.find(byte) + 200])
    # The faults fired and their findings name the table, the message and the notification.
    assert b"test_dump_role_can_select_every_relation" in text or b"dump role reads every table" in text, text[-3000:]
    # The table in the grants fix as U&"..." (the same object, printable), the rest as escapes.
    assert sql_ident('"' + HOSTILE.replace('"', '""') + '"').encode() in text, text[-3000:]
    assert b"Kuma monitor 'PG backup': FAILED" in text, text[-3000:]
    assert f"mail {printable(HOSTILE)}".encode() in text or mode == "cron", text[-3000:]


def test_printable_keeps_newlines_and_tabs_and_shows_the_rest() -> None:
    assert printable("a\tb\nc") == "a\tb\nc"
    assert printable("\x1b[2J\r\x07\x00\x7f\x9b\u202e") == "\\x1b[2J\\x0d\\x07\\x00\\x7f\\x9b\\u202e"
    assert printable("Pilot Área ✈") == "Pilot Área ✈"
