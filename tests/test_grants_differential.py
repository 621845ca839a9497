"""The grant audit predicts the real pg_dump: a matrix of privilege layouts, one dump role each,
in one real database; for every layout the real `pg_dump` runs as that role, and the audit fails
exactly when pg_dump exits non-zero, naming the object in the statement that fixes it. Running
the statements the audit names then makes the same pg_dump succeed.

Names hold spaces, quotes, dots, semicolons and unicode, the role's too. One database for the
module; a case's role is dropped (with every grant to it) and its object changes reverted after it.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from pgbackup_verify.config import load_target
from pgbackup_verify.facts import grants
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster

DB = "gd_matrix"
P, D, U = '"Pilot Area"', '"dot.ted ""quoted"""', '"ünïcode ✈"'
EMPTY, VIEWS, LEFT_OUT, EXT = '"empty zone"', '"only views"', '"left.out"', '"ext stuff"'
SECRET, OWN = f'{D}."secret; rows"', '"mine ✓"'

# Everything a healthy dump needs, in the shapes pg_dump treats differently: a partition tree, an
# inheritance tree, a table with row-level security (off until a case enables it) and a
# partitioned table with it on (pg_dump COPYs the partition, which has none), serial and identity
# sequences, a large object, views, a matview, a foreign table, and an extension with one
# configuration table (pg_dump dumps its rows) and one internal table (pg_dump skips it).
SETUP = f'''
CREATE ROLE gd_owner LOGIN;
CREATE SCHEMA {P} AUTHORIZATION gd_owner;
CREATE SCHEMA {D} AUTHORIZATION gd_owner;
CREATE SCHEMA {U} AUTHORIZATION gd_owner;
CREATE SCHEMA {EMPTY} AUTHORIZATION gd_owner;
CREATE SCHEMA {VIEWS} AUTHORIZATION gd_owner;
CREATE SCHEMA {LEFT_OUT} AUTHORIZATION gd_owner;
CREATE SCHEMA {EXT};
SET ROLE gd_owner;
CREATE TABLE {P}.flights (id bigserial PRIMARY KEY, pilot text);
INSERT INTO {P}.flights (pilot) VALUES ('ann');
CREATE TABLE {P}."log.book" (day date, n int) PARTITION BY RANGE (day);
CREATE TABLE {P}."log.book 2026" PARTITION OF {P}."log.book" FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO {P}."log.book" VALUES ('2026-05-01', 1);
CREATE TABLE {P}.fleet (tail text);
CREATE TABLE {P}."fleet ""jets""" (engines int) INHERITS ({P}.fleet);
INSERT INTO {P}."fleet ""jets""" VALUES ('D-ABC', 2);
CREATE TABLE {SECRET} (who text, v int);
INSERT INTO {SECRET} VALUES ('a', 1);
CREATE POLICY own ON {SECRET} USING (who = current_user);
CREATE TABLE {D}."ruled by parent" (k int) PARTITION BY LIST (k);
CREATE TABLE {D}."ruled part" PARTITION OF {D}."ruled by parent" FOR VALUES IN (1);
ALTER TABLE {D}."ruled by parent" ENABLE ROW LEVEL SECURITY;
CREATE TABLE {U}."tëst" (id int GENERATED ALWAYS AS IDENTITY, v text);
CREATE SEQUENCE {U}."tick.et";
CREATE VIEW {U}.pilots AS SELECT DISTINCT pilot FROM {P}.flights;
CREATE MATERIALIZED VIEW {U}.daily AS SELECT count(*) AS n FROM {P}.flights;
CREATE VIEW {VIEWS}."v 1" AS SELECT 1 AS x;
CREATE TABLE {LEFT_OUT}.hidden (x int);
SELECT lo_from_bytea(0, 'blob');
RESET ROLE;
CREATE EXTENSION file_fdw;
CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
CREATE FOREIGN TABLE {U}.manifests (line text) SERVER files OPTIONS (filename '/dev/null');
ALTER FOREIGN TABLE {U}.manifests OWNER TO gd_owner;
CREATE TABLE {EXT}."config rows" (k text);
CREATE TABLE {EXT}."internal rows" (k text);
INSERT INTO {EXT}."config rows" VALUES ('c');
ALTER EXTENSION file_fdw ADD TABLE {EXT}."config rows";
ALTER EXTENSION file_fdw ADD TABLE {EXT}."internal rows";
-- What pg_extension_config_dump() records when an extension script marks a table (it may only
-- be called from one, and no packaged extension here has a configuration table).
UPDATE pg_extension SET extconfig = ARRAY['{EXT}."config rows"'::regclass::oid], extcondition = ARRAY['']
WHERE extname = 'file_fdw';
'''

# The healthy layout for a dump role {r}: every schema but the excluded one, every table and
# sequence, the large object, BYPASSRLS for the row-level security cases.
HEALTHY = f"""
GRANT USAGE ON SCHEMA {P}, {D}, {U}, {EMPTY}, {VIEWS}, {EXT} TO {{r}};
GRANT SELECT ON ALL TABLES IN SCHEMA {P}, {D}, {U}, {VIEWS}, {EXT} TO {{r}};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {P}, {U} TO {{r}};
GRANT SELECT ON LARGE OBJECT {{lo}} TO {{r}};
"""

RLS_ON = f"ALTER TABLE {SECRET} ENABLE ROW LEVEL SECURITY"
RLS_OFF = f"ALTER TABLE {SECRET} DISABLE ROW LEVEL SECURITY, NO FORCE ROW LEVEL SECURITY"


@dataclass(frozen=True)
class Case:
    sql: str = ""  # run as superuser after the layout; {r} the dump role, {lo} the large object
    fixes: tuple[str, ...] = ()  # statements the audit must name (pg_dump must then fail)
    healthy: bool = True  # start from HEALTHY (else the role has no privilege at all)
    revert: str = ""  # undoes object changes of `sql` (the role's grants go with the role)
    options: tuple[str, ...] = ()  # [database].dump_options, passed to pg_dump too
    exclude: tuple[str, ...] = ("left.out",)  # [database].exclude_schemas, passed as --exclude-schema
    unneeded: tuple[str, ...] = ()  # objects the audit must list as not needed by pg_dump (a warning)


def grant(kind: str, obj: str) -> str:
    return f"GRANT {kind} ON {obj} TO {{r}};"


CASES: dict[str, Case] = {
    "healthy": Case(unneeded=()),
    "schema without USAGE": Case(f"REVOKE USAGE ON SCHEMA {P} FROM {{r}}", (grant("USAGE", f"SCHEMA {P}"),)),
    "empty schema without USAGE": Case(f"REVOKE USAGE ON SCHEMA {EMPTY} FROM {{r}}", unneeded=(EMPTY,)),
    "views-only schema without USAGE": Case(f"REVOKE USAGE ON SCHEMA {VIEWS} FROM {{r}}", unneeded=(VIEWS,)),
    "table without SELECT": Case(f"REVOKE SELECT ON {P}.flights FROM {{r}}", (grant("SELECT", f"TABLE {P}.flights"),)),
    "column-level SELECT only": Case(f"REVOKE SELECT ON {P}.flights FROM {{r}}; "
                                     f"GRANT SELECT (id, pilot) ON {P}.flights TO {{r}}",
                                     (grant("SELECT", f"TABLE {P}.flights"),)),
    "partitioned parent without SELECT": Case(f'REVOKE SELECT ON {P}."log.book" FROM {{r}}',
                                              (grant("SELECT", f'TABLE {P}."log.book"'),)),
    "partition without SELECT": Case(f'REVOKE SELECT ON {P}."log.book 2026" FROM {{r}}',
                                     (grant("SELECT", f'TABLE {P}."log.book 2026"'),)),
    "inheritance child without SELECT": Case(f'REVOKE SELECT ON {P}."fleet ""jets""" FROM {{r}}',
                                             (grant("SELECT", f'TABLE {P}."fleet ""jets"""'),)),
    "inheritance parent without SELECT": Case(f"REVOKE SELECT ON {P}.fleet FROM {{r}}",
                                              (grant("SELECT", f"TABLE {P}.fleet"),)),
    "view without SELECT": Case(f"REVOKE SELECT ON {U}.pilots FROM {{r}}", unneeded=(f"{U}.pilots",)),
    "matview without SELECT": Case(f"REVOKE SELECT ON {U}.daily FROM {{r}}", unneeded=(f"{U}.daily",)),
    "foreign table without SELECT": Case(f"REVOKE SELECT ON {U}.manifests FROM {{r}}",
                                         unneeded=(f"{U}.manifests",)),
    "sequence without SELECT": Case(f'REVOKE SELECT ON SEQUENCE {U}."tick.et" FROM {{r}}',
                                    (grant("SELECT", f'SEQUENCE {U}."tick.et"'),)),
    "sequence without USAGE": Case(f'REVOKE USAGE ON SEQUENCE {U}."tick.et" FROM {{r}}',
                                   unneeded=(f'{U}."tick.et"',)),
    "identity sequence without SELECT": Case(f'REVOKE SELECT ON SEQUENCE {U}."tëst_id_seq" FROM {{r}}',
                                             (grant("SELECT", f'SEQUENCE {U}."tëst_id_seq"'),)),
    "large object without SELECT": Case("REVOKE SELECT ON LARGE OBJECT {lo} FROM {r}",
                                        ("GRANT SELECT ON LARGE OBJECT {lo} TO {r};",)),
    "seven large objects without SELECT": Case(
        "SET ROLE gd_owner; SELECT lo_create(0) FROM generate_series(1, 7); RESET ROLE",
        # No GRANT ... ON ALL LARGE OBJECTS exists: past five, one loop for the owner's objects.
        # Roles named by oid only: the body holds no name from the database (tests/test_paste_fixes.py).
        ("DO $pgbv$DECLARE o oid; r name := (SELECT rolname FROM pg_roles WHERE oid = {role_oid}); BEGIN FOR o IN "
         "SELECT oid FROM pg_largeobject_metadata WHERE lomowner = {owner_oid} LOOP EXECUTE format('GRANT SELECT ON "
         "LARGE OBJECT %s TO %I', o, r); END LOOP; END$pgbv$;",),
        revert="SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid <> {lo}"),
    "large object without SELECT, lo_compat_privileges on": Case(
        f"ALTER DATABASE {DB} SET lo_compat_privileges = on; REVOKE SELECT ON LARGE OBJECT {{lo}} FROM {{r}}",
        revert=f"ALTER DATABASE {DB} RESET lo_compat_privileges"),
    "large object without SELECT, --schema-only": Case("REVOKE SELECT ON LARGE OBJECT {lo} FROM {r}",
                                                       options=("-s",)),
    "large object without SELECT, --no-blobs": Case("REVOKE SELECT ON LARGE OBJECT {lo} FROM {r}",
                                                    options=("--no-blobs",)),
    "large object without SELECT, --schema=\"Pilot Area\"": Case("REVOKE SELECT ON LARGE OBJECT {lo} FROM {r}",
                                                       options=('--schema="Pilot Area"',)),
    "row-level security, not owner": Case(RLS_ON, ("ALTER ROLE {r} BYPASSRLS;",), revert=RLS_OFF),
    "row-level security, BYPASSRLS": Case(f"{RLS_ON}; ALTER ROLE {{r}} BYPASSRLS", revert=RLS_OFF),
    "row-level security, owner's member": Case(f"{RLS_ON}; GRANT gd_owner TO {{r}}", revert=RLS_OFF),
    "row-level security FORCEd, owner's member": Case(f"{RLS_ON}; ALTER TABLE {SECRET} FORCE ROW LEVEL SECURITY;"
                                                      " GRANT gd_owner TO {r}", ("ALTER ROLE {r} BYPASSRLS;",),
                                                      revert=RLS_OFF),
    "row-level security, --enable-row-security": Case(RLS_ON, revert=RLS_OFF, options=("--enable-row-security",),
                                                      unneeded=(SECRET,)),
    "row-level security, --schema-only": Case(RLS_ON, revert=RLS_OFF, options=("--schema-only",)),
    "sequence without SELECT, --schema-only": Case(f'REVOKE SELECT ON SEQUENCE {U}."tick.et" FROM {{r}}',
                                                   options=("--schema-only",)),
    "table without SELECT, --schema-only": Case(f"REVOKE SELECT ON {P}.flights FROM {{r}}",
                                                (grant("SELECT", f"TABLE {P}.flights"),), options=("-s",)),
    "excluded schema, nothing granted": Case(),
    "excluded schema not excluded": Case(exclude=(), fixes=(grant("USAGE", f"SCHEMA {LEFT_OUT}"),
                                                            grant("SELECT", f"TABLE {LEFT_OUT}.hidden"))),
    "extension config table without SELECT": Case(f'REVOKE SELECT ON {EXT}."config rows" FROM {{r}}',
                                                  (grant("SELECT", f'TABLE {EXT}."config rows"'),)),
    "extension internal table without SELECT": Case(f'REVOKE SELECT ON {EXT}."internal rows" FROM {{r}}'),
    "schema owned by the role": Case(f"CREATE SCHEMA {OWN} AUTHORIZATION {{r}}; CREATE TABLE {OWN}.t (x int);"
                                     f" ALTER TABLE {OWN}.t OWNER TO gd_owner; GRANT SELECT ON {OWN}.t TO {{r}}",
                                     revert=f"DROP SCHEMA IF EXISTS {OWN} CASCADE"),
    "schema owned by the role, its table without SELECT": Case(
        f"CREATE SCHEMA {OWN} AUTHORIZATION {{r}}; CREATE TABLE {OWN}.t (x int); ALTER TABLE {OWN}.t OWNER TO gd_owner",
        (grant("SELECT", f"TABLE {OWN}.t"),), revert=f"DROP SCHEMA IF EXISTS {OWN} CASCADE"),
    "superuser, nothing granted": Case("ALTER ROLE {r} SUPERUSER", healthy=False),
    "pg_read_all_data": Case("GRANT pg_read_all_data TO {r}", ("GRANT SELECT ON LARGE OBJECT {lo} TO {r};",),
                             healthy=False),
    "pg_read_all_data, --no-blobs": Case("GRANT pg_read_all_data TO {r}", healthy=False, options=("-B",)),
    "pg_read_all_data, --no-blobs, row-level security": Case(f"GRANT pg_read_all_data TO {{r}}; {RLS_ON}",
                                                             ("ALTER ROLE {r} BYPASSRLS;",), healthy=False,
                                                             options=("-B",), revert=RLS_OFF),
    "no USAGE, large object and row-level security together": Case(
        f"REVOKE USAGE ON SCHEMA {D} FROM {{r}}; REVOKE SELECT ON LARGE OBJECT {{lo}} FROM {{r}}; {RLS_ON}",
        (grant("USAGE", f"SCHEMA {D}"), "GRANT SELECT ON LARGE OBJECT {lo} TO {r};", "ALTER ROLE {r} BYPASSRLS;"),
        revert=RLS_OFF),
    "partition, sequence and extension config table together": Case(
        f'REVOKE SELECT ON {P}."log.book 2026", {EXT}."config rows" FROM {{r}};'
        f' REVOKE SELECT ON SEQUENCE {P}.flights_id_seq FROM {{r}}',
        (grant("SELECT", f'TABLE {P}."log.book 2026"'), grant("SELECT", f'TABLE {EXT}."config rows"'),
         grant("SELECT", f"SEQUENCE {P}.flights_id_seq"))),
    "every unneeded privilege missing together": Case(
        f"REVOKE SELECT ON {U}.pilots, {U}.daily, {U}.manifests FROM {{r}};"
        f' REVOKE USAGE ON SEQUENCE {U}."tick.et", {P}.flights_id_seq FROM {{r}};'
        f" REVOKE USAGE ON SCHEMA {EMPTY}, {VIEWS} FROM {{r}}",
        unneeded=(f"{U}.pilots", f"{U}.daily", f"{U}.manifests", f'{U}."tick.et"', EMPTY, VIEWS)),
    "nothing granted": Case(healthy=False, fixes=(grant("USAGE", f"SCHEMA {P}"),
                                                  grant("SELECT", f"ALL TABLES IN SCHEMA {P}"),
                                                  "GRANT SELECT ON LARGE OBJECT {lo} TO {r};")),
}


def pattern(schema: str) -> str:
    """A pg_dump --exclude-schema pattern matching exactly this name (quoted: dots stay dots)."""
    return '"' + schema.replace('"', '""') + '"'


@dataclass
class Matrix:
    cluster: ThrowawayCluster
    lo: int
    root: Path
    # GRANTs on one object from two sessions at once fail ("tuple concurrently updated"):
    # cases lay out and revert one at a time; only pg_dump and the audit run side by side.
    ddl: threading.Lock = field(default_factory=threading.Lock)

    def sql(self, text: str, role: str) -> None:
        if text.strip("; "):
            with self.ddl, psycopg.connect(self.cluster.dsn(DB), autocommit=True) as conn:
                conn.execute(text.format(r=role, lo=self.lo))

    def oid(self, role: str) -> int:
        with psycopg.connect(self.cluster.dsn(DB), autocommit=True) as conn:
            return int(conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (role,)).fetchone()[0])  # type: ignore[index]

    def pg_dump(self, name: str, case: Case) -> subprocess.CompletedProcess[str]:
        args = ["pg_dump", "-d", DB, "-U", name, "-f", "/dev/null",
                *[f"--exclude-schema={pattern(s)}" for s in case.exclude], *case.options]
        return subprocess.run(args, env=self.cluster.env(), capture_output=True, text=True, timeout=120, check=False)

    def audit(self, name: str, case: Case) -> grants.GrantAudit:
        f = self.root / f"{abs(hash(name))}.toml"
        f.write_text(f"[database]\ndsn = {json.dumps(self.cluster.dsn(DB))}\ndump_role = {json.dumps(name)}\n"
                     f"exclude_schemas = {json.dumps(list(case.exclude))}\n"
                     f"dump_options = {json.dumps(list(case.options))}\n"
                     f"[backups]\ndirectory = {json.dumps(str(self.root))}\n")
        return grants.audit(load_target(f))


@pytest.fixture(scope="module")
def matrix(cluster: ThrowawayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DB}")
    with psycopg.connect(cluster.dsn(DB), autocommit=True) as conn:
        conn.execute(SETUP)
        lo = conn.execute("SELECT max(oid)::bigint FROM pg_largeobject_metadata").fetchone()[0]  # type: ignore[index]
    yield Matrix(cluster, lo, tmp_path_factory.mktemp("grants-differential"))
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {DB}")
        conn.execute("DROP ROLE gd_owner")  # roles are cluster-wide: leave none behind


def all_fixes(audit: grants.GrantAudit) -> tuple[str, ...]:
    return audit.role.fixes + tuple(s for c in audit.tonight if c is not None for s in c.fixes)


def unneeded(audit: grants.GrantAudit) -> set[str]:
    return {m.ident for c in audit.tonight if c is not None for m in c.unneeded}


@dataclass
class Outcome:
    dump: subprocess.CompletedProcess[str]
    audit: grants.GrantAudit
    role: str  # quoted
    role_oid: int = 0
    repaired: subprocess.CompletedProcess[str] | None = None  # pg_dump after running the audit's fixes
    repaired_audit: grants.GrantAudit | None = None


def run_case(matrix: Matrix, layout: str) -> Outcome:
    """Lay the case out for its own role, dump and audit; when pg_dump failed, run the audit's
    fixes and both again. Everything the case changed is undone, whatever happens."""
    case = CASES[layout]
    name = f'gd.case {list(CASES).index(layout)} "ü"'  # the role's own name needs quoting too
    role = '"' + name.replace('"', '""') + '"'
    matrix.sql(f"CREATE ROLE {role} LOGIN", role)
    try:
        if case.healthy:
            matrix.sql(HEALTHY, role)
        matrix.sql(case.sql, role)
        out = Outcome(matrix.pg_dump(name, case), matrix.audit(name, case), role, matrix.oid(name))
        if out.dump.returncode != 0:
            with matrix.ddl, psycopg.connect(matrix.cluster.dsn(DB), autocommit=True) as conn:
                for stmt in all_fixes(out.audit):
                    conn.execute(stmt)
            out.repaired, out.repaired_audit = matrix.pg_dump(name, case), matrix.audit(name, case)
        return out
    finally:
        matrix.sql(f"{case.revert}; DROP OWNED BY {role} CASCADE; DROP ROLE {role}", role)


@pytest.fixture(scope="module")
def outcomes(matrix: Matrix) -> dict[str, Outcome | BaseException]:
    """Every case's outcome. Cases that only change their own role's privileges run side by side
    (pg_dump is the slow part); cases that change shared objects run alone afterwards."""
    results: dict[str, Outcome | BaseException] = {}

    def run(layout: str) -> None:
        try:
            results[layout] = run_case(matrix, layout)
        except Exception as e:  # reported by that case's test, not as an error of every case
            results[layout] = e

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(run, [k for k, c in CASES.items() if not c.revert]))
    for layout in [k for k, c in CASES.items() if c.revert]:
        run(layout)
    return results


@pytest.mark.parametrize("layout", list(CASES))
def test_audit_fails_exactly_when_pg_dump_fails(outcomes: dict[str, Outcome | BaseException], matrix: Matrix,
                                                layout: str) -> None:
    case, out = CASES[layout], outcomes[layout]
    if isinstance(out, BaseException):
        raise out
    dump, audit = out.dump, out.audit
    print(f"{layout}: pg_dump exit {dump.returncode}; audit {'FAILS' if audit.predicts_failure else 'passes'}")
    assert audit.predicts_failure == (dump.returncode != 0), (
        f"audit {'fails' if audit.predicts_failure else 'passes'} but pg_dump exit {dump.returncode}: "
        f"{dump.stderr.strip()[-400:]}; audit fixes {all_fixes(audit)}")
    # The layout does what it claims: pg_dump fails exactly in the cases that name a fix.
    assert (dump.returncode != 0) == bool(case.fixes), dump.stderr
    expected = [s.format(r=out.role, lo=matrix.lo, role_oid=out.role_oid, owner_oid=matrix.oid("gd_owner"))
                for s in case.fixes]
    assert set(expected) <= set(all_fixes(audit)), f"{expected} not all in {all_fixes(audit)}"
    assert set(case.unneeded) <= unneeded(audit), f"{case.unneeded} not all in {unneeded(audit)}"
    if case.healthy and not case.unneeded:
        assert not unneeded(audit), unneeded(audit)
    if dump.returncode != 0:
        # The statements the audit names are the whole repair.
        assert out.repaired is not None and out.repaired_audit is not None
        assert out.repaired.returncode == 0, out.repaired.stderr
        assert not out.repaired_audit.predicts_failure
