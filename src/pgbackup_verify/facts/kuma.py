"""Facts about the Kuma monitors a target names: found, effectively active, latest beat, last UP.

Two read paths return the same facts:
- `db`: Kuma's SQLite `kuma.db`, opened read-only. The default whenever `[kuma].db` is set: the whole
  heartbeat history is there, so "last UP" and "stale for N days" are exact; no credentials and no
  login rate limit. It is what the seed host offers (Kuma in Docker with kuma.db bind-mounted).
- `socket`: Kuma's Socket.IO API (login, monitorList, heartbeatList) for a remote Kuma or a 2.x on
  MariaDB. Kuma sends only the last 100 beats per monitor, so an old last UP may be out of sight.
Freshness is judged from heartbeat times here, never from Kuma's own DOWN-by-absence, whose timer
restarts with the server (uptime-kuma #3504, #6069).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pgbackup_verify.config import KumaSection
from pgbackup_verify.errors import KUMA_CREDENTIALS_MISSING, UserError

STATUS = {0: "DOWN", 1: "UP", 2: "PENDING", 3: "MAINTENANCE"}


class KumaReadError(Exception):
    """Kuma could not be read; str() is one line naming the source and what to do."""


class KumaCredentialsMissing(UserError):
    """The socket read path needs a login the environment does not hold (exit 13)."""

    exit_code = KUMA_CREDENTIALS_MISSING


@dataclass(frozen=True)
class Wanted:
    name: str
    token: str | None  # from the push monitor's env var, used only to match


@dataclass(frozen=True)
class Beat:
    status: int
    time: datetime
    msg: str

    @property
    def state(self) -> str:
        return STATUS.get(self.status, str(self.status))


@dataclass(frozen=True)
class MonitorFacts:
    wanted: str
    found: bool
    matched_by: str = ""  # "name" or "push token"
    kuma_name: str = ""
    active: bool = False
    effectively_active: bool = False
    paused_by: str = ""  # the monitor itself or the paused group above it
    interval: int = 0
    latest: Beat | None = None
    last_up: datetime | None = None
    oldest_seen: datetime | None = None
    full_history: bool = True


@dataclass(frozen=True)
class KumaFacts:
    read_path: str
    source: str
    now: datetime
    monitors: tuple[MonitorFacts, ...]


def wanted_monitors(k: KumaSection) -> list[Wanted]:
    out = [Wanted(p.monitor, os.environ.get(p.token_env) or None) for p in k.push]
    out += [Wanted(n, None) for n in k.monitors if n not in {w.name for w in out}]
    return out


def parse_time(value: str) -> datetime:
    """Kuma stores UTC as text, e.g. '2026-11-23 08:09:33.539'."""
    return datetime.fromisoformat(value.replace("T", " ").rstrip("Z")).replace(tzinfo=UTC)


def _judge(w: Wanted, rows: dict[int, dict[str, Any]], beats: dict[int, list[Beat]], full: bool) -> MonitorFacts:
    by_token = [m for m in rows.values() if w.token and m["token"] == w.token]
    by_name = [m for m in rows.values() if m["name"] == w.name]
    m, how = (by_token[0], "push token") if by_token else ((by_name[0], "name") if by_name else (None, ""))
    if m is None:
        return MonitorFacts(wanted=w.name, found=False)
    chain, node = [m], rows.get(m["parent"]) if m["parent"] else None
    while node is not None and node not in chain:  # its groups, upwards
        chain.append(node)
        node = rows.get(node["parent"]) if node["parent"] else None
    # A paused group pauses everything below it (the socket API already folds it into `active`).
    groups_off = [g["name"] for g in chain[1:] if not g["active"]]
    paused_by = f"group '{groups_off[-1]}'" if groups_off else ("" if m["active"] else "itself")
    mine = sorted(beats.get(m["id"], []), key=lambda b: b.time)
    ups = [b.time for b in mine if b.status == 1]
    return MonitorFacts(wanted=w.name, found=True, matched_by=how, kuma_name=m["name"], active=bool(m["active"]),
                        effectively_active=not paused_by, paused_by=paused_by, interval=int(m["interval"] or 0),
                        latest=mine[-1] if mine else None, last_up=max(ups) if ups else None,
                        oldest_seen=mine[0].time if mine else None, full_history=full)


def read_db(path: str, wanted: list[Wanted]) -> list[MonitorFacts]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as e:
        raise KumaReadError(f"kuma.db '{path}' cannot be opened read-only ({e}); fix [kuma].db") from None
    try:
        rows = {r[0]: {"id": r[0], "name": r[1], "active": r[2], "token": r[3], "interval": r[4], "parent": r[5]}
                for r in db.execute("SELECT id, name, active, push_token, interval, parent FROM monitor")}
        beats: dict[int, list[Beat]] = {}
        for mid in rows:
            # The latest beat and the latest UP are enough; both use the (monitor_id, time) index.
            q = ("SELECT status, time, msg FROM heartbeat WHERE monitor_id = ? {} ORDER BY time {} LIMIT 1")
            found = [db.execute(q.format(cond, order), (mid,)).fetchone()
                     for cond, order in (("", "DESC"), ("AND status = 1", "DESC"), ("", "ASC"))]
            beats[mid] = [Beat(int(s), parse_time(t), msg or "") for s, t, msg in {f for f in found if f}]
    except sqlite3.Error as e:
        raise KumaReadError(f"kuma.db '{path}' is not a Kuma database ({e}); fix [kuma].db") from None
    finally:
        db.close()
    return [_judge(w, rows, beats, full=True) for w in wanted]


def read_socket(k: KumaSection, wanted: list[Wanted], timeout: float = 15.0) -> list[MonitorFacts]:
    user, password = os.environ.get(k.username_env), os.environ.get(k.password_env)
    if not user or not password:
        raise KumaCredentialsMissing(f"Kuma login for {k.url}: env {k.username_env} / {k.password_env} not set; "
                                     "export the Kuma login or set [kuma].db to read kuma.db instead")
    from uptime_kuma_api import UptimeKumaApi, UptimeKumaException

    try:
        api = UptimeKumaApi(k.url, timeout=timeout, wait_events=0.2)
    except Exception as e:  # socketio raises its own ConnectionError types
        raise KumaReadError(f"Kuma at {k.url} is unreachable ({type(e).__name__}); start it or fix [kuma].url") \
            from None
    try:
        api.login(user, password)
        monitors = api.get_monitors()
        heartbeats = api.get_heartbeats()
    except UptimeKumaException as e:
        raise KumaReadError(f"Kuma at {k.url} refused the login or the read ({e}); "
                            f"check {k.username_env} / {k.password_env}") from None
    finally:
        api.disconnect()
    rows = {int(m["id"]): {"id": int(m["id"]), "name": m["name"], "active": m["active"], "token": m.get("pushToken"),
                           "interval": m.get("interval"), "parent": m.get("parent")} for m in monitors}
    beats = {int(mid): [Beat(int(b["status"]), parse_time(str(b["time"])), b.get("msg") or "") for b in bl]
             for mid, bl in heartbeats.items()}
    return [_judge(w, rows, beats, full=False) for w in wanted]


def read(k: KumaSection, now: datetime | None = None) -> KumaFacts:
    """Facts for every monitor the target names, by its configured read path."""
    wanted = wanted_monitors(k)
    now = now or datetime.now(UTC)
    if k.read_path == "db":
        assert k.db is not None
        return KumaFacts("db", str(k.db), now, tuple(read_db(str(k.db), wanted)))
    return KumaFacts("socket", k.url, now, tuple(read_socket(k, wanted)))


def ago(then: datetime, now: datetime) -> str:
    s = max(0.0, (now - then).total_seconds())
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"
