"""Safety rails of the restore drill: the lock, the janitor (finalizer + signal handler),
the sweep of leftovers of a crashed run, the disk preflight and the drill-name guard.

Everything the drill creates carries the drill prefix and an owner mark (see owner.py: pid,
the process's start time, host, time of marking): a cluster or spool directory holds an `owner`
file, a scratch database a COMMENT. The sweep only ever touches such objects, and only when
their owner is gone or they are older than the stale limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import psycopg
from psycopg import sql

from pgbackup_verify.config import DrillSection
from pgbackup_verify.errors import ConfigError
from pgbackup_verify.facts.drill import owner
from pgbackup_verify.facts.drill.cluster import (
    CLUSTER_PREFIX,
    OWNER_FILE,
    cluster_owner_uids,
    read_private,
    stop_cluster_dir,
)
from pgbackup_verify.locks import FileLock, LockBusy, LockError, private_dir

log = logging.getLogger("pgbackup_verify.facts.drill.run")
CLUSTER_TAG = "drill-"
SPOOL_PREFIX = "pgbv-drill-spool-"


class DrillAborted(Exception):
    """The drill could not run (lock, disk, time, server); str() says why and what to do."""


def _owner_gone(text: str | None, stale_minutes: float, fallback_made: float) -> tuple[bool, str]:
    """Whether a leftover's owner is gone (or the leftover is too old to wait for); and why."""
    mark = owner.parse_mark(text)
    made = mark.made if mark and mark.made is not None else fallback_made
    age_min = (time.time() - made) / 60
    if age_min > stale_minutes:
        return True, f"age {age_min:.0f} min > {stale_minutes:.0f}"
    if mark is None or mark.host is None or not owner.on_this_host(mark):
        return False, f"age {age_min:.0f} min, owner unknown or on another host"
    if not owner.alive(mark, made=made):
        return True, f"owner pid {mark.pid} is gone"
    return False, f"owner pid {mark.pid} still runs"


def in_use_elsewhere(text: str | None) -> bool:
    """Whether a drill object's owner mark names another process on this host that still runs: then the
    object is that run's, in use, not something this run left behind."""
    mark = owner.parse_mark(text)
    return (mark is not None and mark.host is not None and owner.on_this_host(mark) and mark.pid != os.getpid()
            and owner.alive(mark))


def guard_name(name: str, prefix: str) -> str:
    """Every CREATE/DROP DATABASE goes through here: no prefix, no statement."""
    if not name.startswith(prefix) or len(name) <= len(prefix):
        raise DrillAborted(f"refusing to create or drop database '{name}': it lacks the drill prefix '{prefix}'")
    return name


class DrillLock:
    """flock on a file: overlapping suite runs take turns instead of colliding (see locks.py)."""

    def __init__(self, path: Path | None, timeout: float) -> None:
        self.path, self.timeout, self.waited = path, timeout, 0.0
        self._lock: FileLock | None = None

    def __enter__(self) -> DrillLock:
        try:
            path = self.path or default_lock_path()
            self._lock = FileLock(path, self.timeout).acquire()
        except LockBusy as e:
            raise DrillAborted(f"another drill held {e.path} for over {self.timeout:.0f} s; "
                               "check for a hung pgbackup-verify run") from None
        except LockError as e:
            raise DrillAborted(f"drill lock: {e} ([drill].lock_file)") from None
        self.waited = self._lock.waited
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.release()


def default_lock_path() -> Path:
    """Not in the (world-writable) work dir: in this user's private runtime directory."""
    return private_dir() / "drill.lock"


class Janitor:
    """Cleanups run exactly once: by the finalizer, the normal path, or SIGTERM/SIGINT."""

    def __init__(self) -> None:
        self._jobs: list[tuple[str, Callable[[], None]]] = []
        self._lock = threading.RLock()

    def add(self, name: str, fn: Callable[[], None]) -> None:
        with self._lock:
            self._jobs.append((name, fn))

    def run_all(self) -> list[str]:
        problems = []
        with self._lock:
            jobs, self._jobs = self._jobs[::-1], []
        for name, fn in jobs:
            try:
                fn()
            except Exception as e:
                problems.append(f"cleanup of {name} failed: {e}")
                log.error("drill cleanup of %s failed: %s", name, e)
        return problems

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

        def handler(signum: int, frame: FrameType | None) -> None:
            log.warning("drill interrupted by signal %d: cleaning up", signum)
            self.run_all()
            for s, h in previous.items():
                signal.signal(s, h)
            prev = previous[signal.Signals(signum)]
            if callable(prev):
                prev(signum, frame)
            elif signum == signal.SIGINT:
                raise KeyboardInterrupt
            else:
                os.kill(os.getpid(), signum)

        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def _ours(path: Path) -> bool:
    """A real directory made by this user (or, as root, handed to `postgres` for the cluster).

    The work dir is often world-writable (/tmp): a look-alike planted by another user, or a link,
    is never swept, since stopping a "cluster" there would signal whatever pid its files name.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid in cluster_owner_uids()


def local_leftovers(work_dir: Path) -> list[Path]:
    found = [*work_dir.glob(f"{CLUSTER_PREFIX}{CLUSTER_TAG}*"), *work_dir.glob(f"{SPOOL_PREFIX}*")]
    return sorted(p for p in found if _ours(p))


def server_leftovers(conn: psycopg.Connection, prefix: str) -> list[tuple[str, str | None]]:
    rows = conn.execute("SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
                        "WHERE left(datname, length(%s)) = %s ORDER BY 1", (prefix, prefix)).fetchall()
    return [(r[0], r[1]) for r in rows]


def drop_database(conn: psycopg.Connection, name: str, prefix: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(guard_name(name, prefix))))


def sweep(work_dir: Path, prefix: str, stale_minutes: float, server_dsn: str | None) -> list[str]:
    """Remove what an earlier crashed drill left behind; return one log line per object."""
    lines = []
    for root in local_leftovers(work_dir):
        gone, why = _owner_gone(read_private(root / OWNER_FILE), stale_minutes, root.stat().st_mtime)
        if gone:
            stop_cluster_dir(root) if root.name.startswith(CLUSTER_PREFIX) else shutil.rmtree(root, True)
            lines.append(f"swept leftover {root} ({why})")
        else:
            lines.append(f"left {root} alone ({why})")
    if server_dsn:
        with psycopg.connect(server_dsn, autocommit=True, connect_timeout=10) as conn:
            for name, mark in server_leftovers(conn, prefix):
                gone, why = _owner_gone(mark, stale_minutes, 0.0)
                if gone:
                    drop_database(conn, name, prefix)
                    lines.append(f"swept leftover database {name} ({why})")
                else:
                    lines.append(f"left database {name} alone ({why})")
    for line in lines:
        log.warning("drill sweep: %s", line)
    return lines


# Roles whose members run code on the server's host: a restore by one of them runs the dump's traps there.
_POWERFUL = """
SELECT r.rolsuper, array(SELECT p FROM unnest(ARRAY['pg_execute_server_program', 'pg_read_server_files',
                                                     'pg_write_server_files']) AS p
                         WHERE pg_has_role(r.oid, p, 'USAGE'))
FROM pg_roles r WHERE r.rolname = current_user
"""


def refuse_superuser(conn: psycopg.Connection, d: DrillSection) -> str:
    """Scratch mode: a restore as a superuser (or a role that may run programs or files on the
    server) runs every trap a database object owner put in the dump. Refused unless asked for;
    returns the powers allowed ("" for a plain role)."""
    row = conn.execute(_POWERFUL).fetchone()
    if row is None:
        return ""
    powers = "a superuser" if row[0] else "a member of " + " and ".join(row[1]) if row[1] else ""
    if powers and not d.allow_superuser_restore:
        raise ConfigError(f"[drill].server_dsn: its role {conn.info.user!r} is {powers}: a restore as "
                          "that role runs code any object owner put in the dump with those rights; use a role with "
                          "CREATEDB only, or set [drill].allow_superuser_restore = true (every report then says so)")
    return powers


def preflight_disk(work_dir: Path, payload: int, factor: float) -> str:
    free = shutil.disk_usage(work_dir).free
    need = int(payload * factor)
    if free < need:
        raise DrillAborted(f"free disk in {work_dir} is {free >> 20} MiB < {need >> 20} MiB (payload x {factor}); "
                           "free space or point [drill].work_dir elsewhere")
    return f"{free >> 20} MiB free >= {need >> 20} MiB needed"
