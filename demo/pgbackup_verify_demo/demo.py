"""The built-in demo target, shaped like the seed host: a throwaway cluster with roles
`directus` (the dump role) and `workflow_admin`, schemas `public`, `cutter_governance`
and `sandbox_tac` (owned by workflow_admin), and a week of real `pg_dump | gzip` nights.

`pgbackup-verify demo` builds it, runs the suite against it and removes it again.
`--fault seed-night` replays the incident: USAGE on sandbox_tac is revoked, the real
pg_dump fails, and the newest file is the 20-byte empty gzip stream.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psycopg
import psycopg.conninfo

from pgbackup_verify.facts.drill.cluster import CLUSTER_PREFIX, ThrowawayCluster, mark_owner, sweep_stale
from pgbackup_verify_demo import scene

DUMP_ROLE = "directus"
DBNAME = "directus"
SCHEMAS = {"public": 12, "cutter_governance": 6, "sandbox_tac": 3}  # schema -> tables
FAULTS = ("seed-night", "registry-lock")

SETUP_SQL = """
CREATE ROLE directus LOGIN;
CREATE ROLE workflow_admin LOGIN;
CREATE DATABASE directus OWNER directus;
"""

# Run in database `directus` as superuser: objects owned by the roles the seed had.
SCHEMA_SQL = """
ALTER SCHEMA public OWNER TO directus;
CREATE SCHEMA cutter_governance AUTHORIZATION directus;
CREATE SCHEMA sandbox_tac AUTHORIZATION workflow_admin;
GRANT USAGE ON SCHEMA sandbox_tac TO directus;
ALTER DEFAULT PRIVILEGES FOR ROLE workflow_admin IN SCHEMA sandbox_tac GRANT SELECT ON TABLES TO directus;
ALTER DEFAULT PRIVILEGES FOR ROLE workflow_admin IN SCHEMA sandbox_tac
    GRANT USAGE, SELECT ON SEQUENCES TO directus;
"""


# The Phase C "registry lock coverage" audit, shipped as the example custom SQL check.
REGISTRY_LOCK = "incomex.registry_refresh.v1"
REGISTRY_FUNCTIONS = ("refresh_registry_views", "refresh_pivot_results")
REGISTRY_LOCK_CHECK = f"""
[[sql_check]]
name = "registry lock coverage"
concern = "sql"
expect = "no_rows"
fix = "make each listed function start with PERFORM pg_advisory_xact_lock(hashtext('{REGISTRY_LOCK}'));"
query = \"\"\"
SELECT f.name AS function,
       CASE WHEN p.oid IS NULL THEN 'function missing' ELSE 'does not take {REGISTRY_LOCK}' END AS problem
FROM unnest(ARRAY{list(REGISTRY_FUNCTIONS)!r}) AS f(name)
LEFT JOIN pg_proc p ON p.proname = f.name
WHERE p.oid IS NULL
   OR pg_get_functiondef(p.oid) NOT LIKE '%pg_advisory_xact_lock(hashtext(''{REGISTRY_LOCK}''))%'
\"\"\"
"""


def registry_function_sql(name: str, locked: bool = True) -> str:
    lock = f"PERFORM pg_advisory_xact_lock(hashtext('{REGISTRY_LOCK}'));" if locked else ""
    return (f"CREATE OR REPLACE FUNCTION public.{name}() RETURNS void LANGUAGE plpgsql AS $$ "
            f"BEGIN {lock} PERFORM count(*) FROM public.item_00; END $$")


def _owner(schema: str) -> str:
    return "workflow_admin" if schema == "sandbox_tac" else DUMP_ROLE


class Server(Protocol):
    """Where the demo database lives: a ThrowawayCluster, or an ExistingServer (CI's container)."""

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str: ...

    def env(self) -> dict[str, str]: ...


def build_seed_database(cluster: Server) -> str:
    """Create the seed-shaped database in `cluster`; return the dump role's DSN."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        for stmt in SETUP_SQL.strip().split(";\n"):
            conn.execute(stmt.strip().rstrip(";"))
    with psycopg.connect(cluster.dsn(DBNAME), autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)
        for schema, count in SCHEMAS.items():
            conn.execute(f"SET ROLE {_owner(schema)}")
            for i in range(count):
                name = f"{schema}.item_{i:02d}"
                conn.execute(f"CREATE TABLE {name} (id bigserial PRIMARY KEY, label text NOT NULL, "
                             "created timestamptz DEFAULT now())")
                conn.execute(f"INSERT INTO {name} (label) SELECT 'row ' || g FROM generate_series(1, 200) g")
            conn.execute(f"CREATE VIEW {schema}.item_summary AS SELECT count(*) AS n FROM {schema}.item_00")
            conn.execute("RESET ROLE")
        conn.execute("SET ROLE directus")
        for fn in REGISTRY_FUNCTIONS:
            conn.execute(registry_function_sql(fn))
        conn.execute("RESET ROLE")
    return cluster.dsn(DBNAME, DUMP_ROLE)


def grow(cluster: Server, rows: int = 50) -> None:
    """One day of application writes, so that nightly payloads grow like the seed's."""
    with psycopg.connect(cluster.dsn(DBNAME), autocommit=True) as conn:
        conn.execute(f"INSERT INTO public.item_00 (label) SELECT 'day ' || g FROM generate_series(1, {rows}) g")


def dump_to(cluster: Server, path: Path, role: str = DUMP_ROLE) -> int:
    """`pg_dump | gzip -9 > path`, as the seed's pg-backup.sh does; return pg_dump's exit code."""
    env = {**cluster.env(), "PGUSER": role}
    # umask 077, as the seed's hardened script: dumps are readable by their owner only.
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        dump = subprocess.Popen(["pg_dump", "--no-owner", "--no-acl", "-d", DBNAME], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        gz = subprocess.run(["gzip", "-9"], stdin=dump.stdout, stdout=out, check=True)
        assert dump.stdout is not None
        dump.stdout.close()
        rc = dump.wait()
    del gz
    return rc


def write_nightly_dumps(cluster: Server, backup_dir: Path, nights: int = 7,
                        fault: str | None = None, now: float | None = None) -> list[Path]:
    """One dump per night for `nights` nights, newest ~1 h old, named like the seed's files."""
    now = now or time.time()
    made = []
    for back in range(nights - 1, -1, -1):
        ts = now - back * 86400 - 3600
        path = backup_dir / time.strftime(f"{DBNAME}_%Y-%m-%d_0200.sql.gz", time.localtime(ts))
        if back == 0 and fault == "seed-night":
            with psycopg.connect(cluster.dsn(DBNAME), autocommit=True) as conn:
                conn.execute("REVOKE USAGE ON SCHEMA sandbox_tac FROM directus")
        if back == 0 and fault == "registry-lock":
            with psycopg.connect(cluster.dsn(DBNAME), autocommit=True) as conn:
                conn.execute(registry_function_sql(REGISTRY_FUNCTIONS[-1], locked=False))
        grow(cluster)
        dump_to(cluster, path)
        os.utime(path, (ts, ts))
        made.append(path)
    return made


def write_target_file(path: Path, dsn: str, backup_dir: Path, name: str = "demo", extra: str = "") -> Path:
    path.write_text(f'''# Demo target written by `pgbackup-verify demo`.
[target]
name = "{name}"

[database]
dsn = "{dsn}"
dump_role = "{DUMP_ROLE}"

[backups]
directory = "{backup_dir}"
pattern = "{DBNAME}_*.sql.gz"
max_age_hours = 26
min_payload_bytes = 10000
max_shrink_ratio = 0.2
retention_days = 7
min_good_dumps = 7
expected_schemas = {list(SCHEMAS)!r}
{REGISTRY_LOCK_CHECK}
{extra}''')
    return path


class ExistingServer:
    """A running server (a CI service container) standing in for the throwaway cluster.

    The demo creates its database and two roles there and drops exactly those on stop();
    it refuses to start if any of them exists already.
    """

    def __init__(self, dsn: str) -> None:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        self.host = str(params.get("host", "127.0.0.1"))
        self.port = int(params.get("port") or 5432)
        self.user = str(params.get("user", "postgres"))

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"host={self.host} port={self.port} dbname={dbname} user={user or self.user}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user}

    def start(self) -> ExistingServer:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            taken = conn.execute("SELECT datname FROM pg_database WHERE datname = %s UNION ALL "
                                 "SELECT rolname FROM pg_roles WHERE rolname IN ('directus', 'workflow_admin')",
                                 (DBNAME,)).fetchall()
        if taken:
            names = ", ".join(r[0] for r in taken)
            raise SystemExit(f"pgbackup-verify demo: {names} already exist(s) on {self.host}:{self.port}; "
                             "the demo only runs on a server without them (a scratch CI container)")
        return self

    def stop(self) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
            for role in ("directus", "workflow_admin"):
                conn.execute(f"DROP ROLE IF EXISTS {role}")


@dataclass
class Demo:
    cluster: ThrowawayCluster | ExistingServer
    workdir: Path
    target_file: Path


def build(workdir: Path, fault: str | None = None, server: str | None = None) -> Demo:
    cluster = ExistingServer(server).start() if server else ThrowawayCluster(tag="demo-").start()
    try:
        dsn = build_seed_database(cluster)
        backup_dir = workdir / "backups"
        backup_dir.mkdir(mode=0o700)
        write_nightly_dumps(cluster, backup_dir, fault=fault)
        # The host (scripts, root's crontab as a file, the running postgres) and the offsite
        # remote (a real rclone local remote holding last night's archive), like the seed's VPS.
        data_dir = Path(cluster.executor.datadir) if isinstance(cluster, ThrowawayCluster) else None
        extra = scene.demo_sections(workdir, backup_dir, data_dir)
        target_file = write_target_file(workdir / "demo.toml", dsn, backup_dir, extra=extra)
    except BaseException:
        cluster.stop()
        raise
    return Demo(cluster, workdir, target_file)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pgbackup-verify demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fault", choices=FAULTS, help="replay a fault (the seed's night)")
    parser.add_argument("--keep", action="store_true", help="keep the demo dir and print its path")
    parser.add_argument("--server", metavar="DSN", help="build the demo on this running server (a scratch CI "
                        "container) instead of a throwaway cluster; its objects are dropped afterwards")
    parser.add_argument("--no-kuma", dest="kuma", action="store_false",
                        help="leave out the real Uptime Kuma (its monitors are checked and pushed to by default)")
    args, pytest_args = parser.parse_known_args(argv)
    from pgbackup_verify.cli import reports_dir_of, run_checks

    # A demo killed mid-run leaves its cluster running and its dir behind: clear those first.
    for line in sweep_stale(f"{CLUSTER_PREFIX}demo-*") + sweep_stale("pgbv-demo-*"):
        print(line)
    workdir = Path(tempfile.mkdtemp(prefix="pgbv-demo-"))
    mark_owner(workdir)
    demo = build(workdir, args.fault, args.server)
    kuma = None
    try:
        if args.kuma:
            from pgbackup_verify_demo import kuma_demo

            kuma = kuma_demo.start(workdir)
            demo.target_file.write_text(demo.target_file.read_text() + kuma.toml())
            print(f"demo Kuma: {kuma.url} (login in {workdir / 'kuma-login.txt'})")
        print(f"demo target: {demo.target_file} (server port {demo.cluster.port}, fault {args.fault})")
        check_args = ["--target", str(demo.target_file), *pytest_args]
        if not any(a.startswith("--metrics") for a in pytest_args):
            # The run's Prometheus metrics beside its reports (kept when the demo dir is removed).
            reports = reports_dir_of(check_args) or Path("reports").absolute()
            reports.mkdir(parents=True, exist_ok=True)
            check_args.append(f"--metrics={reports / 'pgbackup_verify.prom'}")
            print(f"demo metrics: {reports / 'pgbackup_verify.prom'} (Prometheus text, as node_exporter's textfile "
                  "collector reads it)")
        rc = run_checks(check_args)
        for line in kuma.latest() if kuma else []:
            print(line)
        return rc
    finally:
        if kuma:
            kuma.stop()
        demo.cluster.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
