"""Kuma is untrusted input: its kuma.db, its answers. Each attack against the real reader and pusher:

- a kuma.db whose `monitor` is an endless recursive view: the run ends by [kuma].read_timeout with one
  line naming kuma.db, and a SIGTERM during that read ends the run within seconds, reports written;
- a push answered by a huge body, by a redirect to another server, and a push with a proxy and a
  ~/.netrc in the environment: at most 64 KiB read, no redirect followed, nothing of the environment used.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kuma_helpers import MARKERS_INI, kuma_toml, write_target

from pgbackup_verify.kuma import client
from pgbackup_verify.kuma.routing import PushMonitor
from pgbackup_verify.kuma.verdict import Verdict

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_kuma.py"
TOKEN = "untrustedPushToken0123456789abcd"

ENDLESS = """
CREATE VIEW monitor AS
  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
  SELECT i AS id, 'm' || i AS name, 1 AS active, 60 AS interval, NULL AS parent, '' AS push_token FROM n;
CREATE TABLE heartbeat (id INTEGER PRIMARY KEY, monitor_id INT, status INT, msg TEXT, time TEXT, ping INT);
"""


def _endless_db(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.executescript(ENDLESS)
    db.close()
    return path


def _target(tmp: Path, read_timeout: float) -> tuple[Path, list[str]]:
    (tmp / "pytest.ini").write_text(MARKERS_INI)
    db = _endless_db(tmp / "kuma.db")
    target = write_target(tmp, kuma_toml("http://127.0.0.1:1", [],
                                         f'monitors = ["PG Backup Local"]\ndb = "{db}"\nread_timeout = {read_timeout}'))
    cmd = [sys.executable, "-m", "pytest", "--target", str(target), "-p", "no:cacheprovider", "-p", "no:xdist",
           "--reports-dir", str(tmp / "reports"), str(CHECKS)]
    return db, cmd


def test_an_endless_kuma_db_ends_by_the_read_timeout_in_one_line(tmp_path: Path) -> None:
    db, cmd = _target(tmp_path, 2)
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    wall = time.monotonic() - started
    print(f"run over a kuma.db with an endless view: {wall:.1f} s (read_timeout 2 s)")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"cannot read (kuma.db '{db}' was not read within 2 s (a view or trigger that never ends?); " \
           "check the file is Kuma's own database or raise [kuma].read_timeout)" in out
    assert "Traceback" not in out
    # pytest's start-up (1-2 s idle, up to ~18 s measured at load 16 on 2 cores) + the 2 s read
    assert wall < 2 + 30, f"{wall:.1f} s"


def _holds_open(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_sigterm_during_an_endless_kuma_db_read_ends_the_run_with_reports(tmp_path: Path) -> None:
    db, cmd = _target(tmp_path, 600)
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        give_up = time.monotonic() + 60
        while not _holds_open(proc.pid, db) and time.monotonic() < give_up:
            time.sleep(0.05)
        assert _holds_open(proc.pid, db), "the run never opened kuma.db"
        time.sleep(1.0)  # well inside the endless query now
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    after = time.monotonic() - signalled
    print(f"SIGTERM during the endless kuma.db read: exit {proc.returncode} after {after:.2f} s")
    assert proc.returncode == 2, out + err
    # The read stops within 0.1 s (bounded.SLICE); then the reports are written and the interpreter exits:
    # 4.5-5 s measured at load 12 on 2 cores, 12.5 s at load 16 (before: still running 20 s after SIGTERM).
    assert after < 15, f"{after:.1f} s"
    assert "Traceback" not in out + err
    doc = json.loads((tmp_path / "reports" / "latest.json").read_text())
    assert doc["checks"], doc


class Answer(BaseHTTPRequestHandler):
    """Configured per server: a huge body, a redirect, or Kuma's ok; records what it was sent."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # http.server's name
        srv = self.server
        srv.seen.append((self.path, self.headers.get("Authorization")))  # type: ignore[attr-defined]
        kind = srv.kind  # type: ignore[attr-defined]
        if kind == "huge":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            piece = b" " * (1 << 20)
            try:
                for _ in range(1024):  # 1 GiB of whitespace before any JSON
                    self.wfile.write(piece)
                    srv.sent += len(piece)  # type: ignore[attr-defined]
            except OSError:
                return
        elif kind == "redirect":
            self.send_response(302)
            self.send_header("Location", srv.target + self.path)  # type: ignore[attr-defined]
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            body = b'{"ok":true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


def _server(kind: str, target: str = "") -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    srv.kind, srv.target, srv.seen, srv.sent = kind, target, [], 0  # type: ignore[attr-defined]
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def servers() -> Iterator[dict[str, ThreadingHTTPServer]]:
    made: dict[str, ThreadingHTTPServer] = {}
    ok = made["ok"] = _server("ok")
    made["huge"] = _server("huge")
    made["redirect"] = _server("redirect", f"http://127.0.0.1:{ok.server_address[1]}")
    made["proxy"] = _server("ok")
    yield made
    for s in made.values():
        s.shutdown()
        s.server_close()


def _push(srv: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch) -> client.PushResult:
    monkeypatch.setenv("KUMA_PUSH_UNTRUSTED", TOKEN)
    m = PushMonitor("Untrusted", "KUMA_PUSH_UNTRUSTED", ("grants",), f"http://127.0.0.1:{srv.server_address[1]}", 5.0)
    [r] = client.push_all([Verdict(m, "up", "OK: 1/1 checks passed", 10)])
    return r


def test_a_huge_answer_is_read_only_to_64_kib(servers, monkeypatch):
    r = _push(servers["huge"], monkeypatch)
    assert not r.ok and r.exit_code == 12
    assert "Kuma answered HTTP 200 not ok: an answer larger than 64 KiB, not Kuma's after 2 attempts" == r.detail
    print(f"huge answer: server wrote {servers['huge'].sent >> 20} MiB of 1024 before the push hung up")
    assert servers["huge"].sent < 64 << 20


def test_a_redirect_is_not_followed(servers, monkeypatch):
    r = _push(servers["redirect"], monkeypatch)
    assert not r.ok and "Kuma answered HTTP 302 not ok: a redirect, not followed" in r.detail
    assert servers["ok"].seen == [], "the token went to the redirect's target"


def test_no_proxy_or_netrc_from_the_environment(servers, monkeypatch, tmp_path):
    proxy = f"http://127.0.0.1:{servers['proxy'].server_address[1]}"
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login admin password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    r = _push(servers["ok"], monkeypatch)
    assert r.ok, r.detail
    assert servers["proxy"].seen == [], "the push went through the environment's proxy"
    assert [auth for _, auth in servers["ok"].seen] == [None], "~/.netrc credentials were sent"


def test_a_trickling_socketio_server_ends_by_the_read_timeout(monkeypatch) -> None:
    """Socket.IO read path: a server that answers one header line every 0.25 s (every socket read
    succeeds, so no per-read timeout fires) is given up at [kuma].read_timeout, in one line."""
    from test_kuma_deadline import Trickle

    from pgbackup_verify.config.ops import KumaSection
    from pgbackup_verify.facts.kuma import KumaReadError, read

    monkeypatch.setenv("KUMA_USERNAME", "admin")
    monkeypatch.setenv("KUMA_PASSWORD", "admin123")
    server = Trickle()
    try:
        section = KumaSection(url=server.url, monitors=("PG Backup Local",), read="socket", read_timeout=1.5)
        started = time.monotonic()
        with pytest.raises(KumaReadError) as e:
            read(section)
        wall = time.monotonic() - started
    finally:
        server.close()
    print(f"trickling Socket.IO server: given up after {wall:.2f} s (read_timeout 1.5 s)")
    assert str(e.value) == (f"Kuma at {server.url} did not answer the monitor lists within 1.5 s; check it is "
                            "Kuma and not overloaded, or raise [kuma].read_timeout")
    assert wall < 1.5 + 1.0
