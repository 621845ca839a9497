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

import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pgbackup_verify.config import KumaSection
from pgbackup_verify.errors import KUMA_CREDENTIALS_MISSING, UserError
from pgbackup_verify.facts.bounded import DeadlineExceeded, within
from pgbackup_verify.kuma.secret import Secret

STATUS = {0: "DOWN", 1: "UP", 2: "PENDING", 3: "MAINTENANCE"}


class KumaReadError(Exception):
    """Kuma could not be read; str() is one line naming the source and what to do."""


class KumaCredentialsMissing(UserError):
    """The socket read path needs a login the environment does not hold (exit 13)."""

    exit_code = KUMA_CREDENTIALS_MISSING


@dataclass(frozen=True)
class Wanted:
    name: str
    token: Secret | None  # from the push monitor's env var, used only to match; never shown
    fed: bool = False  # this suite pushes to it: its UP/DOWN is the suite's own output, not an input


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
    fed: bool = False  # a [[kuma.push]] monitor of this suite (else one of [kuma].monitors)
    matched_by: str = ""  # "name" or "push token"
    kuma_name: str = ""
    active: bool = False
    effectively_active: bool = False
    paused_by: str = ""  # the monitor itself or the paused group above it
    interval: int = 0
    latest: Beat | None = None
    last_up: datetime | None = None
    oldest_seen: datetime | None = None
    last_push: Beat | None = None  # the newest beat a push wrote (not Kuma's own "no heartbeat" beats)
    notifications: tuple[str, ...] = ()  # names of the active notifications attached to it
    full_history: bool = True


@dataclass(frozen=True)
class KumaFacts:
    read_path: str
    source: str
    now: datetime
    monitors: tuple[MonitorFacts, ...]


# Beats Kuma writes itself (DOWN by absence, the stray beat after a resume); a push sends `ping`
# (this suite always does) and never one of these texts.
KUMA_OWN_MSGS = ("No heartbeat in the time window",)


def is_push(status: int, msg: str | None, ping: object) -> bool:
    return status in (0, 1) and (ping is not None or (msg or "") not in KUMA_OWN_MSGS)


def wanted_monitors(k: KumaSection) -> list[Wanted]:
    out = [Wanted(p.monitor, Secret.from_env(p.token_env), fed=True) for p in k.push]
    out += [Wanted(n, None) for n in k.monitors if n not in {w.name for w in out}]
    return out


def parse_time(value: str) -> datetime:
    """Kuma stores UTC as text, e.g. '2026-11-23 08:09:33.539'."""
    return datetime.fromisoformat(value.replace("T", " ").rstrip("Z")).replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Row:
    """One monitor as both read paths see it; never its push token."""

    id: int
    name: str
    active: bool
    interval: int
    parent: int | None


def _facts(w: Wanted, m: _Row | None, how: str, chain: list[_Row], beats: list[Beat], pushes: list[Beat],
           notifications: tuple[str, ...], full: bool) -> MonitorFacts:
    if m is None:
        return MonitorFacts(wanted=w.name, found=False, fed=w.fed)
    # A paused group pauses everything below it (the socket API already folds it into `active`).
    groups_off = [g.name for g in chain if not g.active]
    paused_by = f"group '{groups_off[-1]}'" if groups_off else ("" if m.active else "itself")
    mine = sorted(beats, key=lambda b: b.time)
    ups = [b.time for b in mine if b.status == 1]
    return MonitorFacts(wanted=w.name, found=True, fed=w.fed, matched_by=how, kuma_name=m.name, active=m.active,
                        effectively_active=not paused_by, paused_by=paused_by, interval=m.interval,
                        latest=mine[-1] if mine else None, last_up=max(ups) if ups else None,
                        oldest_seen=mine[0].time if mine else None,
                        last_push=max(pushes, key=lambda b: b.time) if pushes else None,
                        notifications=notifications, full_history=full)


def _beat(row: tuple[Any, ...], monitor: str) -> Beat:
    status, when, msg = row[0], row[1], row[2]
    try:
        return Beat(int(status), parse_time(str(when)), msg or "")
    except ValueError:
        raise KumaReadError(f"monitor '{monitor}': heartbeat time {str(when)[:40]!r} is not a Kuma time "
                            "(e.g. 2026-11-23 08:09:33.539); repair or delete that row") from None


_COLS = "id, name, active, interval, parent"
# The latest beat, the latest UP, the oldest and the latest push: each one row by the (monitor_id, time) index.
_BEATS = "SELECT status, time, msg FROM heartbeat WHERE monitor_id = ? {} ORDER BY time {} LIMIT 1"
_PUSHED = ("AND status IN (0, 1) AND (ping IS NOT NULL OR COALESCE(msg, '') NOT IN ({}))"
           .format(", ".join("?" * len(KUMA_OWN_MSGS))))
MAX_NOTIFICATIONS = 100  # names shown per monitor; a kuma.db is untrusted input, its lists are bounded
MAX_GROUP_DEPTH = 100  # groups followed upwards from a monitor (Kuma's own UI nests a handful)
_NOTIFICATIONS = ("SELECT n.name FROM monitor_notification mn JOIN notification n ON n.id = mn.notification_id "
                  f"WHERE mn.monitor_id = ? AND n.active = 1 ORDER BY n.name LIMIT {MAX_NOTIFICATIONS}")
PROGRESS_STEPS = 10_000  # SQLite VM steps between two deadline checks (~1 ms)


def _db_row(db: sqlite3.Connection, where: str, arg: object) -> _Row | None:
    r = db.execute(f"SELECT {_COLS} FROM monitor WHERE {where} ORDER BY id LIMIT 1", (arg,)).fetchone()
    return _Row(int(r[0]), str(r[1]), bool(r[2]), int(r[3] or 0), r[4]) if r else None


def _db_monitor(db: sqlite3.Connection, w: Wanted) -> MonitorFacts:
    # Only the monitors this target names are read, by token or name: no other monitor's push
    # token is ever in this process (a crash with `pytest -l` prints every local).
    m = _db_row(db, "push_token = ?", w.token.reveal()) if w.token else None
    how = "push token"
    if m is None:
        m, how = _db_row(db, "name = ?", w.name), "name"
    if m is None:
        return _facts(w, None, "", [], [], [], (), True)
    chain: list[_Row] = []
    node = _db_row(db, "id = ?", m.parent) if m.parent else None
    while (node is not None and node.id not in {c.id for c in chain} and node.id != m.id  # its groups, upwards
           and len(chain) < MAX_GROUP_DEPTH):
        chain.append(node)
        node = _db_row(db, "id = ?", node.parent) if node.parent else None
    found = [db.execute(_BEATS.format(cond, order), (m.id,)).fetchone()
             for cond, order in (("", "DESC"), ("AND status = 1", "DESC"), ("", "ASC"))]
    beats = [_beat(r, w.name) for r in {f for f in found if f}]
    pushed = db.execute(_BEATS.format(_PUSHED, "DESC"), (m.id, *KUMA_OWN_MSGS)).fetchone()
    notes = tuple(str(r[0]) for r in db.execute(_NOTIFICATIONS, (m.id,)))
    return _facts(w, m, how, chain, beats, [_beat(pushed, w.name)] if pushed else [], notes, True)


def read_db(path: str, wanted: list[Wanted], timeout: float = 20.0) -> list[MonitorFacts]:
    """The facts from kuma.db, read-only, within `timeout` seconds of wall clock however the file is built
    (a view can make any query endless), and stoppable by SIGTERM meanwhile (see bounded.py)."""
    deadline = time.monotonic() + timeout
    opened: list[sqlite3.Connection] = []

    def read() -> list[MonitorFacts]:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=min(10.0, timeout),
                             check_same_thread=False)
        opened.append(db)
        try:
            # The handler runs inside SQLite every PROGRESS_STEPS steps; non-zero aborts the statement.
            db.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_STEPS)
            return [_db_monitor(db, w) for w in wanted]
        finally:
            db.close()

    def stop() -> None:
        for db in opened:
            db.interrupt()

    too_slow = (f"kuma.db '{path}' was not read within {timeout:g} s (a view or trigger that never ends?); "
                "check the file is Kuma's own database or raise [kuma].read_timeout")
    try:
        return within(timeout, read, stop, name="kuma-db-read")
    except DeadlineExceeded:
        raise KumaReadError(too_slow) from None
    except sqlite3.OperationalError as e:
        if time.monotonic() > deadline:
            raise KumaReadError(too_slow) from None
        if not opened:
            raise KumaReadError(f"kuma.db '{path}' cannot be opened read-only ({e}); fix [kuma].db") from None
        raise KumaReadError(f"kuma.db '{path}' is not a Kuma database ({e}); fix [kuma].db") from None
    except sqlite3.Error as e:
        raise KumaReadError(f"kuma.db '{path}' is not a Kuma database ({e}); fix [kuma].db") from None


def _socket_facts(api: Any, wanted: list[Wanted]) -> list[MonitorFacts]:
    """Facts from the Socket.IO lists; the raw lists (every monitor's token, every notification's
    settings) live only in this frame, which the caller never lets a traceback show."""
    tokens = {w.token.reveal(): w.name for w in wanted if w.token}
    rows: dict[int, _Row] = {}
    by_token: dict[str, int] = {}
    attached: dict[int, list[int]] = {}
    for raw in api.get_monitors():
        mid = int(raw["id"])
        rows[mid] = _Row(mid, str(raw["name"]), bool(raw["active"]), int(raw.get("interval") or 0), raw.get("parent"))
        if raw.get("pushToken") in tokens:
            by_token[tokens[raw["pushToken"]]] = mid
        ids = raw.get("notificationIDList") or {}
        attached[mid] = [int(n) for n, on in (ids.items() if isinstance(ids, dict) else ((i, True) for i in ids))
                         if on]
    active_notes = {int(n["id"]): str(n["name"]) for n in api.get_notifications() if n.get("active", True)}
    heartbeats = api.get_heartbeats()
    out = []
    for w in wanted:
        hit = by_token.get(w.name)
        how = "push token"
        if hit is None:
            hit, how = next((i for i, r in rows.items() if r.name == w.name), None), "name"
        m = rows.get(hit) if hit is not None else None
        if m is None:
            out.append(_facts(w, None, "", [], [], [], (), False))
            continue
        beats, pushes = [], []
        for b in heartbeats.get(m.id, heartbeats.get(str(m.id), [])):
            beat = _beat((b["status"], b["time"], b.get("msg")), w.name)
            beats.append(beat)
            if is_push(beat.status, b.get("msg"), b.get("ping")):
                pushes.append(beat)
        notes = tuple(sorted(active_notes[n] for n in attached.get(m.id, []) if n in active_notes))
        # The socket's `active` already folds in the parents; the chain names the paused group.
        chain: list[_Row] = []
        node = rows.get(m.parent) if m.parent else None
        while node is not None and node not in chain and node.id != m.id:
            chain.append(node)
            node = rows.get(node.parent) if node.parent else None
        out.append(_facts(w, m, how, chain, beats, pushes, notes, False))
    return out


def read_socket(k: KumaSection, wanted: list[Wanted], timeout: float = 15.0) -> list[MonitorFacts]:
    """The facts from Kuma's Socket.IO API, all of it (connect, login, lists) within [kuma].read_timeout
    seconds of wall clock: a server that trickles its events cannot hold the run (see bounded.py)."""
    try:
        return within(k.read_timeout, lambda: _read_socket(k, wanted, min(timeout, k.read_timeout)),
                      name="kuma-socket-read")
    except DeadlineExceeded:
        raise KumaReadError(f"Kuma at {k.url} did not answer the monitor lists within {k.read_timeout:g} s; "
                            "check it is Kuma and not overloaded, or raise [kuma].read_timeout") from None


def _read_socket(k: KumaSection, wanted: list[Wanted], timeout: float) -> list[MonitorFacts]:
    user, password = Secret.from_env(k.username_env), Secret.from_env(k.password_env)
    if not user or not password:
        raise KumaCredentialsMissing(f"Kuma login for {k.url}: env {k.username_env} / {k.password_env} not set; "
                                     "export the Kuma login or set [kuma].db to read kuma.db instead")
    from uptime_kuma_api import UptimeKumaApi, UptimeKumaException

    try:
        api = UptimeKumaApi(k.url, timeout=timeout, wait_events=0.2)
    except Exception as e:  # socketio raises its own ConnectionError types
        raise KumaReadError(f"Kuma at {k.url} is unreachable ({type(e).__name__}); start it or fix [kuma].url") \
            from None
    problem = ""
    try:
        api.login(user.reveal(), password.reveal())
        facts = _socket_facts(api, wanted)
    except UptimeKumaException as e:
        problem = (f"Kuma at {k.url} refused the login or the read ({type(e).__name__}); "
                   f"check {k.username_env} / {k.password_env}")
    except KumaReadError as e:
        problem = str(e)
    except Exception as e:  # anything else: one line, and no frame holding the raw lists
        problem = f"Kuma at {k.url} sent monitors this reader does not understand ({type(e).__name__}); report it"
    finally:
        api.disconnect()
    if problem:  # raised here, outside the except blocks: no chained traceback shows _socket_facts' locals
        raise KumaReadError(problem)
    return facts


def read(k: KumaSection, now: datetime | None = None) -> KumaFacts:
    """Facts for every monitor the target names, by its configured read path."""
    wanted = wanted_monitors(k)
    now = now or datetime.now(UTC)
    if k.read_path == "db":
        assert k.db is not None
        return KumaFacts("db", str(k.db), now, tuple(read_db(str(k.db), wanted, k.read_timeout)))
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
