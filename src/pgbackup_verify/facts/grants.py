"""The Phase C permission guard, generalized: can the dump role read everything pg_dump reads?

`audit(target)` runs one catalog query per concern (see grants_sql) in one read-only
transaction and returns frozen facts. Every missing object carries its quoted identifier
and the exact statement that fixes it; the checks only phrase the verdict.

`Concern.missing` is what makes tonight's pg_dump fail (the model is proven against the real
pg_dump by tests/test_grants_differential.py); `Concern.unneeded` is what a role usually gets
too but pg_dump never reads (a warning, a failure under [database].strict_grants).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg

from pgbackup_verify.config import Target
from pgbackup_verify.facts import childenv, grants_sql
from pgbackup_verify.facts.db import connect_readonly
from pgbackup_verify.facts.redact import CONTROL_CHARS

RELKINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table"}
# Up to this many missing objects in a schema get one GRANT each; more (or all) get one
# `... ON ALL TABLES IN SCHEMA` statement, which is what the dump role needs anyway.
PER_OBJECT_FIXES = 5


@dataclass(frozen=True)
class RoleFacts:
    name: str  # as given in the target
    ident: str  # quoted for SQL
    exists: bool
    can_login: bool
    superuser: bool
    bypassrls: bool  # the role's own attribute: it is never inherited from a group role
    expired: bool  # VALID UNTIL lies in the past: password logins fail
    reads_all: bool  # member of pg_read_all_data (PG14+): SELECT/USAGE everywhere
    can_connect: bool  # CONNECT privilege on the database
    database: str
    fixes: tuple[str, ...]  # what makes the role able to connect; empty when it can

    @property
    def ok(self) -> bool:
        return not self.fixes


@dataclass(frozen=True)
class Missing:
    kind: str  # schema, table, view, ..., sequence, large object, default privileges
    ident: str  # e.g. "Pilot Area".pilots, or `FOR ROLE x IN SCHEMA y ON TABLES` for default privileges
    owner: str  # quoted role that owns it (may run the fix, as may a superuser)
    privileges: tuple[str, ...]  # the ones the dump role lacks, each tested on its own
    fix: str  # the exact statement for this object alone
    why: str = ""  # what in pg_dump needs it, when the privilege alone does not say
    superuser_fix: bool = False  # only a superuser can run `fix` (ALTER ROLE ... BYPASSRLS)


@dataclass(frozen=True)
class Concern:
    audited: int  # objects (or owner x schema x {tables, sequences} default ACLs) looked at
    missing: tuple[Missing, ...]  # what makes pg_dump fail (for default privileges: fail later)
    fixes: tuple[str, ...]  # shortest exact set of statements that fixes all of `missing`
    unneeded: tuple[Missing, ...] = ()  # lacking, but pg_dump does not read it
    unneeded_fixes: tuple[str, ...] = ()
    unlisted: int = 0  # more objects in `missing` than listed (large objects: LO_LISTED per owner)

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def missing_count(self) -> int:
        return len(self.missing) + self.unlisted


@dataclass(frozen=True)
class DumpJob:
    """What the nightly pg_dump reads, from [database].dump_options (pg_dump's own rules)."""

    large_objects: bool  # by default unless -B, or -n/-t/-s without -b
    data: bool  # not --schema-only: sequences' state, rows and large objects are read
    row_security: bool  # --enable-row-security: policies filter rows instead of stopping pg_dump


SELECTS_PART = re.compile(r"^(-[nt]|--(schema|table)(=|$))")


def dump_job(options: tuple[str, ...] = ()) -> DumpJob:
    opts = set(options)
    schema_only = bool(opts & {"-s", "--schema-only"})
    partial = any(SELECTS_PART.match(o) for o in options)
    blobs_on = bool(opts & {"-b", "--blobs", "--large-objects"})
    blobs_off = bool(opts & {"-B", "--no-blobs", "--no-large-objects"})
    large_objects = not schema_only and not blobs_off and (blobs_on or not partial)
    return DumpJob(large_objects, not schema_only, "--enable-row-security" in opts)


@dataclass(frozen=True)
class PgDumpVersion:
    path: str | None  # the pg_dump found on PATH, None when there is none
    local: str  # its version, e.g. 15.20
    local_major: tuple[int, ...]
    server: str
    server_major: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return self.path is not None and self.local_major >= self.server_major

    @property
    def fix(self) -> str:
        major = ".".join(map(str, self.server_major))
        return f"apt-get install postgresql-client-{major} and run its pg_dump (or a newer one)"


@dataclass(frozen=True)
class GrantAudit:
    role: RoleFacts
    server_version: str
    read_only: bool  # transaction_read_only as the server reported it during the audit
    schemas: Concern | None  # None when the role does not exist: nothing can be audited
    relations: Concern | None  # SELECT and row-level security
    sequences: Concern | None
    default_privileges: Concern | None
    pg_dump: PgDumpVersion
    queries: int  # catalog statements issued, independent of the object count
    seconds: float  # wall time including connect
    large_objects: Concern | None = None
    job: DumpJob = DumpJob(True, True, False)
    lo_compat_privileges: bool = False  # the server skips large-object privilege checks

    @property
    def tonight(self) -> tuple[Concern | None, ...]:
        """The concerns that predict whether tonight's pg_dump exits 0 (not default privileges)."""
        return self.schemas, self.relations, self.sequences, self.large_objects

    @property
    def predicts_failure(self) -> bool:
        return not self.role.ok or any(c is None or not c.ok for c in self.tonight)

    @property
    def findings(self) -> int:
        """Objects pg_dump needs a privilege on that the role lacks (default privileges too), plus one for a
        role that cannot log in or connect: the figure the metrics and the history keep."""
        concerns = (*self.tonight, self.default_privileges)
        return int(not self.role.ok) + sum(c.missing_count for c in concerns if c is not None)


def major_of(version_num: int) -> tuple[int, ...]:
    """server_version_num -> major: 150020 -> (15,), 90624 -> (9, 6)."""
    return (version_num // 10000,) if version_num >= 100000 else (version_num // 10000, version_num // 100 % 100)


def pg_dump_version_output() -> tuple[str | None, str]:
    """(path, `pg_dump --version` output) of the pg_dump on PATH, the one the nightly job runs."""
    path = shutil.which("pg_dump")
    if not path:
        return None, ""
    return path, subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False,
                                env=childenv.plain()).stdout


def local_pg_dump(server: str, server_num: int, found: tuple[str | None, str] | None = None) -> PgDumpVersion:
    path, out = found or pg_dump_version_output()
    local = "not found on PATH"
    major: tuple[int, ...] = ()
    if path:
        m = re.search(r"\)\s*(\d+)(?:\.(\d+))?", out)
        if m:
            first, second = int(m[1]), int(m[2] or 0)
            local, major = m[0].lstrip(") \t"), ((first,) if first >= 10 else (first, second))
        else:
            local = f"unreadable version output {out.strip()[:60]!r}"
    return PgDumpVersion(path, local, major, server, major_of(server_num))


def sql_ident(quoted: str) -> str:
    """A name as quote_ident() spelled it, or, when it holds a terminal control character (which the
    console shows as an escape, so a pasted fix would name another object), the same identifier in
    PostgreSQL's Unicode-escape form `U&"\\001b[2J"`: printable, and still exactly that object."""
    if not CONTROL_CHARS.search(quoted):
        return quoted
    body = quoted[1:-1] if quoted.startswith('"') else quoted  # quote_ident quotes such a name anyway
    body = CONTROL_CHARS.sub(lambda m: f"\\{ord(m[0]):04x}", body.replace("\\", "\\\\"))
    return f'U&"{body}"'


def _role(row: tuple[Any, ...], name: str) -> RoleFacts:
    exists, login, superuser, expired, reads_all, connect, db, db_q, role_q = row[:9]
    db_q, role_q = sql_ident(db_q), sql_ident(role_q)
    fixes: list[str] = []
    if not exists:
        fixes.append(f"CREATE ROLE {role_q} LOGIN;")
    else:
        if not login:
            fixes.append(f"ALTER ROLE {role_q} LOGIN;")
        if expired:
            fixes.append(f"ALTER ROLE {role_q} VALID UNTIL 'infinity';")
    if exists and not connect and not superuser:  # a new role gets CONNECT via PUBLIC unless revoked
        fixes.append(f"GRANT CONNECT ON DATABASE {db_q} TO {role_q};")
    return RoleFacts(name=name, ident=role_q, exists=exists, can_login=login, superuser=superuser,
                     bypassrls=row[12], expired=expired, reads_all=reads_all, can_connect=connect, database=db,
                     fixes=tuple(fixes))


def _schemas(row: tuple[Any, ...], role: str) -> Concern:
    total, missing = row
    items = [Missing("schema", s, owner, ("USAGE",), f"GRANT USAGE ON SCHEMA {s} TO {role};",
                     "" if reads else "holds no table or sequence pg_dump reads")
             for s, owner, reads in ((sql_ident(s), sql_ident(o), r) for s, o, r in missing)]
    needed = tuple(m for (_, _, reads), m in zip(missing, items, strict=True) if reads)
    unneeded = tuple(m for m in items if m not in needed)
    return Concern(total, needed, tuple(m.fix for m in needed), unneeded, tuple(m.fix for m in unneeded))


def _grouped_fixes(mine: list[Missing], lacking: int, total: int, all_fix: str) -> list[str]:
    """One GRANT per object (naming it), or one `... ON ALL ... IN SCHEMA` when that is shorter or
    when several objects need it and every object of the schema (`lacking` of `total`) lacks it."""
    if len(mine) > PER_OBJECT_FIXES or (1 < len(mine) and lacking == total):
        return [all_fix]
    return [m.fix for m in mine]


def _split(rows: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The one pass over pg_class -> (schema, count, problems) rows of relations and of sequences."""
    relations, sequences = [], []
    for schema, n_rel, n_seq, problems in rows:
        schema = sql_ident(schema)
        problems = sorted([sql_ident(p[0]), p[1], sql_ident(p[2]), *p[3:]] for p in problems)
        relations.append((schema, n_rel, [(name, kind, owner, sel, rls, forced)
                                          for name, kind, owner, sel, _, rls, forced in problems if kind != "S"]))
        sequences.append((schema, n_seq, [(name, usage, sel, owner)
                                          for name, kind, owner, sel, usage, _, _ in problems if kind == "S"]))
    return relations, sequences


READ_BY_PG_DUMP = ("r", "p")  # locked and COPYed; views, matviews and foreign tables only described


def _relations(rows: list[tuple[Any, ...]], role: str, job: DumpJob) -> Concern:
    needed: list[Missing] = []
    unneeded: list[Missing] = []
    fixes: list[str] = []
    unneeded_fixes: list[str] = []
    rls: list[Missing] = []
    for schema, total, missing in sorted(rows):
        mine: list[Missing] = []
        other: list[Missing] = []
        for name, kind, owner, select, blocked, forced in missing:
            ident = f"{schema}.{name}"
            if not select:
                m = Missing(RELKINDS[kind], ident, owner, ("SELECT",), f"GRANT SELECT ON TABLE {ident} TO {role};",
                            "" if kind in READ_BY_PG_DUMP else "pg_dump only reads its definition")
                (mine if kind in READ_BY_PG_DUMP else other).append(m)
            if blocked:
                why = ("FORCE ROW LEVEL SECURITY applies to its owner too" if forced else
                       f"row-level security, not owned by {role}") + "; pg_dump runs with row_security = off"
                m = Missing(RELKINDS[kind], ident, owner, ("BYPASSRLS",), f"ALTER ROLE {role} BYPASSRLS;",
                            why, superuser_fix=True)
                if job.data:  # with --enable-row-security pg_dump exits 0 but writes only the rows policies show
                    (unneeded if job.row_security else rls).append(m)
        needed += mine
        unneeded += other
        grouped = _grouped_fixes(mine, len(mine) + len(other), total,
                                 f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role};")
        fixes += grouped
        if len(grouped) == len(mine):  # else the ALL TABLES grant covers the views too
            unneeded_fixes += [m.fix for m in other]
    needed += rls
    if rls:
        fixes.append(rls[0].fix)
    unneeded_fixes += sorted({m.fix for m in unneeded if m.superuser_fix})
    return Concern(sum(r[1] for r in rows), tuple(needed), tuple(fixes), tuple(unneeded), tuple(unneeded_fixes))


def _sequences(rows: list[tuple[Any, ...]], role: str, job: DumpJob) -> Concern:
    """SELECT is what pg_dump reads a sequence's state with; USAGE it never needs."""
    needed: list[Missing] = []
    unneeded: list[Missing] = []
    fixes: list[str] = []
    unneeded_fixes: list[str] = []
    for schema, total, missing in sorted(rows):
        mine: list[Missing] = []
        other: list[Missing] = []
        for name, usage, select, owner in missing:
            ident = f"{schema}.{name}"
            if not select and job.data:  # --schema-only reads no sequence's state
                mine.append(Missing("sequence", ident, owner, ("SELECT",),
                                    f"GRANT SELECT ON SEQUENCE {ident} TO {role};"))
            if not usage:
                other.append(Missing("sequence", ident, owner, ("USAGE",),
                                     f"GRANT USAGE ON SEQUENCE {ident} TO {role};", "pg_dump never calls nextval"))
        needed += mine
        unneeded += other
        fixes += _grouped_fixes(mine, len(mine), total, f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role};")
        unneeded_fixes += [m.fix for m in other]
    return Concern(sum(r[1] for r in rows), tuple(needed), tuple(fixes), tuple(unneeded), tuple(unneeded_fixes))


def _lo_loop(owner_oid: int, role_oid: int) -> str:
    """No `GRANT ... ON ALL LARGE OBJECTS` exists: a DO loop grants each of the owner's objects.

    The admin pastes it into psql as a superuser, so its body holds no text from the database:
    both roles are named by oid, and the grantee's name reaches the GRANT only through format's %I
    of pg_roles.rolname (a role named `$pgbv$;ALTER ROLE app SUPERUSER;--` stays a name)."""
    return (f"DO $pgbv$DECLARE o oid; r name := (SELECT rolname FROM pg_roles WHERE oid = {int(role_oid)}); "
            f"BEGIN FOR o IN SELECT oid FROM pg_largeobject_metadata WHERE lomowner = {int(owner_oid)} "
            "LOOP EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO %I', o, r); END LOOP; END$pgbv$;")


def _large_objects(rows: list[tuple[Any, ...]], role: str, job: DumpJob, compat: bool) -> Concern:
    """Large objects pg_dump cannot open; a GRANT per object, or a DO loop for one owner's many."""
    audited = sum(r[1] for r in rows)
    if compat or not job.large_objects:  # lo_compat_privileges = on: the server checks nothing
        return Concern(audited, (), ())
    needed: list[Missing] = []
    fixes: list[str] = []
    unlisted = 0
    for owner, _total, lacking, oids, owner_oid, role_oid in sorted(rows):
        owner = sql_ident(owner)
        mine = [Missing("large object", str(oid), owner, ("SELECT",),
                        f"GRANT SELECT ON LARGE OBJECT {int(oid)} TO {role};") for oid in oids]
        needed += mine
        unlisted += lacking - len(mine)
        fixes += [_lo_loop(owner_oid, role_oid)] if lacking > PER_OBJECT_FIXES else [m.fix for m in mine]
    return Concern(audited, tuple(needed), tuple(fixes), unlisted=unlisted)


def _default_privileges(row: tuple[Any, ...], role: str) -> Concern:
    total, missing = row
    grouped: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for owner, schema, objtype, priv in ((sql_ident(o), sql_ident(s), t, p) for o, s, t, p in missing):
        grouped[(owner, schema, "TABLES" if objtype == "r" else "SEQUENCES")].append(priv)
    items = []
    for (owner, schema, objects), privs in grouped.items():
        privs = sorted(privs, key=("USAGE", "SELECT").index)
        fix = (f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} "
               f"GRANT {', '.join(privs)} ON {objects} TO {role};")
        items.append(Missing("default privileges", f"FOR ROLE {owner} IN SCHEMA {schema} ON {objects}",
                             owner, tuple(privs), fix))
    # Each owner/schema pair needs two default ACLs: one for tables, one for sequences.
    return Concern(2 * total, tuple(items), tuple(m.fix for m in items))


def _covered(concern: Concern) -> Concern:
    """pg_read_all_data (or superuser) reads every table and sequence created later too."""
    return Concern(concern.audited, (), ())


def audit(target: Target, conn: psycopg.Connection | None = None) -> GrantAudit:
    """Audit the dump role of `target`; raises db.DatabaseUnreachable (one line) if it cannot connect.

    With `conn`, the queries run in the caller's open read-only transaction (one snapshot
    shared with the custom SQL checks); without, in a connection and transaction of their own.
    """
    started = time.perf_counter()
    # `pg_dump --version` (a process start, ~50 ms) runs while the server answers.
    with ThreadPoolExecutor(1) as pool:
        found = pool.submit(pg_dump_version_output)
        with contextlib.ExitStack() as stack:
            if conn is None:
                conn = stack.enter_context(connect_readonly(target))
                stack.enter_context(conn.transaction())
            role, server, server_num, read_only, concerns, queries, compat = _audit_catalog(target, conn)
        pg_dump = local_pg_dump(server, server_num, found.result())
    schemas, relations, sequences, default_privileges, large_objects = concerns
    return GrantAudit(role, server, read_only, schemas, relations, sequences, default_privileges, pg_dump=pg_dump,
                      queries=queries, seconds=time.perf_counter() - started, large_objects=large_objects,
                      job=dump_job(target.database.dump_options), lo_compat_privileges=compat)


# schemas, relations, sequences, default privileges, large objects; all None without the role.
Concerns = tuple[Concern | None, Concern | None, Concern | None, Concern | None, Concern | None]


def _audit_catalog(target: Target,
                   conn: psycopg.Connection) -> tuple[RoleFacts, str, int, bool, Concerns, int, bool]:
    params = {"role": target.database.dump_role, "exclude": list(target.database.exclude_schemas)}
    job = dump_job(target.database.dump_options)
    queries = 0

    def fetch(cur: psycopg.Cursor[Any], sql: str, *, many: bool = False) -> Any:
        nonlocal queries
        queries += 1
        cur.execute(sql, params)
        return cur.fetchall() if many else cur.fetchone()

    with conn.cursor() as cur:
        row = fetch(cur, grants_sql.ROLE)
        role = _role(row, target.database.dump_role)
        server, server_num, read_only, compat = row[9].split()[0], row[10], row[11] == "on", row[13] == "on"
        concerns: Concerns = (None, None, None, None, None)
        if role.exists:
            q = role.ident
            # Superuser, pg_read_all_data, row-level security and large objects are decided in
            # the queries themselves.
            default_privileges = _default_privileges(fetch(cur, grants_sql.DEFAULT_PRIVILEGES), q)
            relations, sequences = _split(fetch(cur, grants_sql.RELATIONS, many=True))
            concerns = (_schemas(fetch(cur, grants_sql.SCHEMAS), q),
                        _relations(relations, q, job),
                        _sequences(sequences, q, job),
                        _covered(default_privileges) if role.superuser or role.reads_all else default_privileges,
                        _large_objects(fetch(cur, grants_sql.LARGE_OBJECTS, many=True), q, job, compat))
    return role, server, server_num, read_only, concerns, queries, compat
