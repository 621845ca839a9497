"""The rows a pg_restore load stored, from the server's own counters: no second read of the archive.

The server counts every row an INSERT or COPY stores, per table (the cumulative statistics,
`pg_stat_get_tuples_inserted`, flushed by each session at the latest as it ends). In the drill's
fresh database, after pg_restore and its sessions have ended, a table the archive created holds
in its count the rows its data loaded: the archive's rows, provided nothing else stored or
dropped rows during the restore. What could:

- code the dump's owners wrote, run by the restore: a CHECK, a default, an index expression, an
  operator, a materialized view's refresh calling their function, or a built-in that runs a query
  given as text (`untrusted_code`, on the catalog after the restore);
- a trigger that existed while its table's rows were loaded (pg_dump creates triggers after the
  data, but the archive is input: `triggers_before_rows` checks the order on the restored rows);
- an extension's script filling its configuration table (`archive_targets`: every table whose
  data is loaded must be one the archive creates).

Where one of them may have, or the counters are off, the drill reads the archive's data blocks
instead (restore.py); `predict` reads the archive's table of contents before the restore, so that
this second read can run alongside the restore, not after it.

Why the counts are exact otherwise: COPY runs no rule; the restore role bypasses row security (or
COPY fails); every row a COPY stores is counted once, into the partition it lands in.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import psycopg
from psycopg import sql

from pgbackup_verify.facts.db import scalar
from pgbackup_verify.facts.drill.relations import resolve
from pgbackup_verify.facts.dumps.archivedata import toc_scanner
from pgbackup_verify.facts.dumps.customfmt import ArchiveToc
from pgbackup_verify.facts.dumps.plainscan import PlainDumpScanner, display_name

FIRST_USER_OID = 16384  # FirstNormalObjectId: below it, the objects initdb made
# Built-ins that run a query given as text (so whatever code it calls): a load calling one may insert anywhere.
QUERY_RUNNERS = ("query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "cursor_to_xml",
                 "cursor_to_xmlschema", "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
                 "schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema", "database_to_xml",
                 "database_to_xmlschema", "database_to_xml_and_xmlschema", "ts_stat", "ts_rewrite")
# TOC entries whose definitions the restore evaluates (and views a refreshed materialized view reads).
_EVALUATED = frozenset({"TABLE", "DOMAIN", "TYPE", "CHECK CONSTRAINT", "DEFAULT", "INDEX", "CONSTRAINT",
                        "FK CONSTRAINT", "TABLE ATTACH", "INDEX ATTACH"})
_CODE = frozenset({"FUNCTION", "AGGREGATE", "PROCEDURE"})
_VIEWS = frozenset({"VIEW", "MATERIALIZED VIEW"})
_NAME = re.compile(r'"((?:[^"]|"")+)"|(?<![\w$])([^\W\d][\w$]*)')
_CALL = re.compile(r'"((?:[^"]|"")+)"\s*\(|(?<![\w$])([^\W\d][\w$]*)\s*\(')
_CALLED_IMPLICITLY = frozenset({"OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY", "CAST"})

# Code of a non-superuser (the dump's, as restored) or a query runner, that something the restore may
# evaluate depends on. Functions of superusers are the server's or an extension's, installed by the
# host's administrator, and the restore role cannot hand one of its own to a superuser. Functions
# themselves, triggers (triggers_before_rows) and policies (the restore role bypasses them, or COPY
# fails) are not what the load runs; a view's query runs only when a materialized view reading it
# is refreshed.
_UNTRUSTED_CODE = """
WITH RECURSIVE super AS (SELECT oid FROM pg_roles WHERE rolsuper),
code AS (
    SELECT p.oid FROM pg_proc p
    WHERE (p.oid >= %(first)s AND p.proowner NOT IN (SELECT oid FROM super))
       OR (p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = ANY(%(runners)s))
),
ops AS (
    SELECT o.oid FROM pg_operator o
    WHERE o.oid >= %(first)s AND (o.oprowner NOT IN (SELECT oid FROM super) OR o.oprcode IN (SELECT oid FROM code))
),
refreshed(rule) AS (  -- the queries of materialized views, and of the views they read, at any depth
    SELECT r.oid FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class WHERE c.relkind = 'm'
    UNION
    SELECT r.oid FROM refreshed f
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = f.rule AND d.refclassid = 'pg_class'::regclass
    JOIN pg_rewrite r ON r.ev_class = d.refobjid
)
SELECT pg_describe_object(d.classid, d.objid, d.objsubid), pg_describe_object(d.refclassid, d.refobjid, 0)
FROM pg_depend d
WHERE d.deptype IN ('n', 'a')
  AND d.classid NOT IN ('pg_proc'::regclass, 'pg_trigger'::regclass, 'pg_policy'::regclass)
  AND (d.classid <> 'pg_rewrite'::regclass OR d.objid IN (SELECT rule FROM refreshed))
  AND ((d.refclassid = 'pg_proc'::regclass AND d.refobjid IN (SELECT oid FROM code))
    OR (d.refclassid = 'pg_operator'::regclass AND d.refobjid IN (SELECT oid FROM ops)))
ORDER BY 1, 2
LIMIT 1
"""
_ACTIVE = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()"
_INSERTED = "SELECT c.oid, pg_stat_get_tuples_inserted(c.oid) FROM pg_class c WHERE c.oid = ANY(%s)"
_TRIGGERS = """
SELECT t.tgname, n.nspname, c.relname, age(t.xmin) FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND t.tgrelid = ANY(%s) ORDER BY 2, 3, 1
"""
_LEAVES = """
SELECT t.relid::oid, c.relkind::text FROM pg_partition_tree(%s) t JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf
"""


def archive_targets(toc: ArchiveToc, wanted: set[int] | None) -> PlainDumpScanner | str:
    """A scanner keyed by the COPY target of each TABLE DATA entry restored (rows 0 each); or why the
    load's counters cannot stand for the archive's rows (`pg_dump --inserts` data, a table the archive
    does not create, e.g. an extension's configuration table)."""
    scan = toc_scanner(toc, wanted)
    created = {(e.namespace, e.tag) for e in toc.entries if e.desc == "TABLE"}
    for e in toc.entries:
        if e.desc != "TABLE DATA" or (wanted is not None and e.dump_id not in wanted):
            continue
        if (e.namespace, e.tag) not in created:
            return f"TABLE DATA {display_name(e.namespace, e.tag)}: a table the archive does not create"
        if not e.copy_stmt or not scan.copy_rows(e.copy_stmt.encode("utf-8", "surrogateescape"), 0):
            return f"TABLE DATA {display_name(e.namespace, e.tag)}: not loaded by a COPY this reader knows"
    return scan


def predict(toc: ArchiveToc, wanted: set[int] | None) -> str | None:
    """Before the restore, from the archive's table of contents: why the counters will likely not do
    (the dump's code called where the restore evaluates it; a trigger placed before data); else None.

    A guess that only decides whether the data blocks are read alongside the restore; the catalog
    after the restore decides (untrusted_code, triggers_before_rows).
    """
    if defined := next((e for e in toc.entries if e.desc in _CALLED_IMPLICITLY), None):
        return f"the archive defines {defined.desc.lower()} {defined.tag}: code called without its name"
    names = {e.tag.split("(", 1)[0] for e in toc.entries if e.desc in _CODE} | set(QUERY_RUNNERS)
    refreshed = {e.tag for e in toc.entries if e.desc == "MATERIALIZED VIEW DATA"
                 and (wanted is None or e.dump_id in wanted)}
    read = _read_by(toc, refreshed)
    data_seen = 0
    data_total = sum(e.desc == "TABLE DATA" for e in toc.entries)
    for e in toc.entries:
        data_seen += e.desc == "TABLE DATA"
        if e.desc == "TRIGGER" and data_seen < data_total:
            return f"trigger {e.tag} comes before table data in the archive"
        evaluated = e.desc in _EVALUATED or (e.desc in _VIEWS and e.tag in read)
        called = next((n for n in _names(e.defn, _CALL) if n in names), None) if evaluated else None
        if called is not None:
            return f"{e.desc} {display_name(e.namespace, e.tag)} calls {called}()"
    return None


def _read_by(toc: ArchiveToc, refreshed: set[str]) -> set[str]:
    """The materialized views refreshed and the views they read, at any depth, by name (a guess: a name
    the query holds, qualified or not)."""
    views = {e.tag: e.defn for e in toc.entries if e.desc in _VIEWS}
    if not refreshed or not views:
        return set(refreshed)
    read, todo = set(refreshed), list(refreshed)
    while todo:
        for name in _names(views.get(todo.pop(), ""), _NAME):
            if name in views and name not in read:
                read.add(name)
                todo.append(name)
    return read


def _names(text: str, pattern: re.Pattern[str]) -> Iterator[str]:
    """The names `pattern` finds in SQL as pg_dump writes it: quoted exactly, else folded to lower case.
    One pass over the text whatever the number of names looked for (the archive is input)."""
    for quoted, bare in pattern.findall(text):
        yield quoted.replace('""', '"') if quoted else bare.lower()


def settle(conn: psycopg.Connection, application_name: str, deadline: float) -> bool:
    """Wait until the sessions of a finished pg_restore have ended (each flushes its counts as it
    ends, before it leaves pg_stat_activity); False if one is still there at the deadline."""
    while scalar(conn, _ACTIVE, (application_name,)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def untrusted_code(conn: psycopg.Connection) -> str | None:
    """Why the counters may hold rows the archive does not (code that may have run in the restore); None if not."""
    if scalar(conn, "SELECT current_setting('track_counts')") != "on":
        return "the server does not count rows (track_counts is off)"
    if scalar(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        return "the restore role is a superuser: the dump's functions look like the server's"
    row = conn.execute(_UNTRUSTED_CODE, {"first": FIRST_USER_OID, "runners": list(QUERY_RUNNERS)}).fetchone()
    return None if row is None else f"{row[0]} runs {row[1]}"


def triggers_before_rows(conn: psycopg.Connection, tables: list[int]) -> str | None:
    """A trigger on a loaded table that may have fired during its load; None if every one came after.

    A COPY stores its rows in one transaction, so any row's xmin says when; a trigger created later
    has a younger xmin (a smaller age). An empty table cannot say, nor can one transaction that did both.
    """
    for name, schema, table, trigger_age in conn.execute(_TRIGGERS, (tables,)).fetchall():
        q = sql.SQL("SELECT age(xmin) FROM ONLY {}.{} LIMIT 1").format(sql.Identifier(schema), sql.Identifier(table))
        row = conn.execute(q).fetchone()
        if row is None or int(row[0]) <= int(trigger_age):
            return (f"trigger {name} on {display_name(schema, table)} may have fired while its rows were loaded "
                    + ("(the table is empty)" if row is None else "(it is older than they are)"))
    return None


def loaded_rows(conn: psycopg.Connection, scan: PlainDumpScanner) -> dict[str, int] | str:
    """After the restore, its sessions ended: the rows each COPY target stored, or why the counters
    may not say (then nothing in `scan` is changed)."""
    why = untrusted_code(conn)
    if why:
        return why
    keys = list(scan.rows)
    found = resolve(conn, scan, keys)
    tables: dict[str, list[int]] = {}
    for key in keys:
        rel = found.get(key)
        if rel is None:
            return f"COPY target {key} not found in the restored database"
        if rel.kind == "r":
            tables[key] = [rel.oid]
        elif rel.kind == "p":  # its rows are stored in its partitions
            leaves = conn.execute(_LEAVES, (rel.oid,)).fetchall()
            if any(kind != "r" for _, kind in leaves):
                return f"partitioned table {key} has partitions that are not tables"
            tables[key] = [int(oid) for oid, _ in leaves]
        else:
            return f"COPY target {key} is not a table (relkind {rel.kind})"
    every = [t for ts in tables.values() for t in ts]
    if len(every) != len(set(every)):
        return "two COPY targets store into the same table"
    why = triggers_before_rows(conn, every)
    if why:
        return why
    counts: dict[int, int] = {int(oid): int(n) for oid, n in conn.execute(_INSERTED, (every,)).fetchall()}
    for key, ts in tables.items():
        scan.rows[key] = sum(counts.get(t, 0) for t in ts)
    return dict(scan.rows)
