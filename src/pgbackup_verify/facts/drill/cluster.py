"""Throwaway PostgreSQL clusters that also work when the suite runs as root.

`initdb` refuses to run as root, and the nightly cron runs as root. pytest-postgresql's
executor is reused as is; only the processes it spawns switch to the `postgres` OS user
when we are root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import port_for
import psycopg
from pytest_postgresql.executors import PostgreSQLExecutor

from pgbackup_verify.facts.drill import owner

CLUSTER_PREFIX = "pgbv-cluster-"
PG_LIB = Path("/usr/lib/postgresql")  # Debian/Ubuntu: one <version>/bin per installed server


def _version_key(path: Path) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in path.name.split("."))
    except ValueError:
        return None


def pg_bindir(base: Path = PG_LIB, search_path: str | None = None) -> Path:
    """Directory of the PostgreSQL server binaries (initdb, pg_ctl).

    In order: pg_ctl or initdb on the PATH, `pg_config --bindir` when that dir holds pg_ctl (a
    libpq-only pg_config names a server that is not installed), else the newest `<base>/<version>/bin`
    by version number (16 > 15 > 9.6, which a text sort gets wrong). `search_path` stands for $PATH.
    """
    for name in ("pg_ctl", "initdb"):
        found = shutil.which(name, path=search_path)
        if found:
            return Path(found).resolve().parent
    pg_config = shutil.which("pg_config", path=search_path)
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True)
            bindir = Path(out.stdout.strip())
            if out.stdout.strip() and (bindir / "pg_ctl").is_file():
                return bindir
        except (OSError, subprocess.SubprocessError):
            pass  # a broken pg_config: the version dirs below still know
    versions = [(key, d) for d in base.glob("*/bin") if (d / "pg_ctl").is_file()
                if (key := _version_key(d.parent)) is not None]
    if versions:
        return max(versions)[1]
    raise FileNotFoundError("pg_ctl not found; install the PostgreSQL server package (postgresql-15)")


def _run_as() -> dict[str, Any]:
    """subprocess kwargs that drop root to the postgres OS user."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres"}


def cluster_owner_uids() -> set[int]:
    """Who may own a cluster directory this user made: itself, and `postgres` when it runs as root."""
    uids = {os.geteuid()}
    if os.geteuid() == 0:
        uids.add(pwd.getpwnam("postgres").pw_uid)
    return uids


def read_private(path: Path, limit: int = 4096) -> str | None:
    """Read a small marker file without following a link; None if absent or not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode(errors="replace")
    finally:
        os.close(fd)


def chown_for_cluster(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


PG_CTL_TIMEOUT = 60  # seconds for initdb and for each pg_ctl call


class RootSafeExecutor(PostgreSQLExecutor):
    """pytest-postgresql's executor, with its child processes run as `postgres` under root.

    pytest-postgresql has no public way to run its processes as another user, so this overrides
    two private hooks: mirakuru's `_popen_kwargs` (the server's launch) and pytest-postgresql's
    `_run_initdb`; pyproject.toml pins both packages' majors for that reason.
    """

    @property
    def _popen_kwargs(self) -> dict[str, Any]:
        kwargs = super()._popen_kwargs
        kwargs.update(_run_as())
        return kwargs

    def _run_initdb(self, command: list[str]) -> None:
        env = {k: v for k, v in self.envvars.items() if k != "PGDATA"}  # initdb takes --pgdata
        subprocess.run(command, env=env, timeout=PG_CTL_TIMEOUT, check=True, capture_output=True, **_run_as())

    def running(self) -> bool:
        if not os.path.exists(self.datadir):
            return False
        result = subprocess.run([self.executable, "status", "-D", self.datadir], check=False,
                                capture_output=True, timeout=PG_CTL_TIMEOUT, **_run_as())
        return result.returncode == 0

    def stop(self, sig: int | None = None, exp_sig: int | None = None) -> Self:
        subprocess.run([self.executable, "stop", "-D", self.datadir, "-m", "f"], check=False,
                       capture_output=True, timeout=PG_CTL_TIMEOUT, **_run_as())
        # pg_ctl has stopped the server; mirakuru only reaps the launcher, which may be gone.
        with contextlib.suppress(Exception):
            super(PostgreSQLExecutor, self).stop(sig, exp_sig)
        return self


OWNER_FILE = "owner"
LEGACY_OWNER_FILE = "owner.pid"  # a bare pid, written by older versions


def mark_owner(root: Path) -> None:
    """Record which process made `root` (pid and start time), so a later run can tell a crashed
    run's leftovers from a live run's work."""
    (root / OWNER_FILE).write_text(owner.owner_mark())


def read_owner(root: Path) -> owner.Mark | None:
    return owner.parse_mark(read_private(root / OWNER_FILE) or read_private(root / LEGACY_OWNER_FILE))


def stop_cluster_dir(root: Path) -> None:
    """Stop a (possibly orphaned) cluster living in `root` and remove the directory."""
    data = root / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run([str(pg_bindir() / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w"],
                       check=False, capture_output=True, timeout=60, **_run_as())
    shutil.rmtree(root, ignore_errors=True)


def sweep_stale(pattern: str, base: Path | None = None) -> list[str]:
    """Stop and remove dirs matching `pattern` whose creating process is gone (a killed demo or
    test run); return one log line per directory removed. Dirs of live processes are left alone."""
    removed = []
    for root in sorted(Path(base or tempfile.gettempdir()).glob(pattern)):
        try:
            st = os.lstat(root)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in cluster_owner_uids():
            continue  # a link or another user's look-alike in a shared tmp: never ours to stop
        mark = read_owner(root)
        if mark is None or not owner.on_this_host(mark):
            continue  # not ours, still being created, or made by a host whose processes we cannot see
        if not owner.alive(mark, made=st.st_mtime):
            stop_cluster_dir(root)
            removed.append(f"swept leftover {root} (its process {mark.pid} is gone)")
    return removed


class ThrowawayCluster:
    """A local cluster in its own temp dir, removed on stop(). Superuser is `postgres`."""

    def __init__(self, base: Path | None = None, port: int | None = None, tag: str = "") -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"{CLUSTER_PREFIX}{tag}", dir=base))
        mark_owner(self.root)
        chown_for_cluster(self.root)
        self.port = port or port_for.select_random()
        self.host = "127.0.0.1"
        self.user = "postgres"
        self.executor = RootSafeExecutor(
            executable=str(pg_bindir() / "pg_ctl"),
            timeout=PG_CTL_TIMEOUT,
            host=self.host,
            port=self.port,
            datadir=str(self.root / "data"),
            unixsocketdir=str(self.root),
            logfile=str(self.root / "postgresql.log"),
            startparams="-w",
            dbname="postgres",
            user=self.user,
            # fsync off: the cluster is thrown away; nothing here needs durability.
            postgres_options="-c fsync=off -c full_page_writes=off -c listen_addresses=127.0.0.1",
        )

    def start(self, timeout: float = 60.0) -> ThrowawayCluster:
        self.executor.start()
        # The port accepts TCP before recovery ends ("the database system is starting up"):
        # wait for a real login, so callers never race the server's start-up.
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.dsn(), connect_timeout=5).close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        try:
            if self.executor.running():
                self.executor.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ThrowawayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"host={self.host} port={self.port} dbname={dbname} user={user or self.user}"

    def env(self) -> dict[str, str]:
        """Environment for libpq command-line tools pointed at this cluster."""
        return {**os.environ, "PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user}
