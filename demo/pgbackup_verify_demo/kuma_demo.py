"""A demo Uptime Kuma shaped like the seed's: three push monitors, one per concern (Phase C).

`start(workdir)` runs a real Kuma with "PG Dump Permission Guard", "PG Backup Local" and
"PG Backup GDrive", puts their push tokens in this process's environment (as a cron job's
environment file would) and returns the [kuma] section for the demo target file.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from pgbackup_verify_demo.kuma_server import KumaAdmin, KumaServer, free_port, gen_token, install

# monitor -> (token env var, checks it covers), as in target.example.toml
SEED_MONITORS = {
    "PG Dump Permission Guard": ("KUMA_PUSH_PERMISSION_GUARD", ["grants", "sql"]),
    "PG Backup Local": ("KUMA_PUSH_BACKUP_LOCAL", ["dumps", "drill", "host", "kuma"]),
    "PG Backup GDrive": ("KUMA_PUSH_BACKUP_GDRIVE", ["offsite"]),
}
DAILY = 86400


@dataclass
class DemoKuma:
    server: KumaServer
    admin: KumaAdmin
    ids: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def toml(self) -> str:
        """The [kuma] section: read kuma.db, push to the three monitors (tokens from the environment)."""
        out = f'\n[kuma]\nurl = "{self.url}"\ndb = "{self.server.db_path}"\n'
        for name, (env, covers) in SEED_MONITORS.items():
            out += f'\n[[kuma.push]]\nmonitor = "{name}"\ntoken_env = "{env}"\ncovers = {covers!r}\n'
        return out

    def latest(self) -> list[str]:
        """One line per monitor: its newest heartbeat, i.e. what this run pushed."""
        lines = []
        with sqlite3.connect(f"file:{self.server.db_path}?mode=ro", uri=True) as db:
            for name, mid in self.ids.items():
                row = db.execute("SELECT status, msg FROM heartbeat WHERE monitor_id = ? ORDER BY time DESC "
                                 "LIMIT 1", (mid,)).fetchone()
                state = {0: "DOWN", 1: "UP"}.get(row[0], str(row[0])) if row else "no heartbeat"
                lines.append(f"Kuma {name}: {state} {row[1]!r}" if row else f"Kuma {name}: {state}")
        return lines

    def stop(self) -> None:
        self.admin.close()
        self.server.stop()


def seed_monitors(admin: KumaAdmin, interval: int = DAILY) -> dict[str, int]:
    """Create the seed's monitors and export their tokens. Nothing is written into Kuma's tables:
    a brand-new monitor is healthy to the kuma checks, and the first run's push is its first beat."""
    ids = {}
    # A DOWN must reach a person: the demo's "person" is a webhook to a closed local port.
    note = admin.add_webhook_notification("Demo webhook (goes nowhere)")
    for name, (env, _covers) in SEED_MONITORS.items():
        mid, token = admin.add_push_monitor(name, interval=interval, notifications=[note])
        os.environ[env] = token
        ids[name] = mid
    return ids


def start(workdir: Path) -> DemoKuma:
    """Start a demo Kuma in `workdir/kuma` (npm install on first use); write its login to a 0600 file."""
    server = KumaServer(data_dir=workdir / "kuma", port=free_port(), package=install()).start()
    try:
        password = "demo" + gen_token(16)
        admin = KumaAdmin(server.url, "demo", password)
        login = workdir / "kuma-login.txt"
        login.touch(mode=0o600)
        login.write_text(f"{server.url}\nuser demo\npassword {password}\n")
        demo = DemoKuma(server, admin)
        demo.ids = seed_monitors(admin)
    except BaseException:
        server.stop()
        raise
    return demo
