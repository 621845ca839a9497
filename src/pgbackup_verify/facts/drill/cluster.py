"""Throwaway PostgreSQL clusters that also work when the suite runs as root.

`initdb` refuses to run as root, and the nightly cron runs as root: under root every process
of the cluster (initdb, postgres) runs as the `postgres` OS user, which owns the data directory.
`initdb` runs once per PostgreSQL build: its result is kept in a private cache directory and
copied for every cluster (a copy takes a fraction of initdb's second).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import port_for
import psycopg

from pgbackup_verify.facts.drill import owner
from pgbackup_verify.locks import APP, LockError, ensure_private_dir

log = logging.getLogger("pgbackup_verify.facts.drill.cluster")

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
LOCALE = "C.UTF-8"
# A 1 MiB WAL segment instead of 16: the template (and every copy of it) is 24 MiB instead of 39.
INITDB_ARGS = ("--username=postgres", "--auth=trust", "--encoding=UTF8", f"--locale={LOCALE}",
               "--wal-segsize=1", "--no-sync")
# Nothing in a throwaway cluster is worth durability; a restore into it is a bulk load: no WAL
# beyond the minimum, no checkpoints during the load, no autovacuum competing for the CPU.
SERVER_OPTIONS = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                  "-c", "wal_level=minimal", "-c", "max_wal_senders=0", "-c", "max_wal_size=2GB",
                  "-c", "checkpoint_timeout=1h", "-c", "autovacuum=off", "-c", "shared_buffers=128MB",
                  "-c", "maintenance_work_mem=256MB", "-c", "max_parallel_maintenance_workers=0",
                  "-c", "log_destination=stderr", "-c", "logging_collector=off")
TEMPLATE_PREFIX = "cluster-template-"
TEMPLATE_FORMAT = "1"  # bump when INITDB_ARGS change in a way the key below does not see


def _server_env() -> dict[str, str]:
    return {**os.environ, "LC_ALL": LOCALE, "LC_CTYPE": LOCALE, "LANG": LOCALE}


def init_data_dir(bindir: Path, data: Path) -> None:
    """initdb into `data` (as `postgres` under root); its parent must be reachable by that user."""
    try:
        subprocess.run([str(bindir / "initdb"), "--pgdata", str(data), *INITDB_ARGS], env=_server_env(),
                       timeout=PG_CTL_TIMEOUT, check=True, capture_output=True, **_run_as())
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"initdb failed in {data}: {e.stderr.decode(errors='replace').strip()}") from None


def template_cache_dir() -> Path | None:
    """This user's private cache (0700, owned, no link) for initdb templates; None if unusable.

    Not the runtime dir of the locks (/run is memory): /var/cache for root, else the XDG cache.
    """
    if os.geteuid() == 0:
        base = Path("/var/cache")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        return ensure_private_dir(base / APP)
    except (OSError, LockError) as e:
        log.warning("no initdb template cache (%s): every throwaway cluster runs initdb", e)
        return None


def template_dir(bindir: Path, cache: Path, args: Sequence[str] = INITDB_ARGS) -> Path:
    """Where the template of this PostgreSQL build lives: keyed by its binaries and the initdb options."""
    parts = [TEMPLATE_FORMAT, str(bindir.resolve()), *args]
    for name in ("postgres", "initdb"):
        st = os.stat(bindir / name)
        parts += [name, str(st.st_size), str(st.st_mtime_ns), str(st.st_ino)]
    return cache / (TEMPLATE_PREFIX + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20])


def _own_dir(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def _chown_tree(root: Path, owner: tuple[int, int] | None = None) -> None:
    """Hand a copied data directory to `owner` (default: `postgres`, under root); links are never followed."""
    if os.geteuid() != 0:
        return
    if owner is None:
        pw = pwd.getpwnam("postgres")
        owner = (pw.pw_uid, pw.pw_gid)
    os.lchown(root, *owner)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(dirpath, name), *owner)


def template_secret(bindir: Path, cache: Path | None, args: Sequence[str]) -> str | None:
    """The superuser password a template was made with (kept beside it, in the private cache)."""
    cache = cache or template_cache_dir()
    return None if cache is None else read_private(template_dir(bindir, cache, args) / "secret")


def copy_template(bindir: Path, data: Path, cache: Path | None = None, args: Sequence[str] = INITDB_ARGS,
                  owner: tuple[int, int] | None = None) -> bool:
    """Copy the cached initdb of this build into `data`; False when there is none (yet)."""
    cache = cache or template_cache_dir()
    if cache is None:
        return False
    src = template_dir(bindir, cache, args)
    if not _own_dir(src) or not (src / "data" / "PG_VERSION").is_file():
        return False
    try:
        shutil.copytree(src / "data", data, symlinks=True, copy_function=shutil.copy, dirs_exist_ok=True)
        _chown_tree(data, owner)
    except OSError as e:
        log.warning("initdb template %s unusable (%s): running initdb", src, e)
        shutil.rmtree(data, ignore_errors=True)
        return False
    return True


def save_template(bindir: Path, data: Path, cache: Path | None = None, args: Sequence[str] = INITDB_ARGS,
                  secret: str | None = None) -> None:
    """Keep a fresh, never started `data` as the template of this build (atomic: build, then rename)."""
    cache = cache or template_cache_dir()
    if cache is None:
        return
    final = template_dir(bindir, cache, args)
    for stale in cache.glob(".building-*"):  # a crashed build; a live one renames within seconds
        with contextlib.suppress(OSError):
            if time.time() - os.lstat(stale).st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
    try:
        shutil.copytree(data, tmp / "data", symlinks=True, copy_function=shutil.copy)
        if secret is not None:
            fd = os.open(tmp / "secret", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secret)
        os.rename(tmp, final)
    except OSError as e:
        if not final.exists():
            log.warning("could not keep the initdb template in %s: %s", cache, e)
        shutil.rmtree(tmp, ignore_errors=True)


OWNER_FILE = "owner"
LEGACY_OWNER_FILE = "owner.pid"  # a bare pid, written by older versions


def mark_owner(root: Path) -> None:
    """Record which process made `root` (pid and start time), so a later run can tell a crashed
    run's leftovers from a live run's work."""
    (root / OWNER_FILE).write_text(owner.owner_mark())


def read_owner(root: Path) -> owner.Mark | None:
    return owner.parse_mark(read_private(root / OWNER_FILE) or read_private(root / LEGACY_OWNER_FILE))


SANDBOX_FILE = "sandboxed"  # a drill cluster whose server ran in its own pid namespace (sandbox.py)


def stop_cluster_dir(root: Path) -> None:
    """Stop a (possibly orphaned) cluster living in `root` and remove the directory.

    A sandboxed server died with its owner (bwrap --die-with-parent), and the pid in its
    postmaster.pid is one of its own pid namespace: never signalled from here.
    """
    data = root / "data"
    if (data / "postmaster.pid").exists() and not (root / SANDBOX_FILE).exists():
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


def log_tail(root: Path) -> str:
    """The last lines of a cluster's server log, for the one line that says why it did not start."""
    text = read_private(root / "postgresql.log", 1 << 16) or ""
    return " | ".join(text.strip().splitlines()[-3:])


def stop_server(proc: subprocess.Popen[Any] | None, root: Path, *, kill: bool = False) -> None:
    """Stop a throwaway server and remove its directory, whatever happens on the way. `kill` (a sandboxed
    server: killing bwrap ends its pid namespace and every process in it) or else an immediate shutdown
    (SIGQUIT, pg_ctl -m immediate) of the postmaster: nothing in a throwaway cluster is worth a checkpoint."""
    try:
        if proc is not None and proc.poll() is None:
            if kill:
                proc.kill()
            else:
                proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(PG_CTL_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(root, ignore_errors=True)


class _Server:
    """What callers read of a running cluster: its data directory (kept as `executor.datadir`)."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = str(datadir)


class ThrowawayCluster:
    """A local cluster in its own temp dir, removed on stop(). Superuser is `postgres`.

    Made for speed, since it is thrown away: the data directory is a copy of a cached `initdb`
    (see template_dir), the server runs without durability (SERVER_OPTIONS), start-up is polled
    with a real login every few milliseconds, and stop is an immediate shutdown.
    """

    def __init__(self, base: Path | None = None, port: int | None = None, tag: str = "",
                 template_cache: Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"{CLUSTER_PREFIX}{tag}", dir=base))
        mark_owner(self.root)
        chown_for_cluster(self.root)
        self._fixed_port = port
        self.port = port or port_for.select_random()
        self.host = "127.0.0.1"
        self.user = "postgres"
        self.bindir = pg_bindir()
        self.data = self.root / "data"
        self.executor = _Server(self.data)
        self.template_cache = template_cache
        self.proc: subprocess.Popen[bytes] | None = None
        self.from_template = False

    def start(self, timeout: float = 60.0) -> ThrowawayCluster:
        try:
            self.from_template = copy_template(self.bindir, self.data, self.template_cache)
            if not self.from_template:
                init_data_dir(self.bindir, self.data)
                save_template(self.bindir, self.data, self.template_cache)
            for attempt in range(3):
                if self._launch(timeout):
                    return self
                if self._fixed_port or attempt == 2:
                    break
                self.port = port_for.select_random()  # another process took the port first
            raise RuntimeError(f"PostgreSQL did not start in {self.root}: {self._log_tail()}")
        except BaseException:
            self.stop()
            raise

    def _launch(self, timeout: float) -> bool:
        """Start the server on self.port; False when it exited at once (the port was taken)."""
        options = [*SERVER_OPTIONS, "-c", f"listen_addresses={self.host}",
                   "-c", f"unix_socket_directories={self.root}"]
        with open(self.root / "postgresql.log", "ab") as log:
            self.proc = subprocess.Popen([str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                                          *options], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True, env=_server_env(), **_run_as())
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                return False
            try:
                # The port accepts TCP before recovery ends ("the database system is starting up"):
                # only a real login says callers will not race the server's start-up.
                psycopg.connect(self.dsn(), connect_timeout=5).close()
                return True
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _log_tail(self) -> str:
        return log_tail(self.root)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_server(proc, self.root)

    def __enter__(self) -> ThrowawayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"host={self.host} port={self.port} dbname={dbname} user={user or self.user}"

    def env(self) -> dict[str, str]:
        """Environment for libpq command-line tools pointed at this cluster."""
        return {**os.environ, "PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user}
