"""What a database holds, by name: the restored drill database, or the live one as expectation."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg

# User objects only: no system schemas, no objects that belong to an extension.
_RELATIONS = """
SELECT n.nspname, c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'S', 'v', 'm')
  AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
"""
_SCHEMAS = """
SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
"""
_FUNCTIONS = """
SELECT n.nspname, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
"""
KINDS = ("sequences", "views", "functions")


@dataclass
class Catalog:
    schemas: set[str] = field(default_factory=set)
    tables: dict[str, set[str]] = field(default_factory=dict)  # schema -> table names
    sequences: set[str] = field(default_factory=set)  # schema.name
    views: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)  # schema.name(args)

    def table_count(self) -> int:
        return sum(len(t) for t in self.tables.values())

    def qualified_tables(self) -> set[str]:
        return {f"{s}.{t}" for s, names in self.tables.items() for t in names}

    def objects(self, kind: str) -> set[str]:
        return getattr(self, kind)


def read_catalog(conn: psycopg.Connection, exclude: Iterable[str] = ()) -> Catalog:
    skip = set(exclude)
    cat = Catalog()
    cat.schemas = {r[0] for r in conn.execute(_SCHEMAS) if r[0] not in skip}
    for schema, name, kind in conn.execute(_RELATIONS):
        if schema in skip:
            continue
        if kind in ("r", "p"):
            cat.tables.setdefault(schema, set()).add(name)
        elif kind == "S":
            cat.sequences.add(f"{schema}.{name}")
        else:
            cat.views.add(f"{schema}.{name}")
    cat.functions = {f"{s}.{f}" for s, f in conn.execute(_FUNCTIONS) if s not in skip}
    return cat
