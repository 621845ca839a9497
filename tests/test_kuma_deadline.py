"""The whole push ends by one wall-clock deadline, against a real local server that trickles its
answer (one header line every 0.25 s: every socket read succeeds, so no read timeout fires), and a
SIGTERM during that push still leaves the reports and one line, exit 2, no traceback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kuma_helpers import GRANT_CHECKS, MARKERS_INI, STAMP_CONFTEST, Pushed, kuma_toml, push_phase, stamp, write_target

from pgbackup_verify.kuma import client
from pgbackup_verify.kuma.routing import PushMonitor
from pgbackup_verify.kuma.verdict import Verdict

TOKEN = "tricklePushToken0123456789abcdef"


class Trickle:
    """Accepts every connection, reads the request, then sends a status line and one header line
    every `every` seconds, never ending the headers."""

    def __init__(self, every: float = 0.25) -> None:
        self.every = every
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.connected = threading.Event()
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.connected.set()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                n = 0
                while not self.stop.wait(self.every):
                    n += 1
                    conn.sendall(f"X-Trickle-{n}: {n}\r\n".encode())
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def trickle() -> Iterator[Trickle]:
    server = Trickle()
    yield server
    server.close()


def test_push_to_a_trickling_server_ends_at_the_deadline(trickle, monkeypatch):
    monkeypatch.setenv("KUMA_PUSH_TRICKLE_A", TOKEN)
    monkeypatch.setenv("KUMA_PUSH_TRICKLE_B", TOKEN[::-1])
    monitors = [PushMonitor(f"Trickle {x}", f"KUMA_PUSH_TRICKLE_{x}", ("grants",), trickle.url, 1.0) for x in "AB"]
    deadline = client.deadline_for(monitors)
    assert deadline == 3.0  # two attempts of 1 s and the 1 s pause between them
    out: list[list[client.PushResult]] = []
    started = time.monotonic()
    pushing = threading.Thread(target=lambda: out.append(
        client.push_all([Verdict(m, "up", "OK: 2/2 checks passed", 1234) for m in monitors])), daemon=True)
    pushing.start()
    pushing.join(deadline + 30)  # a push that ignores the deadline trickles forever: fail, do not hang
    wall = time.monotonic() - started
    assert out, f"push_all still running {wall:.1f} s after a {deadline:g} s deadline"
    [results] = out
    print(f"push of 2 monitors to a trickling server: {wall:.2f} s (deadline {deadline:g} s)")
    # Not before the deadline (every read succeeds), and back soon after it: the slack is for a loaded
    # machine's scheduling, well below a second deadline's worth (a deadline counted twice still fails).
    assert deadline - 0.1 <= wall <= deadline + 2.0, f"push took {wall:.2f} s vs deadline {deadline:g} s"
    assert trickle.connections >= 2
    for r in results:
        assert not r.ok and r.exit_code == 12
        assert r.detail.startswith("abandoned: no complete answer within the push deadline of 3 s at http://127.0.0.1:")
        assert TOKEN not in r.detail and TOKEN[::-1] not in r.detail


def _run_checks_against(pytester: pytest.Pytester, url: str, slow_check: bool = False) -> tuple[Path, list[str]]:
    pytester.makefile(".ini", pytest=MARKERS_INI)
    pytester.makepyfile(test_grants=GRANT_CHECKS)
    pytester.makeconftest(STAMP_CONFTEST)
    guard = Pushed("Trickle Guard", 0, TOKEN, "KUMA_PUSH_TRICKLE_GUARD")
    target = write_target(pytester.path, kuma_toml(url, [(guard, ["grants"])]))
    env_args = [sys.executable, "-m", "pytest", "--target", str(target), "-p", "no:cacheprovider",
                "--reports-dir", str(pytester.path / "reports"), "-p", "no:xdist"]
    return target, env_args


def test_a_run_pushing_to_a_trickling_kuma_ends_by_the_deadline(pytester, trickle):
    _, cmd = _run_checks_against(pytester, trickle.url)
    proc = subprocess.run(cmd, cwd=pytester.path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUMA_PUSH_TRICKLE_GUARD": TOKEN})
    assert proc.returncode == 12, proc.stdout + proc.stderr
    assert "Trickle Guard: PUSH FAILED status=up" in proc.stdout
    assert "abandoned: no complete answer within the push deadline of 3 s" in proc.stdout
    assert "Kuma push failed; exit code 12: a push to Uptime Kuma failed" in proc.stdout
    # The pushes end by the 3 s deadline (timed from the last check: not the interpreter's start-up nor
    # the reports, which a loaded machine stretches); a push still trickling would hold the exit past 60 s.
    pushing = push_phase(pytester.path)
    assert 3.0 - 0.1 <= pushing <= 3.0 + 2.0, f"the pushes took {pushing:.1f} s after the last check"
    assert TOKEN not in proc.stdout + proc.stderr


def test_sigterm_during_the_push_writes_reports_and_exits_2_in_one_line(pytester, trickle):
    _, cmd = _run_checks_against(pytester, trickle.url)
    proc = subprocess.Popen(cmd, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "KUMA_PUSH_TRICKLE_GUARD": TOKEN})
    assert trickle.connected.wait(30), "the run never pushed"
    signalled = time.time()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)  # a push that ignored the deadline would trickle forever
    assert proc.returncode == 2, out + err
    # The push, under way at the SIGTERM, still ends by its 3 s deadline; the reports are written after
    # it (their time, which a loaded machine stretches, is bounded by the 30 s above).
    after = stamp(pytester.path, "pushes-ended") - signalled
    assert after <= 3.0 + 2.0, f"the push ended {after:.2f} s after SIGTERM; the push deadline is 3 s"
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    [line] = [ln for ln in err.splitlines() if ln.startswith("pgbackup-verify: SIGTERM")]
    assert line == ("pgbackup-verify: SIGTERM while pushing to Kuma and writing the reports: pushes finished or "
                    "abandoned within the 3 s deadline, reports written; exit 2")
    reports = pytester.path / "reports"
    assert {p.suffix for p in reports.glob("pgbackup-verify-*")} >= {".html", ".xml"}
    doc = json.loads((reports / "latest.json").read_text())
    assert [c["outcome"] for c in doc["checks"]] == ["passed", "passed"]  # the checks' verdict stands
    assert "abandoned: no complete answer" in "".join(p.read_text() for p in reports.glob("pgbackup-verify-*.xml"))
    assert TOKEN not in out + err
