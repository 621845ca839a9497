"""No push token and no Kuma password in any output, under any flag: `-l` (every local of every
frame), `--tb=long`, `-vv`, a malformed heartbeat time and a crash inside either Kuma reader.

Every output is searched: console (stdout, stderr), HTML, JUnit XML, latest.json, history.jsonl
(everything under --reports-dir) and what Kuma was told (the pushed msg).
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import pytest
from kuma_helpers import MARKERS_INI, beats, kuma_toml, new_monitor, write_target
from pgbackup_verify_demo.kuma_server import push

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_kuma.py"
FLAGS = ("-l", "--tb=long", "-vv", "-rA")

CRASH = """import pgbackup_verify.facts.kuma as kuma_facts


def _crash(value):
    raise RuntimeError("reader crash while parsing a heartbeat time")


kuma_facts.parse_time = _crash
"""


@pytest.mark.parametrize("read, fault", [("db", "malformed time"), ("db", "crash"), ("socket", "crash")])
def test_no_secret_in_any_output_under_any_flag(pytester, kuma, monkeypatch, read, fault):
    tag = secrets.token_hex(3)
    note = kuma.admin.add_webhook_notification(f"Ops {tag}")
    fed = new_monitor(kuma, monkeypatch, f"Fed {tag}", "KUMA_PUSH_SECRET_FED", interval=3600, notifications=[note])
    # Another job's monitor: named in [kuma].monitors, its token nowhere in this process's environment.
    _, other_token = kuma.admin.add_push_monitor(f"Other {tag}", interval=3600, notifications=[note])
    for token in (fed.token, other_token):
        assert push(kuma.url, token, "up", "OK", ping=10)["ok"]
    if fault == "malformed time":
        with sqlite3.connect(kuma.server.db_path, timeout=10) as db:
            db.execute("INSERT INTO heartbeat (monitor_id, status, msg, time, important, ping, duration, down_count) "
                       "VALUES (?, 1, 'OK', '2099-13-45 99:99', 1, 10, 0, 0)", (fed.id,))
    else:  # a plugin module: a conftest.py here would not apply to the shipped checks' directory
        pytester.makepyfile(crash_reader=CRASH)
    monkeypatch.setenv("KUMA_USERNAME", kuma.username)
    monkeypatch.setenv("KUMA_PASSWORD", kuma.password)
    pytester.makefile(".ini", pytest=MARKERS_INI)
    how = f'db = "{kuma.server.db_path}"' if read == "db" else 'read = "socket"'
    target = write_target(pytester.path, kuma_toml(kuma.url, [(fed, ["kuma"])],
                                                   extra=f"monitors = ['Other {tag}']\n{how}"))
    plugin = ["-p", "crash_reader"] if fault == "crash" else []
    result = pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", *plugin, *FLAGS,
                                           "--reports-dir", str(pytester.path / "reports"), str(CHECKS))
    assert result.ret == 1
    out = result.stdout.str() + result.stderr.str()
    if fault == "malformed time":
        assert f"monitor 'Fed {tag}': heartbeat time '2099-13-45 99:99' is not a Kuma time" in out
    elif read == "db":  # a real crash: the long traceback with every local, the token shown redacted
        assert "RuntimeError: reader crash while parsing a heartbeat time" in out
        assert "token=Secret('***')" in out
    else:
        assert "sent monitors this reader does not understand (RuntimeError)" in out
    files = [p for p in (pytester.path / "reports").rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".html", ".xml", ".json", ".jsonl"}
    everything = out + "".join(p.read_text(errors="replace") for p in files)
    [msg] = [m for status, m, _ in beats(kuma, fed.id) if status == 0]  # this run's push (the bad row sorts first)
    assert msg.startswith("ERROR kuma: ") and msg.endswith("(+6 more)"), msg  # the first of 7 errors, in words
    everything += msg
    for secret, what in ((fed.token, "the fed monitor's push token"), (other_token, "another monitor's token"),
                         (kuma.password, "the Kuma password")):
        assert secret not in everything, f"{what} leaked"
