"""The real-Kuma fixture itself: installed, started, set up, and accepting pushes."""

from __future__ import annotations

import sqlite3

from pgbackup_verify_demo.kuma_server import push


def test_kuma_runs_with_admin_and_accepts_pushes(kuma):
    mid, token = kuma.admin.add_push_monitor("fixture smoke")
    assert push(kuma.url, token, "up", "hello", ping=7) == {"ok": True}
    assert push(kuma.url, "no-such-token")["ok"] is False
    with sqlite3.connect(f"file:{kuma.server.db_path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT status, msg, ping FROM heartbeat WHERE monitor_id = ?", (mid,)).fetchall()
    assert rows == [(1, "hello", 7)]
    assert any(m["id"] == mid and m["pushToken"] == token for m in kuma.admin.monitors())
