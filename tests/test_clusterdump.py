"""The restore drill of a real pg_dumpall cluster dump (facts/drill/clusterdump.py).

One source cluster of legal but unusual content: two databases with odd names (a space; a quote
and double quotes), roles with memberships (one in a predefined role), a superuser role, a login
role with a password and settings, objects owned by the superuser role. The real `pg_dumpall`
(PostgreSQL 15) writes it, gzip'd and plain. ONE run of the shipped dump and drill checks judges
every case: the healthy dumps green with every database's rows counted; a dump with a meta-command
added (`\\! id`), one whose database part tries `ALTER ROLE ... SUPERUSER`, and a cut one, red.
The drill's own catalog shows that no role of the dump holds a power there.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from checkrun import ChecksRun, TargetResult, run_checks
from srcdb import drill_target_toml

from pgbackup_verify.cli import checks_dir
from pgbackup_verify.config import load_target
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.drill.clusterdump import ClusterScanner, connect_target
from pgbackup_verify.facts.drill.run import DrillFacts, run_drill
from pgbackup_verify.facts.drill.safety import stop_cluster_dir

CHECKS = [checks_dir() / "test_dumps.py", checks_dir() / "test_drill.py", checks_dir() / "test_grants.py"]
MY_DB = "my db"
QUOTE_DB = "it's \"q\" db"
OWNER = "app owner"
ODD_ROLE = 'odd "quoted" role'
ROWS = {MY_DB: {"app.items": 1200, '"Odd Schema"."Mixed Case"': 37, "public.boss_table": 5},
        QUOTE_DB: {"public.notes": 250}}
SETUP = [
    f'CREATE ROLE "{OWNER}" NOLOGIN',
    "CREATE ROLE reader LOGIN PASSWORD 'reader-secret-pw'",
    f'GRANT "{OWNER}" TO reader',
    "GRANT pg_read_all_data TO reader",
    "CREATE ROLE boss SUPERUSER LOGIN PASSWORD 'boss-secret-pw'",
    'CREATE ROLE "odd ""quoted"" role" NOLOGIN',
    f'GRANT "odd ""quoted"" role" TO "{OWNER}"',
    "ALTER ROLE reader SET search_path = app, public",
    f'CREATE DATABASE "{MY_DB}" OWNER "{OWNER}"',
    'CREATE DATABASE "it\'s ""q"" db" OWNER boss',
    f'ALTER DATABASE "{MY_DB}" SET work_mem = \'8MB\'',
    f'ALTER ROLE reader IN DATABASE "{MY_DB}" SET work_mem = \'4MB\'',
]
MY_DB_SQL = [
    f'CREATE SCHEMA app AUTHORIZATION "{OWNER}"',
    'CREATE SCHEMA "Odd Schema" AUTHORIZATION "odd ""quoted"" role"',
    "CREATE TABLE app.items (id int PRIMARY KEY, name text)",
    f'ALTER TABLE app.items OWNER TO "{OWNER}"',
    "INSERT INTO app.items SELECT g, 'item ' || g FROM generate_series(1, 1200) g",
    'CREATE TABLE "Odd Schema"."Mixed Case" (v text)',
    'ALTER TABLE "Odd Schema"."Mixed Case" OWNER TO "odd ""quoted"" role"',
    """INSERT INTO "Odd Schema"."Mixed Case" SELECT E'a\\\\b\\tc;' || g FROM generate_series(1, 37) g""",
    "CREATE TABLE public.boss_table (i int)",
    "ALTER TABLE public.boss_table OWNER TO boss",
    "INSERT INTO public.boss_table SELECT generate_series(1, 5)",
    "GRANT SELECT ON app.items TO reader",
    "CREATE VIEW app.v AS SELECT count(*) FROM app.items",
    f'ALTER VIEW app.v OWNER TO "{OWNER}"',
]
QUOTE_DB_SQL = [
    "CREATE TABLE public.notes (id serial PRIMARY KEY, body text)",
    "ALTER TABLE public.notes OWNER TO boss",
    "INSERT INTO public.notes (body) SELECT 'note ' || g FROM generate_series(1, 250) g",
]


# A `name = name` operator of the dump's own, first on the search path its database sets for later sessions:
# any superuser query comparing a name with a parameter would run it.
HIJACK = """CREATE SCHEMA trap;
CREATE FUNCTION trap.eq(name, name) RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
  IF current_user = 'pgbv_admin' THEN RAISE EXCEPTION 'hijacked: trap.= ran as %', current_user; END IF;
  RETURN $1 OPERATOR(pg_catalog.=) $2;
END $$;
CREATE OPERATOR trap.= (LEFTARG = name, RIGHTARG = name, FUNCTION = trap.eq);
ALTER DATABASE postgres SET search_path = trap, pg_catalog;
"""


@dataclass(repr=False)
class Cases:
    run: ChecksRun
    files: dict[str, Path]
    superuser_try: DrillFacts  # the drill, in-process, of the dump whose database part tries ALTER ROLE SUPERUSER
    healthy: DrillFacts  # the drill, in-process, of the healthy plain dump
    seconds: dict[str, float]  # what the fixture measured: pg_dumpall, the checks run, each in-process drill
    lines: dict[str, int]  # case -> the dump line its fault was put on

    def __getitem__(self, case: str) -> TargetResult:
        assert "Traceback" not in self.run.stdout, self.run.stdout[-3000:]
        return self.run[case]


def _build(c: ThrowawayCluster) -> None:
    with psycopg.connect(c.dsn(), autocommit=True) as conn:
        for stmt in SETUP:
            conn.execute(stmt)
    for db, stmts in ((MY_DB, MY_DB_SQL), (QUOTE_DB, QUOTE_DB_SQL)):
        with psycopg.connect(c.dsn(), dbname=db, autocommit=True) as conn:
            for stmt in stmts:
                conn.execute(stmt)


def _target(name: str, c: ThrowawayCluster, backups: Path, work: Path, pattern: str, extra: str = "") -> str:
    dsn = psycopg.conninfo.make_conninfo(c.dsn(), dbname=MY_DB)
    return drill_target_toml(name, dsn, backups, work, pattern, drill_extra=extra)


def _insert_after(text: str, anchor_re: str, line: str) -> tuple[str, int]:
    """`line` inserted after the first line matching `anchor_re`; and its line number."""
    lines = text.split("\n")
    at = next(i for i, ln in enumerate(lines) if re.fullmatch(anchor_re, ln)) + 1
    lines.insert(at, line)
    return "\n".join(lines), at + 1


@pytest.fixture(scope="module")
def cases() -> Iterator[Cases]:
    root = Path(tempfile.mkdtemp(prefix="pgbv-clusterdump-"))
    root.chmod(0o711)  # the sandboxed drill's unnamed user walks through to its cluster
    files: dict[str, Path] = {}
    targets: list[Path] = []
    works: list[Path] = []
    seconds: dict[str, float] = {}
    lines: dict[str, int] = {}
    with ThrowawayCluster(tag="clusterdump-") as c:
        _build(c)
        started = time.monotonic()
        sql = subprocess.run(["pg_dumpall"], env=c.env(), capture_output=True, check=True).stdout.decode()
        seconds["pg_dumpall"] = time.monotonic() - started

        def case(name: str, text: str, suffix: str = ".sql.gz", extra: str = "") -> Path:
            d = root / name / "backups"
            d.mkdir(parents=True)
            work = root / name / "work"
            work.mkdir()
            work.chmod(0o711)
            works.append(work)
            t = root / name / "t.toml"
            t.write_text(_target(name, c, d, work, f"cluster_*{suffix}", extra))
            targets.append(t)
            p = files[name] = d / f"cluster_{name}{suffix}"
            p.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
            return p

        case("healthy-gz", sql)
        case("healthy-plain", sql, ".sql")
        meta, lines["meta"] = _insert_after(sql, r"\\connect -reuse-previous=on \"dbname='my db'\"", "\\! id")
        case("meta", meta)
        superuser, lines["superuser"] = _insert_after(sql, r"\\connect -reuse-previous=on \"dbname='my db'\"",
                                     f'ALTER ROLE "{OWNER}" SUPERUSER LOGIN;')
        case("superuser", superuser)
        # The common pair: pg_dumpall --globals-only beside one database's pg_dump (owners and grants kept).
        one = subprocess.run(["pg_dump", "-d", MY_DB], env=c.env(), capture_output=True, check=True).stdout.decode()
        p = case("pair", one, extra='globals_glob = "globals_*.sql"\n')
        globals_sql = subprocess.run(["pg_dumpall", "--globals-only"], env=c.env(), capture_output=True,
                                     check=True).stdout
        (p.parent / "globals_pair.sql").write_bytes(globals_sql)
        # The restore role owns `postgres` for its part: a trap for the drill's superuser sessions there.
        case("hijack", sql.replace("--\n-- PostgreSQL database cluster dump complete", HIJACK + "--\n-- PostgreSQL "
                                   "database cluster dump complete"))
        p = case("cut", sql)
        p.write_bytes(p.read_bytes()[: p.stat().st_size * 2 // 3])
        try:
            started = time.monotonic()
            run = run_checks(root / "run", targets, CHECKS)
            seconds["checks run"] = time.monotonic() - started
            started = time.monotonic()
            superuser_try = run_drill(load_target(root / "superuser" / "t.toml"))
            seconds["drill superuser"] = time.monotonic() - started
            started = time.monotonic()
            healthy = run_drill(load_target(root / "healthy-plain" / "t.toml"))
            seconds["drill healthy-plain"] = time.monotonic() - started
            print("timings:", seconds)
            yield Cases(run, files, superuser_try, healthy, seconds, lines)
        finally:
            for w in works:
                for leftover in w.glob("pgbv-cluster-*"):
                    stop_cluster_dir(leftover)
            shutil.rmtree(root, ignore_errors=True)


DRILL_CHECKS = ("test_restore_finished_without_errors", "test_every_expected_schema_is_restored",
                "test_table_count_per_schema_meets_expectation", "test_sequences_views_functions_are_restored",
                "test_every_table_has_the_rows_read_from_the_dump", "test_every_large_object_is_restored",
                "test_drill_left_nothing_behind")


@pytest.mark.parametrize("case", ["healthy-gz", "healthy-plain"])
def test_healthy_cluster_dump_restores_every_database_with_its_rows(cases, case):
    result = cases[case]
    for check in DRILL_CHECKS:
        assert result.outcome(check) == "passed", (check, result.text)
    text = result.text
    for db, tables in ROWS.items():
        shown = f'"{db.replace(chr(34), chr(34) * 2)}"'
        assert f"{shown}: {sum(tables.values())} rows in " in text, text
    assert "restore db: my db (of the cluster dump's 4 databases: template1, " in text


def test_grant_audit_of_a_superuser_dump_role_says_so_instead_of_auditing(cases):
    """pg_dumpall runs as a superuser: the grants checks pass saying no grant is needed, none listed."""
    result = cases["healthy-gz"]
    grants = [c for c in result.checks if "grants" in c["nodeid"]]
    assert grants and all(c["outcome"] == "passed" for c in grants), result.text
    assert ("not audited: postgres is a superuser: it reads every relation, now and later, whatever is granted "
            "(pg_dumpall needs one); no grant is needed or audited") in result.text, result.text
    assert "missing: " not in result.text


def test_roles_of_the_dump_are_plain_owner_roles_in_the_drill_catalog(cases):
    f = cases.healthy
    assert f.outcome is not None and not f.outcome.problems, f.outcome.problems
    assert f.cluster is not None
    g = f.cluster.globals
    assert set(g.roles) >= {OWNER, "reader", "boss", ODD_ROLE, "postgres"}
    assert "SUPERUSER" in g.roles["boss"] and "PASSWORD" in g.roles["reader"] and "LOGIN" in g.roles["reader"]
    # Read back from the drill cluster's own pg_authid: not one power, password or predefined role.
    assert set(f.cluster.powers) >= {OWNER, "reader", "boss", ODD_ROLE, "postgres"}
    assert all(held == [] for held in f.cluster.powers.values()), f.cluster.powers
    assert f"{ODD_ROLE} to {OWNER}" in f.cluster.grants and f"{OWNER} to reader" in f.cluster.grants
    predefined = "pg_read_all_data to reader (pg_read_all_data: a predefined"
    assert any(n.startswith(predefined) for n in f.cluster.not_granted), f.cluster.not_granted
    assert f.databases == ["template1", QUOTE_DB, MY_DB, "postgres"]
    assert f.rows[f'"{MY_DB}".app.items'] == (1200, 1200)
    assert f.rows['"it\'s ""q"" db".public.notes'] == (250, 250)


def test_globals_only_file_beside_a_pg_dump_makes_its_owners_first(cases):
    result = cases["pair"]
    for check in DRILL_CHECKS:
        assert result.outcome(check) == "passed", (check, result.text)
    text = result.text
    assert "globals_pair.sql" in text and "its roles made before the restore ([drill].globals_glob)" in text, text
    assert f"rows: {sum(ROWS[MY_DB].values())} rows in 3 COPY blocks" in text, text
    assert "roles of the dump: 5 made plain NOLOGIN owner roles" in text, text


def test_database_settings_of_the_dump_never_reach_the_drills_superuser(cases):
    """The dump owns `postgres` for its part and sets a search path with its own `=` first: the drill's
    superuser sessions pin theirs in the startup packet (drillcluster.ADMIN_OPTIONS), the trap never runs."""
    result = cases["hijack"]
    assert "hijacked" not in result.text
    for check in DRILL_CHECKS:
        assert result.outcome(check) == "passed", (check, result.text)


def test_a_meta_command_in_a_cluster_dump_is_red_naming_the_line(cases):
    line = cases.lines["meta"]
    text = cases["meta"].text
    assert (f"restore drill errors: FAILED (dump refused: dump line {line}: psql meta-command refused: \\! id); "
            "fix: a pg_dump never writes meta-commands") in text, text


def test_alter_role_superuser_in_a_database_part_is_refused_and_makes_no_superuser(cases):
    line = cases.lines["superuser"]
    text = cases["superuser"].text
    assert ("restore drill: FAILED (a statement of the dump: its restore tried a superuser-only operation as the "
            "restoring role: ") in text, text
    assert (f"error lines: dump line {line}: ERROR: must be superuser to alter superuser roles or change superuser "
            f'attribute | line: ALTER ROLE "{OWNER}" SUPERUSER LOGIN;') in text, text
    f = cases.superuser_try
    assert f.cluster is not None and f.cluster.powers.get(OWNER) == [], f.cluster.powers


def test_cut_cluster_dump_is_red(cases):
    """One fault, one red line: the gzip check names the cut; the drill of that file is not judged."""
    result = cases["cut"]
    name = cases.files["cut"].name
    assert result.outcome("test_latest_dump_gzip_stream_is_valid") == "failed"
    assert f"latest dump gzip stream: FAILED ({name}: gzip stream ends early at byte " in result.text
    assert result.outcome("test_restore_finished_without_errors") == "skipped"
    assert f"not judged: dump {cases.files['cut']}: latest dump gzip stream: FAILED" in result.text


@pytest.mark.parametrize(("line", "db"), [
    (b"\\connect template1\n", "template1"),
    (b'\\connect "MyDb"\n', "MyDb"),
    (b"\\connect -reuse-previous=on \"dbname='it\\'s \"\"q\"\" db'\"\n", "it's \"q\" db"),  # as pg_dump 15 writes it
    (b"\\connect -reuse-previous=on \"dbname='a\\\\b'\"\n", "a\\b"),
    (b"\\connect other user\n", None), (b"\\connect -reuse-previous=on \"dbname='x' host=evil\"\n", None),
    (b"\\c template1\n", None), (b"\\connect \"dbname=x\" \n", None),
])
def test_only_pg_dumpalls_own_connect_forms_are_read(line, db):
    assert connect_target(line) == db


def test_globals_are_read_never_sent():
    s = ClusterScanner()
    out = s.feed(b"--\n-- PostgreSQL database cluster dump\n--\n\nCREATE ROLE boss;\n"
                 b"ALTER ROLE boss WITH SUPERUSER LOGIN PASSWORD 'x';\nGRANT boss TO app GRANTED BY postgres;\n"
                 b"CREATE TABLESPACE t LOCATION '/x';\n\\connect template1\nSELECT 1;\n")
    sent = b"".join(bytes(p) for p in out)
    assert sent == b"SELECT 1;\n"
    assert s.globals.roles == {"boss": ["SUPERUSER", "LOGIN", "PASSWORD"]}
    assert s.globals.memberships == [("boss", "app")]
    assert s.globals.not_run == {"CREATE TABLESPACE": 1}


def test_evidence_names_what_the_dump_asked_and_what_was_not_run(cases):
    text = cases["healthy-gz"].text
    assert "databases restored: template1, " in text and '"my db", postgres' in text, text
    assert "asked for by the dump, not given: boss SUPERUSER LOGIN PASSWORD" in text, text
    assert "role settings in a database (ALTER ROLE ... IN DATABASE ... SET): 1" in text, text
    assert "role settings (ALTER ROLE ... SET): 1" in text, text
