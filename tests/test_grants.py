"""Grant checks against real clusters: healthy passes, each fault fails naming the object and the fix,
and the fix it names really repairs the database."""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from checkrun import ChecksRun, TargetResult, run_checks
from pgbackup_verify_demo import demo

from pgbackup_verify.config import ConfigError, Target, load_target
from pgbackup_verify.facts import grants
from pgbackup_verify.facts.db import connect_readonly
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_grants.py"
TEMPLATE = "gr_healthy"

# Roles are cluster-wide: prefixed so they never meet another self-test's roles.
ROLES_SQL = """
CREATE ROLE gr_dump LOGIN;
CREATE ROLE gr_owner LOGIN;
CREATE ROLE gr_other LOGIN;
CREATE ROLE gr_reader LOGIN IN ROLE pg_read_all_data;
"""

# A healthy database in the shape of the seed, with every audited relation kind.
HEALTHY_SQL = """
CREATE SCHEMA "Pilot Area" AUTHORIZATION gr_owner;
GRANT USAGE ON SCHEMA "Pilot Area" TO gr_dump;
ALTER DEFAULT PRIVILEGES FOR ROLE gr_owner IN SCHEMA "Pilot Area" GRANT SELECT ON TABLES TO gr_dump;
ALTER DEFAULT PRIVILEGES FOR ROLE gr_owner IN SCHEMA "Pilot Area" GRANT USAGE, SELECT ON SEQUENCES TO gr_dump;
SET ROLE gr_owner;
CREATE TABLE "Pilot Area".flights (id bigserial PRIMARY KEY, pilot text);
CREATE TABLE "Pilot Area".logbook (day date, n int) PARTITION BY RANGE (day);
CREATE TABLE "Pilot Area".logbook_2026 PARTITION OF "Pilot Area".logbook
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE VIEW "Pilot Area".pilots AS SELECT DISTINCT pilot FROM "Pilot Area".flights;
CREATE MATERIALIZED VIEW "Pilot Area".daily AS SELECT count(*) AS n FROM "Pilot Area".flights;
CREATE SEQUENCE "Pilot Area".ticket;
RESET ROLE;
CREATE EXTENSION file_fdw;
CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
CREATE FOREIGN TABLE "Pilot Area".manifests (line text) SERVER files OPTIONS (filename '/dev/null');
ALTER FOREIGN TABLE "Pilot Area".manifests OWNER TO gr_owner;
GRANT SELECT ON "Pilot Area".manifests TO gr_dump;
CREATE TABLE public.settings (k text PRIMARY KEY, v text);
GRANT SELECT ON public.settings TO gr_dump;
"""

P = '"Pilot Area"'
# fault id -> (SQL applied to a copy of the healthy DB, failing check, strings its failure must show)
FAULTS = {
    "schema-without-usage": (
        f"REVOKE USAGE ON SCHEMA {P} FROM gr_dump",
        "test_dump_role_has_usage_on_every_schema",
        ["dump role USAGE on every schema: FAILED (1 of 2 schemas without USAGE for gr_dump vs 0 allowed)",
         f"GRANT USAGE ON SCHEMA {P} TO gr_dump;", f"schema {P} (owner gr_owner) lacks USAGE"]),
    "table-without-select": (
        f"REVOKE SELECT ON {P}.flights FROM gr_dump",
        "test_dump_role_can_select_every_relation",
        ["dump role reads every table: FAILED (1 of 7 relations unreadable by gr_dump vs 0 allowed)",
         f"GRANT SELECT ON TABLE {P}.flights TO gr_dump;", f"table {P}.flights (owner gr_owner) lacks SELECT"]),
    "partitioned-and-view-without-select": (
        f"REVOKE SELECT ON {P}.pilots, {P}.daily, {P}.logbook, {P}.manifests FROM gr_dump",
        "test_dump_role_can_select_every_relation",
        ["FAILED (1 of 7 relations unreadable by gr_dump vs 0 allowed); fix (as gr_owner or a superuser): "
         f"GRANT SELECT ON TABLE {P}.logbook TO gr_dump;\n"
         f"  partitioned table {P}.logbook (owner gr_owner) lacks SELECT"]),
    "sequence-without-select": (
        f"REVOKE SELECT ON SEQUENCE {P}.ticket FROM gr_dump",
        "test_dump_role_can_read_every_sequence",
        [f"sequence {P}.ticket (owner gr_owner) lacks SELECT\n",
         f"GRANT SELECT ON SEQUENCE {P}.ticket TO gr_dump;"]),
    "row-level-security": (
        f"ALTER TABLE {P}.flights ENABLE ROW LEVEL SECURITY",
        "test_dump_role_can_select_every_relation",
        ["dump role reads every table: FAILED (1 of 7 relations unreadable by gr_dump vs 0 allowed); "
         "fix (as a superuser): ALTER ROLE gr_dump BYPASSRLS;\n"
         f"  table {P}.flights (owner gr_owner) lacks BYPASSRLS (row-level security, not owned by gr_dump;"
         " pg_dump runs with row_security = off)"]),
    "large-object-without-select": (
        "SET ROLE gr_owner; SELECT lo_create(4242); RESET ROLE",
        "test_dump_role_can_read_every_large_object",
        ["dump role SELECT on every large object: FAILED (1 of 1 large objects without SELECT for gr_dump vs 0 "
         "allowed); fix (as gr_owner or a superuser): GRANT SELECT ON LARGE OBJECT 4242 TO gr_dump;\n"
         "  large object 4242 (owner gr_owner) lacks SELECT"]),
    "other-owner-without-default-privileges": (
        "CREATE SCHEMA ops AUTHORIZATION gr_other; GRANT USAGE ON SCHEMA ops TO gr_dump;"
        " SET ROLE gr_other; CREATE TABLE ops.jobs (id int); RESET ROLE; GRANT SELECT ON ops.jobs TO gr_dump",
        "test_default_privileges_cover_future_objects",
        ["ALTER DEFAULT PRIVILEGES FOR ROLE gr_other IN SCHEMA ops GRANT SELECT ON TABLES TO gr_dump;",
         "ALTER DEFAULT PRIVILEGES FOR ROLE gr_other IN SCHEMA ops GRANT USAGE, SELECT ON SEQUENCES TO gr_dump;"]),
    "default-privileges-revoked": (
        f"ALTER DEFAULT PRIVILEGES FOR ROLE gr_owner IN SCHEMA {P} REVOKE SELECT ON TABLES FROM gr_dump",
        "test_default_privileges_cover_future_objects",
        [f"ALTER DEFAULT PRIVILEGES FOR ROLE gr_owner IN SCHEMA {P} GRANT SELECT ON TABLES TO gr_dump;"]),
    "no-connect-privilege": (
        "REVOKE CONNECT ON DATABASE gr_no_connect_privilege FROM PUBLIC",
        "test_dump_role_can_connect",
        ["dump role can connect: FAILED (no CONNECT on database gr_no_connect_privilege vs login + CONNECT); "
         "fix: GRANT CONNECT ON DATABASE gr_no_connect_privilege TO gr_dump;"]),
}


@pytest.fixture(scope="module")
def grant_cluster(cluster: ThrowawayCluster) -> ThrowawayCluster:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(ROLES_SQL)
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    with psycopg.connect(cluster.dsn(TEMPLATE), autocommit=True) as conn:
        conn.execute(HEALTHY_SQL)
    return cluster


def make_db(cluster: ThrowawayCluster, name: str, sql: str = "") -> str:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    if sql:
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            conn.execute(sql)
    return name


def target_file(tmp_path: Path, dsn: str, dump_role: str = "gr_dump", extra: str = "", name: str = "g") -> Path:
    f = tmp_path / f"{name}.toml"
    f.write_text(f'[target]\nname = "{name}"\n[database]\ndsn = "{dsn}"\ndump_role = "{dump_role}"\n{extra}\n'
                 f'[backups]\ndirectory = "{tmp_path}"\n')
    return f


def run_one(pytester: pytest.Pytester, f: Path) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--target", str(f), "-p", "no:cacheprovider", str(CHECKS))


@dataclass(repr=False)
class Grants:
    """One checks run over a target per case below; each case is its own database (or cluster)."""

    run: ChecksRun
    targets: dict[str, Path]

    def __getitem__(self, case: str) -> TargetResult:
        return self.run[case]


@pytest.fixture(scope="module")
def grant_run(grant_cluster: ThrowawayCluster, seed_cluster: ThrowawayCluster,
              seed_night: tuple[ThrowawayCluster, Path], tmp_path_factory: pytest.TempPathFactory) -> Grants:
    root = tmp_path_factory.mktemp("grant-cases")
    targets = {"healthy": target_file(root, grant_cluster.dsn(make_db(grant_cluster, "gr_ok"), "gr_dump"),
                                      name="healthy")}
    seed = demo.write_target_file(root / "seed.toml", seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE), root,
                                  name="seed")
    targets["seed"] = seed
    for fault, (sql, _, _) in FAULTS.items():
        db = make_db(grant_cluster, "gr_" + fault.replace("-", "_"), sql)
        # An auditor may connect as another role than the one audited (needed when CONNECT is gone).
        targets[fault] = target_file(root, grant_cluster.dsn(db, "postgres" if "connect" in fault else "gr_dump"),
                                     name=fault)
    db = make_db(grant_cluster, "gr_excluded", f"REVOKE USAGE ON SCHEMA {P} FROM gr_dump;"
                                               f" REVOKE SELECT ON ALL TABLES IN SCHEMA {P} FROM gr_dump")
    targets["excluded"] = target_file(root, grant_cluster.dsn(db, "gr_dump"), extra='exclude_schemas = ["Pilot Area"]',
                                      name="excluded")
    unneeded = (f"REVOKE SELECT ON {P}.pilots, {P}.manifests FROM gr_dump;"
                f" REVOKE USAGE ON SEQUENCE {P}.ticket FROM gr_dump")
    for name, extra in (("unneeded", ""), ("unneeded-strict", "strict_grants = true")):
        db = make_db(grant_cluster, "gr_" + name.replace("-", "_"), unneeded)
        targets[name] = target_file(root, grant_cluster.dsn(db, "gr_dump"), extra=extra, name=name)
    targets["ghost"] = target_file(root, grant_cluster.dsn(make_db(grant_cluster, "gr_ghost_db")), "gr_ghost",
                                   name="ghost")
    night_cluster, backups = seed_night
    targets["seed-night"] = demo.write_target_file(root / "seed-night.toml",
                                                   night_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE), backups,
                                                   name="seed-night")
    # The target named "g", as every single-target run here used to be named.
    targets["g"] = target_file(root, "host=127.0.0.1 port=1 dbname=directus user=directus connect_timeout=2")
    return Grants(run_checks(root / "run", list(targets.values()), [CHECKS]), targets)


def test_healthy_target_passes_every_grant_check(grant_run: Grants) -> None:
    grant_run["healthy"].assert_outcomes(passed=7)
    assert "dump role: gr_dump" in grant_run.run.facts_line("healthy")  # run facts in the summary


def test_healthy_seed_database_passes_every_grant_check(grant_run: Grants) -> None:
    grant_run["seed"].assert_outcomes(passed=7)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_fails_its_check_naming_object_and_fix(grant_run: Grants, grant_cluster: ThrowawayCluster,
                                                     fault: str) -> None:
    _, check, expected = FAULTS[fault]
    result = grant_run[fault]
    result.assert_outcomes(passed=6, failed=1)
    assert result.failed() == {check}, f"{check} did not fail"
    for text in expected:
        assert text in result.text, f"{text!r} not in the output of fault {fault}"
    # The statements the audit names really repair the database.
    f = grant_run.targets[fault]
    db = "gr_" + fault.replace("-", "_")
    audit = grants.audit(load_target(f))
    with psycopg.connect(grant_cluster.dsn(db), autocommit=True) as conn:
        for c in (audit.schemas, audit.relations, audit.sequences, audit.default_privileges, audit.large_objects):
            for stmt in c.fixes:  # type: ignore[union-attr]
                conn.execute(stmt)
        for stmt in audit.role.fixes:
            conn.execute(stmt)
    assert grants_all_ok(grants.audit(load_target(f)))


def grants_all_ok(a: grants.GrantAudit) -> bool:
    return a.role.ok and all(c is not None and c.ok
                             for c in (a.schemas, a.relations, a.sequences, a.default_privileges, a.large_objects))


def test_excluded_schema_is_not_audited(grant_run: Grants) -> None:
    grant_run["excluded"].assert_outcomes(passed=7)
    audit = grants.audit(load_target(grant_run.targets["excluded"]))
    assert (audit.schemas.audited, audit.relations.audited) == (1, 1)  # type: ignore[union-attr]


def test_privileges_pg_dump_does_not_need_warn_or_fail_when_strict(grant_run: Grants) -> None:
    """SELECT on a view or a foreign table, USAGE on a sequence: pg_dump exits 0 without them."""
    grant_run["unneeded"].assert_outcomes(passed=7)
    strict = grant_run["unneeded-strict"]
    strict.assert_outcomes(passed=5, failed=2)
    assert strict.failed() == {"test_dump_role_can_select_every_relation", "test_dump_role_can_read_every_sequence"}
    for text in ("dump role reads every table: FAILED (2 of 7 relations unreadable by gr_dump vs 0 allowed); "
                 f"fix (as gr_owner or a superuser): GRANT SELECT ON TABLE {P}.manifests TO gr_dump; "
                 f"GRANT SELECT ON TABLE {P}.pilots TO gr_dump;",
                 f"view {P}.pilots (owner gr_owner) lacks SELECT (pg_dump only reads its definition)",
                 f"GRANT USAGE ON SEQUENCE {P}.ticket TO gr_dump;"):
        assert text in strict.text, text


def test_pg_read_all_data_member_covers_everything(grant_cluster: ThrowawayCluster, tmp_path: Path) -> None:
    db = make_db(grant_cluster, "gr_reader_db")
    audit = grants.audit(load_target(target_file(tmp_path, grant_cluster.dsn(db, "gr_reader"), "gr_reader")))
    assert audit.role.reads_all and grants_all_ok(audit)


def test_missing_dump_role_fails_every_check_never_silent(grant_run: Grants) -> None:
    grant_run["ghost"].assert_outcomes(passed=1, failed=6)  # only pg_dump's version does not need the role
    assert "fix: CREATE ROLE gr_ghost LOGIN;" in grant_run["ghost"].text


@pytest.mark.parametrize(("client", "expected"), [
    ("13.16", "local pg_dump not older than server: FAILED (pg_dump 13.16 vs server 15."),
    (None, "local pg_dump not older than server: FAILED (pg_dump not found on PATH vs server 15."),
])
def test_older_or_missing_local_pg_dump_fails(pytester: pytest.Pytester, grant_cluster: ThrowawayCluster,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              client: str | None, expected: str) -> None:
    # The only stand-in of this file: no older PostgreSQL client is installable here, so a
    # pg_dump that prints the exact version line of an old client comes first on PATH.
    shim = tmp_path / "client-bin"
    shim.mkdir()
    if client:
        (shim / "pg_dump").write_text(f"#!/bin/sh\necho 'pg_dump (PostgreSQL) {client} (Debian {client}-0+deb11u1)'\n")
        (shim / "pg_dump").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:/bin" if client else str(shim))
    db = make_db(grant_cluster, "gr_version")
    result = run_one(pytester, target_file(tmp_path, grant_cluster.dsn(db, "gr_dump")))
    result.assert_outcomes(passed=6, failed=1)
    assert expected in result.stdout.str()
    assert "fix: apt-get install postgresql-client-15" in result.stdout.str()


def test_audit_is_read_only_and_query_count_does_not_grow(grant_cluster: ThrowawayCluster, tmp_path: Path) -> None:
    small = make_db(grant_cluster, "gr_small")
    big = make_db(grant_cluster, "gr_big", "DO $$ BEGIN FOR i IN 1..300 LOOP "
                  "EXECUTE format('CREATE TABLE public.t%s (id int)', i); END LOOP; END $$")
    # Even a superuser's session through connect_readonly cannot write: the server refuses.
    t_super: Target = load_target(target_file(tmp_path, grant_cluster.dsn(big)))
    with connect_readonly(t_super) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("CREATE TABLE public.written_by_audit (id int)")
    a_small = grants.audit(load_target(target_file(tmp_path, grant_cluster.dsn(small, "gr_dump"))))
    a_big = grants.audit(t_super)
    assert a_small.read_only and a_big.read_only
    assert a_big.relations.audited == a_small.relations.audited + 300  # type: ignore[union-attr]
    assert a_big.queries == a_small.queries == 5
    assert not a_big.relations.ok  # the 300 new tables (no default privileges for postgres) lack SELECT
    assert "GRANT SELECT ON ALL TABLES IN SCHEMA public TO gr_dump;" in a_big.relations.fixes  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def seed_night(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThrowawayCluster, Path]]:
    """The seed's night on a private seed cluster (it mutates, so not the shared seed_cluster)."""
    d = tmp_path_factory.mktemp("seed-night")
    with ThrowawayCluster(tag="seed-night-") as c:
        demo.build_seed_database(c)
        demo.write_nightly_dumps(c, d, nights=2, fault="seed-night")
        yield c, d


def test_seed_night_end_to_end(grant_run: Grants, seed_night: tuple[ThrowawayCluster, Path]) -> None:
    cluster, backups = seed_night
    newest = max(backups.glob("directus_*.sql.gz"), key=lambda p: p.stat().st_mtime)
    assert newest.stat().st_size < 64 and gzip.decompress(newest.read_bytes()) == b""  # the 20-byte file
    dump = subprocess.run(["pg_dump", "-d", demo.DBNAME], env={**cluster.env(), "PGUSER": "directus"},
                          capture_output=True, text=True, check=False)
    assert dump.returncode != 0 and "permission denied for schema sandbox_tac" in dump.stderr
    result = grant_run["seed-night"]
    result.assert_outcomes(passed=6, failed=1)
    assert result.failed() == {"test_dump_role_has_usage_on_every_schema"}
    assert ("dump role USAGE on every schema: FAILED (1 of 3 schemas without USAGE for directus"
            " vs 0 allowed); fix (as workflow_admin or a superuser): "
            "GRANT USAGE ON SCHEMA sandbox_tac TO directus;\n"
            "  schema sandbox_tac (owner workflow_admin) lacks USAGE") in result.text
    # Running the named fix makes the real pg_dump succeed again.
    with psycopg.connect(cluster.dsn(demo.DBNAME), autocommit=True) as conn:
        conn.execute("GRANT USAGE ON SCHEMA sandbox_tac TO directus")
    again = subprocess.run(["pg_dump", "-d", demo.DBNAME], env={**cluster.env(), "PGUSER": "directus"},
                           capture_output=True, check=False)
    assert again.returncode == 0 and b"sandbox_tac" in again.stdout


def test_role_attribute_faults_name_the_alter_role(grant_cluster: ThrowawayCluster, tmp_path: Path) -> None:
    with psycopg.connect(grant_cluster.dsn(), autocommit=True) as conn:
        conn.execute('CREATE ROLE "Backup Bot" NOLOGIN; CREATE ROLE gr_expired LOGIN VALID UNTIL \'2000-01-01\'')
    db = make_db(grant_cluster, "gr_roles")
    bot = grants.audit(load_target(target_file(tmp_path, grant_cluster.dsn(db), "Backup Bot")))
    assert bot.role.fixes == ('ALTER ROLE "Backup Bot" LOGIN;',)
    expired = grants.audit(load_target(target_file(tmp_path, grant_cluster.dsn(db), "gr_expired")))
    assert expired.role.fixes == ("ALTER ROLE gr_expired VALID UNTIL 'infinity';",)


def test_unreachable_database_is_one_line_per_check(grant_run: Grants) -> None:
    result = grant_run["g"]
    result.assert_outcomes(errors=7)
    assert "database 127.0.0.1:1/directus as directus of target 'g' is unreachable" in result.text
    out = grant_run.run.stdout
    assert "Traceback" not in out and "another exception occurred" not in out


def test_schema_wide_revoke_gets_one_all_in_schema_fix_that_works(grant_cluster: ThrowawayCluster,
                                                                   tmp_path: Path) -> None:
    db = make_db(grant_cluster, "gr_all_revoked", f"REVOKE SELECT ON ALL TABLES IN SCHEMA {P} FROM gr_dump;"
                                                  f" REVOKE ALL ON ALL SEQUENCES IN SCHEMA {P} FROM gr_dump")
    t = load_target(target_file(tmp_path, grant_cluster.dsn(db, "gr_dump")))
    audit = grants.audit(t)
    assert audit.relations.fixes == (f"GRANT SELECT ON ALL TABLES IN SCHEMA {P} TO gr_dump;",)  # type: ignore[union-attr]
    assert {m.kind for m in audit.relations.missing} == {"table", "partitioned table"}  # type: ignore[union-attr]
    # Views, the matview and the foreign table lack SELECT too, which pg_dump never needs: a warning
    # whose fix the ALL TABLES grant already is.
    assert {m.kind for m in audit.relations.unneeded} == {"view", "materialized view", "foreign table"}  # type: ignore[union-attr]
    assert audit.relations.unneeded_fixes == ()  # type: ignore[union-attr]
    assert audit.sequences.fixes == (  # type: ignore[union-attr]
        f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA {P} TO gr_dump;",)
    with psycopg.connect(grant_cluster.dsn(db), autocommit=True) as conn:
        for stmt in audit.relations.fixes + audit.sequences.fixes:  # type: ignore[union-attr]
            conn.execute(stmt)
    assert grants_all_ok(grants.audit(t))


@pytest.mark.parametrize("cover", [
    # Global default privileges (no IN SCHEMA) cover every schema of that owner.
    "ALTER DEFAULT PRIVILEGES FOR ROLE gr_other GRANT SELECT ON TABLES TO gr_dump;"
    " ALTER DEFAULT PRIVILEGES FOR ROLE gr_other GRANT USAGE, SELECT ON SEQUENCES TO gr_dump",
    # Granted to a group role the dump role inherits from.
    "GRANT gr_readers TO gr_dump;"
    " ALTER DEFAULT PRIVILEGES FOR ROLE gr_other IN SCHEMA ops GRANT SELECT ON TABLES TO gr_readers;"
    " ALTER DEFAULT PRIVILEGES FOR ROLE gr_other IN SCHEMA ops GRANT USAGE, SELECT ON SEQUENCES TO gr_readers",
], ids=["global", "via-group-role"])
def test_default_privileges_count_global_and_inherited_grants(grant_cluster: ThrowawayCluster, tmp_path: Path,
                                                             cover: str) -> None:
    with psycopg.connect(grant_cluster.dsn(), autocommit=True) as conn:
        conn.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'gr_readers') THEN "
                     "CREATE ROLE gr_readers; END IF; END $$")
    sql, _, _ = FAULTS["other-owner-without-default-privileges"]
    db = make_db(grant_cluster, "gr_covered", f"{sql}; {cover}")
    audit = grants.audit(load_target(target_file(tmp_path, grant_cluster.dsn(db, "gr_dump"))))
    assert audit.default_privileges.audited == 4 and audit.default_privileges.ok  # type: ignore[union-attr]
    with psycopg.connect(grant_cluster.dsn(db), autocommit=True) as conn:
        conn.execute("REVOKE gr_readers FROM gr_dump")  # roles are cluster-wide: leave none behind


def test_dump_options_are_read_like_pg_dump_and_validated(tmp_path: Path) -> None:
    # pg_dump's own rule: large objects unless -B, or -n/-t/-s without -b; -s reads no data.
    assert grants.dump_job(()) == grants.DumpJob(large_objects=True, data=True, row_security=False)
    assert not grants.dump_job(("-Fc", "--no-blobs")).large_objects
    assert not grants.dump_job(('--schema="Pilot Area"',)).large_objects
    assert grants.dump_job(("-napp", "-b")).large_objects
    assert grants.dump_job(("--schema-only",)) == grants.DumpJob(False, False, False)
    assert grants.dump_job(("--exclude-table=x", "--exclude-schema=y")).large_objects  # excluding keeps them
    assert grants.dump_job(("--enable-row-security",)).row_security
    bad = target_file(tmp_path, "host=127.0.0.1 dbname=x user=y", extra='dump_options = ["-Fc", "no-blobs"]')
    with pytest.raises(ConfigError) as e:
        load_target(bad)
    assert str(e.value).endswith("[database].dump_options: 'no-blobs' is not an option; write an option's value "
                                 "attached to it, e.g. \"--schema=app\" or \"-napp\"")
