"""The drill's throwaway server: sandboxed, reachable by nobody else, restoring as a plain role.

- No TCP listener: one Unix socket, in a directory only root and the drill user can enter (root:drill
  0770 under root, 0700 otherwise). Its path is in the process list; the directory's mode is the lock.
- Even there a password: scram-sha-256 for every role (pg_hba.conf has one `local ... scram-sha-256`
  line). The superuser's password is made new for every drill, and so is the restore role's; both live
  in this process and in the environment of the drill's own clients, never on a command line or in a file.
- The superuser is `pgbv_admin`, not `postgres`: a dump that writes `OWNER TO postgres` gets a plain
  `postgres` role like any other owner.
- The restore runs as `pgbv_restore`: no superuser, none of pg_execute_server_program,
  pg_read_server_files, pg_write_server_files; BYPASSRLS (pg_dump writes `SET row_security = off`, and
  the dump's data is loaded as it was read). It owns the drill database; each owner role the drill makes
  (`[drill].roles` and `postgres`) is a NOLOGIN plain role it is a member of, so `ALTER ... OWNER TO`
  works and the owners' code still runs with no more than a plain role's rights.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgbackup_verify.facts.drill.cluster import (
    CLUSTER_PREFIX,
    LOCALE,
    PG_CTL_TIMEOUT,
    SANDBOX_FILE,
    SERVER_OPTIONS,
    copy_template,
    log_tail,
    mark_owner,
    pg_bindir,
    save_template,
    stop_server,
    template_secret,
)
from pgbackup_verify.facts.drill.sandbox import Sandbox, SandboxUnavailable

ADMIN = "pgbv_admin"
RESTORER = "pgbv_restore"
SOURCE_SUPERUSER = "postgres"
OWNERS = "pgbv_owners"  # every owner role is a member: what one schema grants it, all owners may use
# A superuser restore hands any object to any owner; a plain one may only if that owner can CREATE in the
# object's schema (pg_dump grants it at the very end, if at all). So while the drill restores, each schema
# the dump creates lets the owners create in it. Names come from the catalog (already quoted identities);
# the trigger and its function are dropped before the restored catalog is read.
_OWNERS_TRIGGER = f"""
CREATE FUNCTION public.pgbv_owners_may_create() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog AS $f$
DECLARE r record;
BEGIN
  FOR r IN SELECT object_identity FROM pg_event_trigger_ddl_commands() WHERE object_type = 'schema' LOOP
    EXECUTE format('GRANT CREATE ON SCHEMA %s TO {OWNERS}', r.object_identity);
  END LOOP;
END $f$;
CREATE EVENT TRIGGER pgbv_owners_may_create ON ddl_command_end WHEN TAG IN ('CREATE SCHEMA')
  EXECUTE FUNCTION public.pgbv_owners_may_create();
"""
_OWNERS_TRIGGER_DROP = ("DROP EVENT TRIGGER IF EXISTS pgbv_owners_may_create; "
                        "DROP FUNCTION IF EXISTS public.pgbv_owners_may_create()")
_POWER_NAMES = ("SUPERUSER", "LOGIN", "REPLICATION", "BYPASSRLS", "CREATEROLE", "CREATEDB", "PASSWORD")
_POWERS = """
SELECT a.rolname, a.rolsuper, a.rolcanlogin, a.rolreplication, a.rolbypassrls, a.rolcreaterole, a.rolcreatedb,
       a.rolpassword IS NOT NULL,
       array(SELECT 'member of ' || g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
             WHERE m.member = a.oid AND g.rolname LIKE 'pg\\_%%' ORDER BY 1)
FROM pg_authid a WHERE a.rolname = ANY(%s) ORDER BY 1
"""
ADMIN_OPTIONS = "-c search_path=pg_catalog,pg_temp -c role=none -c default_transaction_read_only=off"
PORT = 5432  # names the socket file only: there is no TCP listener
# The key of the sandboxed template (cluster.template_dir): not the unsandboxed one's.
INITDB_KEY = (f"--username={ADMIN}", "--auth=scram-sha-256", "--encoding=UTF8", f"--locale={LOCALE}",
              "--wal-segsize=1", "--no-sync", "sandboxed")


def tool(name: str) -> Path:
    """A PostgreSQL client binary by its real path (Debian's /usr/bin/psql is a perl wrapper that
    reads /etc/postgresql-common, which the sandbox does not see)."""
    found = shutil.which(name)
    if found and Path(found).resolve().name != "pg_wrapper":
        return Path(found).resolve()
    return pg_bindir() / name


def install_root(binary: Path) -> list[Path]:
    """What the sandbox must see of an installation outside /usr (e.g. a wheel's bin/ and lib/)."""
    root = binary.resolve().parent.parent
    return [] if Path("/usr") in (root, *root.parents) else [root]


@dataclass(frozen=True)
class Endpoint:
    """How the drill's clients reach a database: a conninfo safe to show, and the secret kept apart."""

    conninfo: str  # never holds the password: it goes on command lines and into messages
    password: str | None = field(default=None, repr=False)
    sandbox: Sandbox | None = None  # None: a scratch server of the user's, reached over the network
    socket_dir: Path | None = None

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        if self.password is not None:
            kwargs["password"] = self.password
        return psycopg.connect(self.conninfo, connect_timeout=10, **kwargs)

    def env(self) -> dict[str, str]:
        """The complete environment of a client (psql, pg_restore): the password, nothing else secret."""
        if self.sandbox is None:  # the scratch server's own PG* settings (.pgpass, PGPASSWORD, TLS)
            keep = ("PATH", "HOME", "LANG", "LC_ALL")
            base = {k: v for k, v in os.environ.items() if k.startswith("PG") or k in keep}
            return {**base, **({"PGPASSWORD": self.password} if self.password else {})}
        return self.sandbox.env(**({"PGPASSWORD": self.password} if self.password else {}))

    def command(self, argv: Sequence[str], ro: Sequence[Path] = (), reader: bool = False
                ) -> tuple[list[str], dict[str, Any]]:
        """argv and Popen kwargs of a client; in the sandbox it sees the socket directory and `ro` only."""
        argv = [str(tool(argv[0])), *argv[1:]]
        if self.sandbox is None:
            return argv, {"env": self.env()}
        rw = [self.socket_dir] if self.socket_dir else []
        return (self.sandbox.wrap(argv, rw=rw, ro=[*install_root(Path(argv[0])), *ro], reader=reader),
                {"env": self.env(), **self.sandbox.popen_kwargs(reader=reader)})

    def for_app(self, application_name: str) -> Endpoint:
        """The same database, its sessions named (pg_stat_activity.application_name) so they can be waited for."""
        conninfo = psycopg.conninfo.make_conninfo(self.conninfo, application_name=application_name)
        return Endpoint(conninfo, self.password, self.sandbox, self.socket_dir)

    def for_db(self, dbname: str) -> Endpoint:
        params = psycopg.conninfo.conninfo_to_dict(self.conninfo)
        params["dbname"] = dbname
        return Endpoint(psycopg.conninfo.make_conninfo("", **params), self.password, self.sandbox, self.socket_dir)


def reachable(work_dir: Path) -> None:
    """The drill user passes through the work dir to its own cluster dir: every ancestor needs o+x."""
    for d in (work_dir.resolve(), *work_dir.resolve().parents):
        if not os.stat(d).st_mode & 0o001:
            raise SandboxUnavailable(f"[drill].work_dir: the drill's unnamed user cannot pass through {d} (mode "
                                     f"{os.stat(d).st_mode & 0o777:04o}); chmod o+x {d}, or set [drill].work_dir "
                                     "to a directory under one it can (e.g. /var/tmp)")


class DrillCluster:
    """A throwaway cluster in `base`, started in `sandbox`; stop() kills it and removes everything."""

    def __init__(self, sandbox: Sandbox, base: Path | None = None, tag: str = "",
                 template_cache: Path | None = None) -> None:
        if sandbox.drops_uid:
            reachable(Path(base or tempfile.gettempdir()))
        self.root = Path(tempfile.mkdtemp(prefix=f"{CLUSTER_PREFIX}{tag}", dir=base))
        mark_owner(self.root)
        (self.root / SANDBOX_FILE).write_text(sandbox.mode)
        self.sandbox = sandbox.write_identity(self.root / "etc")
        self.bindir = pg_bindir()
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.template_cache = template_cache
        self.proc: subprocess.Popen[bytes] | None = None
        self._passwords: dict[str, str] = {}
        self._owners: tuple[str, ...] = ()
        self._prepared: list[str] = []
        self._prepare_dirs()

    def _prepare_dirs(self) -> None:
        uid, gid = self.sandbox.uid, self.sandbox.gid
        self.data.mkdir(mode=0o700)
        self.sock.mkdir(mode=0o700)
        if self.sandbox.drops_uid:
            os.chown(self.root, 0, gid)
            os.chmod(self.root, 0o710)  # noqa: S103 - the drill user may pass through, not list or write
            os.chown(self.data, uid, gid)
            os.chown(self.sock, 0, gid)
            os.chmod(self.sock, 0o770)  # noqa: S103 - root and the drill user; nobody else reaches the socket

    @property
    def where(self) -> str:
        return f"throwaway cluster {self.root} (socket only; {self.sandbox.describe()})"

    def _run(self, argv: Sequence[str], rw: Sequence[Path], ro: Sequence[Path] = ()
             ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.sandbox.wrap(argv, rw=rw, ro=[*install_root(self.bindir / "postgres"), *ro]),
                              env=self.sandbox.env(), timeout=PG_CTL_TIMEOUT,
                              capture_output=True, **self.sandbox.popen_kwargs())

    def _initdb(self) -> str:
        """initdb in the sandbox with a fresh superuser password; kept as this build's template."""
        secret = secrets.token_urlsafe(24)
        pwfile = self.root / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        if self.sandbox.drops_uid:
            os.chown(pwfile, self.sandbox.uid, self.sandbox.gid)
        try:
            r = self._run([str(self.bindir / "initdb"), "--pgdata", str(self.data), f"--pwfile={pwfile}",
                           *INITDB_KEY[:-1]], rw=[self.data], ro=[pwfile])
        finally:
            pwfile.unlink(missing_ok=True)
        if r.returncode != 0:
            why = r.stderr.decode(errors="replace").strip()[-500:]
            raise RuntimeError(f"initdb failed in the drill sandbox: {why}")
        save_template(self.bindir, self.data, self.template_cache, INITDB_KEY, secret)
        return secret

    def start(self, timeout: float = 60.0) -> DrillCluster:
        try:
            secret = None
            owner = (self.sandbox.uid, self.sandbox.gid) if self.sandbox.drops_uid else None
            if copy_template(self.bindir, self.data, self.template_cache, INITDB_KEY, owner):
                secret = template_secret(self.bindir, self.template_cache, INITDB_KEY)
            if secret is None:
                shutil.rmtree(self.data, ignore_errors=True)
                self.data.mkdir(mode=0o700)
                if owner:
                    os.chown(self.data, *owner)
                secret = self._initdb()
            self._launch(secret.strip(), timeout)
            return self
        except BaseException:
            self.stop()
            raise

    def _launch(self, secret: str, timeout: float) -> None:
        options = [*SERVER_OPTIONS, "-c", "listen_addresses=", "-c", f"unix_socket_directories={self.sock}",
                   "-c", "unix_socket_permissions=0777"]  # password_encryption is scram-sha-256 by default
        argv = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(PORT), *options]
        # The one pg_hba line: even the socket asks for a password.
        hba = self.data / "pg_hba.conf"
        hba.unlink(missing_ok=True)
        hba.write_text("local all all scram-sha-256\n")
        if self.sandbox.drops_uid:
            os.chown(hba, self.sandbox.uid, self.sandbox.gid)
        with open(self.root / "postgresql.log", "ab") as log:
            self.proc = subprocess.Popen(self.sandbox.wrap(argv, rw=[self.data, self.sock],
                                                           ro=install_root(self.bindir / "postgres")),
                                         stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True, env=self.sandbox.env(),
                                         **self.sandbox.popen_kwargs())
        self._passwords[ADMIN] = secret
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL did not start in the drill sandbox: {log_tail(self.root)}")
            try:
                # Only a real login says the server is past recovery and accepting connections.
                with self.admin().connect(autocommit=True) as conn:
                    fresh = secrets.token_urlsafe(24)
                    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(ADMIN), sql.Literal(fresh)))
                    self._passwords[ADMIN] = fresh
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _endpoint(self, user: str, dbname: str = "postgres", **options: str) -> Endpoint:
        conninfo = psycopg.conninfo.make_conninfo("", host=str(self.sock), port=str(PORT), dbname=dbname, user=user,
                                                  **options)
        return Endpoint(conninfo, self._passwords.get(user), self.sandbox, self.sock)

    def admin(self, dbname: str = "postgres") -> Endpoint:
        """The superuser: for the narrow steps only (roles, the database), never for the dump's SQL.

        A database the restore role owns (a cluster dump's, and then `postgres` too) may carry its
        settings (ALTER DATABASE ... SET search_path = a schema of its own, where an `=` operator of its
        own waits): the superuser's sessions pin theirs in the startup packet, which outranks them."""
        return self._endpoint(ADMIN, dbname, options=ADMIN_OPTIONS)

    def prepare_restore(self, dbname: str, owners: Sequence[str]) -> Endpoint:
        """The restore role, the drill database it owns, and the owner roles it may hand objects to."""
        password = secrets.token_urlsafe(24)
        with self.admin().connect(autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS "
                                 "PASSWORD {}").format(sql.Identifier(RESTORER), sql.Literal(password)))
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(OWNERS)))
        self._passwords[RESTORER] = password
        self.add_owners(owners, (SOURCE_SUPERUSER,))
        return self.database(dbname)

    def add_owners(self, owners: Sequence[str], superusers: Sequence[str] = ()) -> None:
        """Plain NOLOGIN owner roles (no password, no power), each one the restore role is a member of.

        `superusers` stand for the source's superusers (`postgres`, and in a cluster dump each role it
        gave SUPERUSER), who could read every owner's objects (a matview one owns over their tables
        refreshes only so): here plain roles that are members of each owner role."""
        new = [r for r in dict.fromkeys(owners) if r not in self._owners]
        with self.admin().connect(autocommit=True) as conn:
            for role in new:
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS")
                             .format(sql.Identifier(role)))
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(RESTORER)))
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(OWNERS), sql.Identifier(role)))
            self._owners = (*self._owners, *new)
            for boss in dict.fromkeys(superusers):
                if boss not in self._owners:
                    continue
                for role in self._owners:
                    if role not in superusers:
                        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(boss)))

    def grant_membership(self, role: str, member: str) -> str | None:
        """GRANT role TO member, both owner roles of the drill; the server's refusal (a loop), or None."""
        assert role in self._owners and member in self._owners
        with self.admin().connect(autocommit=True) as conn:
            try:
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(member)))
            except psycopg.Error as e:
                return str(e).strip().splitlines()[0]
        return None

    def allow_createdb(self) -> None:
        """A cluster dump creates its databases itself (clusterdump.py): the restore role may, here only."""
        with self.admin().connect(autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier(RESTORER)))

    def prepare_database(self, dbname: str) -> None:
        """Before a cluster dump's part restores into `dbname`: template1 and postgres are handed to the
        restore role (the dump created the others, as it); the owners may create in it, as in database()."""
        with self.admin().connect(autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
                return  # psql's connection says so, at the dump's \connect line
            if dbname in ("template1", "postgres"):
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(dbname),
                                                                            sql.Identifier(RESTORER)))
        if dbname in self._prepared:
            return
        self._prepared.append(dbname)
        with self.admin(dbname).connect(autocommit=True) as conn:
            if self._owners:
                conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(OWNERS)))
                conn.execute(_OWNERS_TRIGGER)

    def restorer(self, dbname: str) -> Endpoint:
        return self._endpoint(RESTORER, dbname)

    def prepared(self) -> list[str]:
        """Databases a cluster dump restored into (prepare_database), in order."""
        return list(self._prepared)

    def role_powers(self, roles: Sequence[str]) -> dict[str, list[str]]:
        """What each role HOLDS in this cluster, read from its catalog: powers, a password, memberships
        in predefined roles. A role of the dump must hold none."""
        with self.admin().connect(autocommit=True) as conn:
            rows = conn.execute(_POWERS, (list(roles),)).fetchall()
        return {r[0]: [p for p, held in zip(_POWER_NAMES, r[1:8], strict=True) if held] + list(r[8]) for r in rows}

    def database(self, dbname: str) -> Endpoint:
        """A fresh database owned by the restore role (prepare_restore made it), and how to restore into it."""
        with self.admin().connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(
                sql.Identifier(dbname), sql.Identifier(RESTORER)))
        with self.admin(dbname).connect(autocommit=True) as conn:
            if self._owners:  # objects in public handed to an owner need its CREATE there, and so on
                conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(OWNERS)))
                conn.execute(_OWNERS_TRIGGER)
        return self._endpoint(RESTORER, dbname)

    def after_restore(self, dbname: str) -> None:
        """Remove what the drill added for the restore's sake, before the restored catalog is read."""
        with self.admin(dbname).connect(autocommit=True) as conn:
            conn.execute(_OWNERS_TRIGGER_DROP)

    def __enter__(self) -> DrillCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_server(proc, self.root, kill=self.sandbox.mode != "none")
