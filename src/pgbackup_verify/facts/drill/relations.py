"""Which relation of the restored database each target of a dump names (one query for them all).

A target is a scanner key (plainscan.PlainDumpScanner): the name as the dump wrote it, with its
(schema, name) as the catalog spells them; unqualified, it is found as the search path finds it.
"""

from __future__ import annotations

from typing import NamedTuple

import psycopg

from pgbackup_verify.facts.dumps.plainscan import PlainDumpScanner

# Each target of the dump by its exact names (or, unqualified, as the search path finds it), with
# the top of its partition tree: rows loaded through a partitioned table land in its partitions.
_RELATIONS = """
SELECT t.key, c.oid, c.relkind, c.relispopulated, n.nspname, c.relname, r.oid, rn.nspname, r.relname
FROM unnest(%s::text[], %s::text[], %s::text[]) AS t(key, nsp, rel)
JOIN pg_class c ON c.oid = coalesce(
    (SELECT c2.oid FROM pg_class c2 JOIN pg_namespace n2 ON n2.oid = c2.relnamespace
     WHERE n2.nspname = t.nsp AND c2.relname = t.rel),
    CASE WHEN t.nsp IS NULL THEN to_regclass(quote_ident(t.rel)) END)
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class r ON r.oid = pg_partition_root(c.oid)
LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace
"""


class Rel(NamedTuple):
    """One relation a dump's statement names, as the restored database resolved it."""
    oid: int
    kind: str
    populated: bool
    schema: str
    name: str
    root: int | None  # top of its partition tree, when it is in one
    root_schema: str | None
    root_name: str | None


def resolve(conn: psycopg.Connection, scan: PlainDumpScanner, keys: list[str]) -> dict[str, Rel]:
    names = [scan.targets.get(k, (None, k)) for k in keys]
    rows = conn.execute(_RELATIONS, (keys, [n[0] for n in names], [n[1] for n in names])).fetchall()
    return {r[0]: Rel(*r[1:]) for r in rows}
