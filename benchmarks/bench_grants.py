"""Grant audit speed: one catalog query per concern vs one has_table_privilege query per object.

Builds ~100,000 relations in 50 schemas (tables, views, sequences, owned by another role than
the dump role, with a few grants missing, one table per schema with row-level security) and
10,000 large objects in a throwaway cluster, then times `grants.audit(target)` including connect
(median of --runs) against a baseline that asks the server once per object. Prints the ratio.
Run: .venv/bin/python benchmarks/bench_grants.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from pgbackup_verify.config import load_target
from pgbackup_verify.facts import grants
from pgbackup_verify.facts.db import connect_readonly
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster

ROLES = ("CREATE ROLE bench_dump LOGIN", "CREATE ROLE bench_owner LOGIN", "CREATE DATABASE bench OWNER bench_owner")

# One DO block per schema: the DDL is generated on the server, one round trip per 2,000 objects.
SCHEMA_DDL = """
CREATE SCHEMA s{i:02d} AUTHORIZATION bench_owner;
GRANT USAGE ON SCHEMA s{i:02d} TO bench_dump;
ALTER DEFAULT PRIVILEGES FOR ROLE bench_owner IN SCHEMA s{i:02d} GRANT SELECT ON TABLES TO bench_dump;
ALTER DEFAULT PRIVILEGES FOR ROLE bench_owner IN SCHEMA s{i:02d} GRANT USAGE, SELECT ON SEQUENCES TO bench_dump;
SET ROLE bench_owner;
DO $$ BEGIN
  FOR n IN 1..{tables} LOOP EXECUTE format('CREATE TABLE s{i:02d}.t%s (id int)', n); END LOOP;
  FOR n IN 1..{views} LOOP EXECUTE format('CREATE VIEW s{i:02d}.v%s AS SELECT 1 AS x', n); END LOOP;
  FOR n IN 1..{sequences} LOOP EXECUTE format('CREATE SEQUENCE s{i:02d}.q%s', n); END LOOP;
END $$;
REVOKE SELECT ON s{i:02d}.t1 FROM bench_dump;
ALTER TABLE s{i:02d}.t2 ENABLE ROW LEVEL SECURITY;
RESET ROLE;
"""

PER_OBJECT = "SELECT has_table_privilege(%s, %s::oid, 'SELECT')"


# Large objects of the owner, all but one readable by the dump role.
LARGE_OBJECTS = """
SET ROLE bench_owner;
DO $$ DECLARE o oid; BEGIN
  FOR n IN 1..{n} LOOP
    o := lo_create(0);
    IF n > 1 THEN EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO bench_dump', o); END IF;
  END LOOP;
END $$;
RESET ROLE;
"""


def build(cluster: ThrowawayCluster, schemas: int, tables: int, views: int, sequences: int,
          large_objects: int = 0) -> int:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        for stmt in ROLES:
            conn.execute(stmt)
    with psycopg.connect(cluster.dsn("bench"), autocommit=True) as conn:
        for i in range(schemas):
            conn.execute(SCHEMA_DDL.format(i=i, tables=tables, views=views, sequences=sequences))
        if large_objects:
            conn.execute(LARGE_OBJECTS.format(n=large_objects))
        conn.execute("VACUUM ANALYZE pg_class")
        conn.execute("VACUUM ANALYZE pg_largeobject_metadata")
        return conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE n.nspname LIKE 's%'").fetchone()[0]  # type: ignore[index]


def per_object(target_path: Path) -> tuple[float, int]:
    """The baseline: connect, list the objects, then one privilege query per object."""
    started = time.perf_counter()
    with connect_readonly(load_target(target_path)) as conn:
        oids = [r[0] for r in conn.execute(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname LIKE 's%' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')")]
        missing = sum(1 for oid in oids if not conn.execute(PER_OBJECT, ("bench_dump", oid)).fetchone()[0])
    return time.perf_counter() - started, missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--schemas", type=int, default=50)
    ap.add_argument("--tables", type=int, default=1780, help="tables per schema")
    ap.add_argument("--views", type=int, default=20, help="views per schema")
    ap.add_argument("--sequences", type=int, default=200, help="sequences per schema")
    ap.add_argument("--large-objects", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    with ThrowawayCluster(tag="bench-grants-") as cluster, tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        objects = build(cluster, args.schemas, args.tables, args.views, args.sequences, args.large_objects)
        print(f"catalog: {objects} relations in {args.schemas} schemas, {args.large_objects} large objects, "
              f"built in {time.perf_counter() - t0:.1f} s")
        target = Path(tmp) / "bench.toml"
        target.write_text(f'[database]\ndsn = "{cluster.dsn("bench", "bench_dump")}"\ndump_role = "bench_dump"\n'
                          f'[backups]\ndirectory = "{tmp}"\n')
        times, result = [], None
        for _ in range(args.runs):
            result = grants.audit(load_target(target))
            times.append(result.seconds)
        assert result is not None and result.relations is not None and result.sequences is not None
        assert result.large_objects is not None
        audit_s = statistics.median(times)
        print(f"audit (incl. connect, {result.queries} queries): median {audit_s:.3f} s of {args.runs} runs "
              f"(min {min(times):.3f}, max {max(times):.3f}); {result.relations.audited} relations + "
              f"{result.sequences.audited} sequences + {result.large_objects.audited} large objects audited; "
              f"{len(result.relations.missing)} tables unreadable (SELECT or row-level security), "
              f"{result.large_objects.missing_count} large objects without SELECT")
        t1 = time.perf_counter()
        grants.local_pg_dump(result.server_version, 150000)
        print(f"  `pg_dump --version` alone: {time.perf_counter() - t1:.3f} s (runs while the server answers)")
        base_s, base_missing = per_object(target)
        print(f"per-object has_table_privilege: {base_s:.3f} s ({base_missing} without SELECT)")
        print(f"ratio: one query per concern is {base_s / audit_s:.1f}x faster "
              f"(goal: audit < 0.5 s: {'met' if audit_s < 0.5 else 'MISSED'})")


if __name__ == "__main__":
    main()
