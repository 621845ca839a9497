"""The Phase C permission guard, generalized: can the dump role read everything pg_dump reads?

`audit(target)` runs one catalog query per concern (see grants_sql) in one read-only
transaction and returns frozen facts. Every missing object carries its quoted identifier
and the exact statement that fixes it; the checks only phrase the verdict.
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
from pgbackup_verify.facts import grants_sql
from pgbackup_verify.facts.db import connect_readonly

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
    kind: str  # schema, table, view, ..., sequence, default privileges
    ident: str  # e.g. "Pilot Area".pilots, or `FOR ROLE x IN SCHEMA y ON TABLES` for default privileges
    owner: str  # quoted role that owns it (may run the fix, as may a superuser)
    privileges: tuple[str, ...]  # the ones the dump role lacks, each tested on its own
    fix: str  # the exact statement for this object alone


@dataclass(frozen=True)
class Concern:
    audited: int  # objects (or owner x schema x {tables, sequences} default ACLs) looked at
    missing: tuple[Missing, ...]
    fixes: tuple[str, ...]  # shortest exact set of statements that fixes all of `missing`

    @property
    def ok(self) -> bool:
        return not self.missing


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
    relations: Concern | None
    sequences: Concern | None
    default_privileges: Concern | None
    pg_dump: PgDumpVersion
    queries: int  # catalog statements issued, independent of the object count
    seconds: float  # wall time including connect


def major_of(version_num: int) -> tuple[int, ...]:
    """server_version_num -> major: 150020 -> (15,), 90624 -> (9, 6)."""
    return (version_num // 10000,) if version_num >= 100000 else (version_num // 10000, version_num // 100 % 100)


def pg_dump_version_output() -> tuple[str | None, str]:
    """(path, `pg_dump --version` output) of the pg_dump on PATH, the one the nightly job runs."""
    path = shutil.which("pg_dump")
    if not path:
        return None, ""
    return path, subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout


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


def _role(row: tuple[Any, ...], name: str) -> RoleFacts:
    exists, login, superuser, expired, reads_all, connect, db, db_q, role_q = row[:9]
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
    return RoleFacts(name=name, ident=role_q, exists=exists, can_login=login, superuser=superuser, expired=expired,
                     reads_all=reads_all, can_connect=connect, database=db, fixes=tuple(fixes))


def _schemas(row: tuple[Any, ...], role: str) -> Concern:
    total, missing = row
    items = tuple(Missing("schema", s, owner, ("USAGE",), f"GRANT USAGE ON SCHEMA {s} TO {role};")
                  for s, owner in missing)
    return Concern(total, items, tuple(m.fix for m in items))


def _relations(rows: list[tuple[Any, ...]], role: str) -> Concern:
    items: list[Missing] = []
    fixes: list[str] = []
    for schema, total, missing in sorted(rows):
        mine = [Missing(RELKINDS[kind], f"{schema}.{name}", owner, ("SELECT",),
                        f"GRANT SELECT ON TABLE {schema}.{name} TO {role};") for name, kind, owner in sorted(missing)]
        items += mine
        if len(mine) == total or len(mine) > PER_OBJECT_FIXES:
            fixes.append(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role};")
        else:
            fixes += [m.fix for m in mine]
    return Concern(sum(r[1] for r in rows), tuple(items), tuple(fixes))


def _sequences(rows: list[tuple[Any, ...]], role: str) -> Concern:
    items: list[Missing] = []
    fixes: list[str] = []
    for schema, total, missing in sorted(rows):
        mine = []
        for name, usage, select, owner in sorted(missing):
            privs = tuple(p for p, held in (("USAGE", usage), ("SELECT", select)) if not held)
            mine.append(Missing("sequence", f"{schema}.{name}", owner, privs,
                                f"GRANT {', '.join(privs)} ON SEQUENCE {schema}.{name} TO {role};"))
        items += mine
        if mine and (len(mine) == total or len(mine) > PER_OBJECT_FIXES):
            union = [p for p in ("USAGE", "SELECT") if any(p in m.privileges for m in mine)]
            fixes.append(f"GRANT {', '.join(union)} ON ALL SEQUENCES IN SCHEMA {schema} TO {role};")
        else:
            fixes += [m.fix for m in mine]
    return Concern(sum(r[1] for r in rows), tuple(items), tuple(fixes))


def _default_privileges(row: tuple[Any, ...], role: str) -> Concern:
    total, missing = row
    grouped: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for owner, schema, objtype, priv in missing:
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
    """pg_read_all_data (or superuser) reads everything, now and later: nothing is missing."""
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
            role, server, server_num, read_only, concerns, queries = _audit_catalog(target, conn)
        pg_dump = local_pg_dump(server, server_num, found.result())
    schemas, relations, sequences, default_privileges = concerns
    return GrantAudit(role, server, read_only, schemas, relations, sequences, default_privileges, pg_dump=pg_dump,
                      queries=queries, seconds=time.perf_counter() - started)


# schemas, relations, sequences, default privileges; all None when the role does not exist.
Concerns = tuple[Concern | None, Concern | None, Concern | None, Concern | None]


def _audit_catalog(target: Target, conn: psycopg.Connection) -> tuple[RoleFacts, str, int, bool, Concerns, int]:
    params = {"role": target.database.dump_role, "exclude": list(target.database.exclude_schemas)}
    queries = 0

    def fetch(cur: psycopg.Cursor[Any], sql: str, *, many: bool = False) -> Any:
        nonlocal queries
        queries += 1
        cur.execute(sql, params)
        return cur.fetchall() if many else cur.fetchone()

    with conn.cursor() as cur:
        row = fetch(cur, grants_sql.ROLE)
        role = _role(row, target.database.dump_role)
        server, server_num, read_only = row[9].split()[0], row[10], row[11] == "on"
        concerns: Concerns = (None, None, None, None)
        if role.exists:
            q = role.ident
            found = (_schemas(fetch(cur, grants_sql.SCHEMAS), q),
                     _relations(fetch(cur, grants_sql.RELATIONS, many=True), q),
                     _sequences(fetch(cur, grants_sql.SEQUENCES, many=True), q),
                     _default_privileges(fetch(cur, grants_sql.DEFAULT_PRIVILEGES), q))
            if role.superuser or role.reads_all:
                found = (_covered(found[0]), _covered(found[1]), _covered(found[2]), _covered(found[3]))
            concerns = found
    return role, server, server_num, read_only, concerns, queries
