"""Reading monitor facts from a real Kuma: kuma.db (read-only) vs the Socket.IO API (baseline).

History: 10 push monitors with one beat a minute for 30 days (432,000 heartbeats), the last
UP of one monitor 12 days back (a stale monitor). Prints medians and the ratio to the baseline.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgbackup_verify_demo.kuma_server import KumaAdmin, KumaServer, free_port, gen_token, install

from pgbackup_verify.config import KumaSection
from pgbackup_verify.facts.kuma import read_db, read_socket, wanted_monitors

MONITORS, DAYS = 10, 30


def seed(db_path: Path, ids: list[int]) -> int:
    now = datetime.now(UTC)
    rows = []
    for n, mid in enumerate(ids):
        for minute in range(DAYS * 24 * 60):
            t = now - timedelta(minutes=minute)
            up = 0 if (n == 0 and minute < 12 * 24 * 60) else 1  # monitor 0: stale for 12 days
            rows.append((mid, up, "ok" if up else "No heartbeat in the time window",
                         t.strftime("%Y-%m-%d %H:%M:%S.000")))
    with sqlite3.connect(db_path, timeout=30) as db:
        db.executemany("INSERT INTO heartbeat (monitor_id, status, msg, time, important, duration, down_count) "
                       "VALUES (?, ?, ?, ?, 0, 0, 0)", rows)
    return len(rows)


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pgbv-bench-kuma-") as d:
        password = "bench" + gen_token(12)
        with KumaServer(data_dir=Path(d), port=free_port(), package=install()) as server:
            admin = KumaAdmin(server.url, "bench", password)
            names = [f"PG Backup {i}" for i in range(MONITORS)]
            ids = [admin.add_push_monitor(n, interval=60)[0] for n in names]
            admin.close()
            beats = seed(server.db_path, ids)
            os.environ["BENCH_KUMA_USER"], os.environ["BENCH_KUMA_PASSWORD"] = "bench", password
            section = KumaSection(url=server.url, monitors=tuple(names), username_env="BENCH_KUMA_USER",
                                  password_env="BENCH_KUMA_PASSWORD")
            wanted = wanted_monitors(section)
            db_ms = median_ms(lambda: read_db(str(server.db_path), wanted), 10)
            socket_ms = median_ms(lambda: read_socket(section, wanted), 3)  # login is rate-limited (20/min)
            facts = read_db(str(server.db_path), wanted)
            sock = read_socket(section, wanted)
    stale_db, stale_sock = facts[0].last_up, sock[0].last_up
    print(f"kuma read, {MONITORS} monitors, {beats} heartbeats:")
    print(f"  socket (baseline): {socket_ms:8.1f} ms  1.0x   last UP of the stale monitor: {stale_sock}")
    print(f"  kuma.db read-only: {db_ms:8.1f} ms  {socket_ms / db_ms:.1f}x  last UP of the stale monitor: "
          f"{stale_db:%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    main()
