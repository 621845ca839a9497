"""The restore drill is not a way in (issue: a sandboxed, least-privilege drill).

Real parts only: a real "live" cluster whose non-superuser owner `app` plants traps, the real pg_dump,
the real bubblewrap sandbox and the real unprivileged `nobody`. Each trap does nothing for its owner and
reaches for a program, a server file or the live server when anyone else runs it: the drill must stay
contained (no file on the host, the live server unchanged) and red, naming the object.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from checkrun import run_checks

from pgbackup_verify.cli import checks_dir
from pgbackup_verify.config import load_target
from pgbackup_verify.facts.drill import traps
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster, pg_bindir, stop_cluster_dir
from pgbackup_verify.facts.drill.run import DrillFacts, run_drill
from pgbackup_verify.facts.drill.sandbox import UID_BASE, SandboxUnavailable

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the drill drops to an unnamed uid only as root")

MARK_DIR = Path("/var/tmp")
# The body of every trap: nothing for its owner `app`, the payload for anyone else (the restorer).
TRAP_FN = """
CREATE FUNCTION public.harmless(v int) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
  IF current_user <> 'app' THEN
    {action};
  END IF;
  RETURN true;
END $f$;
-- Generated columns and index expressions take only immutable functions: a wrapper says it is one.
CREATE FUNCTION public.harmless_i(v int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN RETURN public.harmless(v); END $f$;
"""
ACTIONS = {
    "program": "COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
    "file": "COPY (SELECT 1) TO '{marker}'",
    "live": "PERFORM public.dblink_exec('host=127.0.0.1 port={port} dbname=live user=postgres', "
            "'INSERT INTO public.marker VALUES (1)')",
}
# Where the restore runs the function: each vector of the issue.
VECTORS = {
    "check": "CREATE TABLE public.trap (id int CHECK (public.harmless(id))); INSERT INTO public.trap VALUES (1), (2);",
    "domain": "CREATE DOMAIN public.safe_int AS int CHECK (public.harmless(VALUE)); "
              "CREATE TABLE public.trap (id public.safe_int); INSERT INTO public.trap VALUES (1);",
    "generated": "CREATE TABLE public.trap (id int, g boolean GENERATED ALWAYS AS (public.harmless_i(id)) STORED); "
                 "INSERT INTO public.trap (id) VALUES (1);",
    "index": "CREATE TABLE public.trap (id int); INSERT INTO public.trap VALUES (1); "
             "CREATE INDEX trap_idx ON public.trap ((public.harmless_i(id)));",
    "matview": "CREATE MATERIALIZED VIEW public.trap AS SELECT public.harmless(1) AS x;",
}
HEALTHY = """
CREATE ROLE "app owner" NOLOGIN;
GRANT CREATE ON SCHEMA public TO "app owner";
CREATE EXTENSION pgcrypto; CREATE EXTENSION citext; CREATE EXTENSION hstore;
CREATE EXTENSION dblink; CREATE EXTENSION postgres_fdw;  -- not trusted: the drill's one superuser step
CREATE SCHEMA "Odd Schema" AUTHORIZATION "app owner";
SET ROLE "app owner";
CREATE FUNCTION "Odd Schema".positive(v int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE
    AS $$ BEGIN RETURN v > 0; END $$;
CREATE TABLE "Odd Schema"."People list" (id int PRIMARY KEY CHECK ("Odd Schema".positive(id)),
    email citext, attrs hstore, digest bytea GENERATED ALWAYS AS (public.digest(email::text, 'sha256')) STORED);
INSERT INTO "Odd Schema"."People list" (id, email, attrs)
    SELECT g, 'u' || g || '@x', 'a=>1' FROM generate_series(1, 50) g;
CREATE TABLE public.secret_rows (id int, owner_name text);
ALTER TABLE public.secret_rows ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.secret_rows FORCE ROW LEVEL SECURITY;
CREATE POLICY own ON public.secret_rows USING (owner_name = current_user);
RESET ROLE;
INSERT INTO public.secret_rows VALUES (1, 'someone'), (2, 'else');
CREATE INDEX people_email ON "Odd Schema"."People list" (lower(email::text));
"""


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[ThrowawayCluster, Path]]:
    """The "live" server (TCP, as the tests' clusters are) and a scratch dir the drill user can pass."""
    root = Path(tempfile.mkdtemp(prefix="pgbv-sandbox-"))
    root.chmod(0o711)
    try:
        with ThrowawayCluster(tag="sandbox-live-") as c:
            with psycopg.connect(c.dsn(), autocommit=True) as conn:
                conn.execute("CREATE ROLE app LOGIN")
                conn.execute("CREATE DATABASE live")
            with psycopg.connect(c.dsn("live"), autocommit=True) as conn:
                conn.execute("CREATE TABLE public.marker (x int)")
            yield c, root
    finally:
        for leftover in root.glob("**/pgbv-cluster-*"):
            stop_cluster_dir(leftover)
        shutil.rmtree(root, ignore_errors=True)


def _database(c: ThrowawayCluster, name: str, superuser_sql: str = "", app_sql: str = "") -> None:
    with psycopg.connect(c.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    with psycopg.connect(c.dsn(name), autocommit=True) as conn:
        if app_sql:
            conn.execute("GRANT CREATE ON SCHEMA public TO app")
        if superuser_sql:
            conn.execute(superuser_sql.encode())
    if app_sql:
        with psycopg.connect(c.dsn(name, "app"), autocommit=True) as conn:
            conn.execute(app_sql.encode())


def _dump(c: ThrowawayCluster, db: str, backups: Path, fmt: str, *options: str) -> None:
    backups.mkdir(parents=True)
    if fmt == "custom":
        subprocess.run(["pg_dump", "-Fc", *options, "-d", c.dsn(db), "-f", str(backups / "db_2026-12-07_0200.dump")],
                       check=True)
        return
    out = subprocess.run(["pg_dump", *options, "-d", c.dsn(db)], check=True, capture_output=True).stdout
    (backups / "db_2026-12-07_0200.sql.gz").write_bytes(gzip.compress(out))


def _target(root: Path, name: str, c: ThrowawayCluster, db: str, fmt: str, **drill: object) -> Path:
    work = root / name / "work"
    work.mkdir(parents=True)
    work.chmod(0o711)
    keys = {"work_dir": str(work), "lock_file": str(work / "drill.lock"), "expected_schemas": ["public"], **drill}
    lines = "\n".join(f"{k} = {_toml(v)}" for k, v in keys.items())
    pattern = "db_*.dump" if fmt == "custom" else "db_*.sql.gz"
    path = root / name / "t.toml"
    path.write_text(f'[target]\nname = "{name}"\n[database]\ndsn = "{c.dsn(db)}"\ndump_role = "postgres"\n'
                    f'[backups]\ndirectory = "{root / name / "backups"}"\npattern = "{pattern}"\n[drill]\n{lines}\n')
    return path


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return f'"{v}"' if isinstance(v, str) else str(v)


def _trap_case(live: tuple[ThrowawayCluster, Path], vector: str, action: str, fmt: str = "plain",
               jobs: int = 2) -> tuple[DrillFacts, Path, Path]:
    c, root = live
    name = f"{vector}-{action}-{fmt}-{jobs}"
    marker = MARK_DIR / f"pgbv-trap-{uuid.uuid4().hex}"
    setup = "CREATE EXTENSION dblink;" if action == "live" else ""
    _database(c, name, setup, TRAP_FN.format(action=ACTIONS[action].format(marker=marker, port=c.port))
              + VECTORS[vector])
    # As the seed's job does: --no-owner, so the restored objects belong to whoever restores.
    _dump(c, name, root / name / "backups", fmt, "--no-owner", "--no-acl")
    facts = run_drill(load_target(_target(root, name, c, name, fmt, jobs=jobs)))
    return facts, marker, root / name / "work"


def _live_markers(c: ThrowawayCluster) -> int:
    with psycopg.connect(c.dsn("live")) as conn:
        return int(conn.execute("SELECT count(*) FROM public.marker").fetchone()[0])  # type: ignore[index]


def _assert_contained(facts: DrillFacts, marker: Path, work: Path, obj: str, tried: str) -> None:
    assert facts.aborted is None, facts.aborted
    assert facts.outcome is not None
    found = traps.find_traps(facts.outcome.problems)
    assert found, facts.outcome.problems
    line = found[0].describe()
    assert obj in line and tried in line and "superuser restore of this dump" in line, line
    assert not marker.exists(), f"{marker} was written on the host"
    assert not list(work.glob("pgbv-cluster-*")), "the drill left its cluster"
    assert not facts.leftovers and not facts.cleanup_problems


@pytest.mark.parametrize("vector", sorted(VECTORS))
def test_each_trap_vector_is_contained_and_named(live: tuple[ThrowawayCluster, Path], vector: str) -> None:
    facts, marker, work = _trap_case(live, vector, "program")
    _assert_contained(facts, marker, work, "public.trap", "PROGRAM")
    assert "public.harmless" in traps.find_traps(facts.outcome.problems)[0].describe()  # type: ignore[union-attr]


@pytest.mark.parametrize(("action", "fmt", "jobs", "tried"), [
    ("file", "plain", 1, "server file"),  # the serial psql restore
    ("program", "custom", 2, "PROGRAM"),  # pg_restore -j2
    ("file", "custom", 1, "server file"),
])
def test_traps_are_contained_in_every_restore_path(live: tuple[ThrowawayCluster, Path], action: str, fmt: str,
                                                   jobs: int, tried: str) -> None:
    facts, marker, work = _trap_case(live, "check", action, fmt, jobs)
    _assert_contained(facts, marker, work, "public.trap" if fmt == "plain" else "trap", tried)


def test_a_connection_back_to_the_live_server_never_happens(live: tuple[ThrowawayCluster, Path]) -> None:
    c, _ = live
    before = _live_markers(c)
    facts, marker, work = _trap_case(live, "check", "live")
    # dblink is not trusted: the drill's superuser installs it, but the call runs as the plain restore role
    # (a non-superuser must bring a password), from a network namespace with no route to the live server.
    _assert_contained(facts, marker, work, "public.trap", "a connection to another server")
    assert any("extension dblink created by the drill's superuser" in n for n in facts.extensions), facts.extensions
    assert _live_markers(c) == before


def test_the_trap_is_one_red_line_naming_the_object_and_the_fix(live: tuple[ThrowawayCluster, Path]) -> None:
    c, root = live
    name = "check-program-console"
    marker = MARK_DIR / f"pgbv-trap-{uuid.uuid4().hex}"
    _database(c, name, "", TRAP_FN.format(action=ACTIONS["program"].format(marker=marker)) + VECTORS["check"])
    _dump(c, name, root / name / "backups", "plain", "--no-owner", "--no-acl")
    run = run_checks(root / name / "run", [_target(root, name, c, name, "plain")], [checks_dir() / "test_drill.py"],
                     "-p", "no:xdist")
    result = run[name]
    assert result.outcome("test_restore_finished_without_errors") == "failed", result.text
    result.fnmatch_line("*restore drill: FAILED (public.trap: public.harmless(integer), called while restoring it, "
                        "tried COPY ... TO/FROM PROGRAM as the restoring role*fix: drop or rewrite that code*")
    assert not marker.exists()


def test_a_healthy_unusual_database_restores_green_as_a_plain_role(live: tuple[ThrowawayCluster, Path]) -> None:
    c, root = live
    _database(c, "healthy", HEALTHY)
    for fmt, options in (("plain", ()), ("custom", ())):  # owners kept: the drill makes "app owner" a plain role
        name = f"healthy-{fmt}"
        _dump(c, "healthy", root / name / "backups", fmt, *options)
        facts = run_drill(load_target(_target(root, name, c, "healthy", fmt, roles=["app owner"],
                                              expected_schemas=["public", "Odd Schema"])))
        assert facts.aborted is None, facts.aborted
        assert facts.outcome is not None and not facts.outcome.problems, facts.outcome.problems
        assert facts.restored is not None and {"public", "Odd Schema"} <= facts.restored.schemas
        assert [n for t, n in facts.rows.items() if "People list" in t] == [(50, 50)], facts.rows
        assert "bubblewrap sandbox" in facts.where and not facts.leftovers


def _sleeping_drill(live: tuple[ThrowawayCluster, Path], name: str, sandbox: str = "bwrap"
                    ) -> tuple[threading.Thread, list[DrillFacts], Path]:
    c, root = live
    _database(c, name, "CREATE TABLE public.t (x int); INSERT INTO public.t VALUES (1);")
    backups = root / name / "backups"
    _dump(c, name, backups, "plain")
    path = backups / "db_2026-12-07_0200.sql.gz"
    text = gzip.decompress(path.read_bytes()).decode().replace("COPY public.t ", "SELECT pg_sleep(6);\nCOPY public.t ")
    path.write_bytes(gzip.compress(text.encode()))
    target = load_target(_target(root, name, c, name, "plain", sandbox=sandbox))
    out: list[DrillFacts] = []
    t = threading.Thread(target=lambda: out.append(run_drill(target)))
    t.start()
    return t, out, root / name / "work"


def _restoring_backend(seconds: float = 60) -> psutil.Process:
    """The backend of THIS test's drill that sits in its pg_sleep. The drill runs in a thread of this
    process, so its bwrap, postmaster and backends are our descendants; another xdist worker's drill
    (same process title) is not, and is never picked."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for p in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                if any("pgbv_restore" in a and a.endswith("SELECT") for a in p.cmdline()):
                    return p
        time.sleep(0.1)
    raise AssertionError("the drill never reached its pg_sleep")


def _uid(p: psutil.Process) -> int | None:
    try:
        return int(p.uids().real)
    except psutil.NoSuchProcess:
        return None


def test_nobody_else_can_reach_the_drill_server_while_it_runs(live: tuple[ThrowawayCluster, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"planted-{uuid.uuid4().hex}"
    monkeypatch.setenv("PGPASSWORD", secret)  # the run's own secrets: no child of the drill may inherit them
    monkeypatch.setenv("KUMA_PUSH_LOCAL", secret)
    thread, out, work = _sleeping_drill(live, "reach")
    try:
        backend = _restoring_backend()
        children = psutil.Process().children(recursive=True)
        assert children
        for p in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                assert secret not in " ".join(f"{k}={v}" for k, v in p.environ().items()), p.cmdline()
        [root] = work.glob("pgbv-cluster-drill-*")
        # The drill's server: our descendants running as the backend's uid (not another worker's drill).
        server = [p for p in children if _uid(p) == backend.uids().real]
        assert backend.pid in {p.pid for p in server}
        # The server runs as an unnamed uid (not root, not postgres), in a network namespace of its own.
        assert backend.uids().real >= UID_BASE
        assert os.readlink(f"/proc/{backend.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        for p in server:  # nothing secret on any command line or in the server's environment
            with contextlib.suppress(psutil.NoSuchProcess):
                cmdline = " ".join(p.cmdline())
                assert "password" not in cmdline.lower()
                assert "PGPASSWORD" not in p.environ() or "psql" in cmdline
        # No TCP listener anywhere in the drill's processes (their netns has only its own loopback).
        assert not [c for c in psutil.net_connections("inet") if c.pid in {p.pid for p in server}]
        # The local user `nobody` cannot even reach the socket, let alone log in.
        psql = str(pg_bindir() / "psql")
        tried = subprocess.run([psql, "-X", "-h", str(root / "sock"), "-U", "pgbv_admin", "-d", "postgres",
                                "-c", "COPY (SELECT 1) TO PROGRAM 'id'"], user="nobody", group="nogroup",
                               capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
        assert tried.returncode != 0 and "Permission denied" in tried.stderr, tried.stderr
        assert os.stat(root / "sock").st_mode & 0o007 == 0 and os.stat(root / "data").st_mode & 0o077 == 0
    finally:
        thread.join(120)
    assert out and out[0].outcome is not None and not out[0].outcome.problems, out
    assert not list(work.glob("pgbv-cluster-*"))


def test_without_bwrap_the_drill_fails_closed(live: tuple[ThrowawayCluster, Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    c, root = live
    _database(c, "closed", "CREATE TABLE public.t (x int);")
    _dump(c, "closed", root / "closed" / "backups", "plain")
    target = load_target(_target(root, "closed", c, "closed", "plain"))
    monkeypatch.setenv("PATH", str(pg_bindir()))  # every PostgreSQL tool, no bwrap
    with pytest.raises(SandboxUnavailable, match=r"bwrap is not installed; install bubblewrap \(apt-get install "
                                                 r"bubblewrap\).*\[drill\]\.sandbox = \"none\""):
        run_drill(target)
    assert not list((root / "closed" / "work").glob("pgbv-cluster-*"))


def test_sandbox_none_runs_and_says_so(live: tuple[ThrowawayCluster, Path]) -> None:
    c, root = live
    _database(c, "unboxed", "CREATE TABLE public.t (x int); INSERT INTO public.t VALUES (1);")
    _dump(c, "unboxed", root / "unboxed" / "backups", "plain")
    facts = run_drill(load_target(_target(root, "unboxed", c, "unboxed", "plain", sandbox="none")))
    assert facts.outcome is not None and not facts.outcome.problems, facts.outcome.problems
    assert "UNSANDBOXED" in facts.where


def test_scratch_mode_refuses_a_superuser_dsn(live: tuple[ThrowawayCluster, Path]) -> None:
    c, root = live
    _database(c, "scratchsrc", "CREATE TABLE public.t (x int);")
    _dump(c, "scratchsrc", root / "scratch" / "backups", "plain")
    target = load_target(_target(root, "scratch", c, "scratchsrc", "plain", mode="scratch", server_dsn=c.dsn()))
    with pytest.raises(Exception, match=r"\[drill\]\.server_dsn: its role 'postgres' is a superuser: .*"
                                        r"allow_superuser_restore = true") as e:
        run_drill(target)
    assert getattr(e.value, "exit_code", None) == 4
