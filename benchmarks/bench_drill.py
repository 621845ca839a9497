"""Restore drill speed against the bare tools, on a real generated dump.

    .venv/bin/python benchmarks/bench_drill.py [--tables 60] [--rows 25000] [--runs 3]

1. the drill's plain restore (decompress + COPY-aware scan + row counting + progress, one
   read of the stream) against a bare `gunzip -c dump | psql -X -q -v ON_ERROR_STOP=1`
   of the same file into the same cluster. Goal: ratio <= 1.10.
2. `pg_restore -j2` against `-j1` on the custom-format dump of the same database.
3. the whole drill (lock, sweep, cluster start, restore, catalog, row counts, cleanup).
Medians of --runs runs; each restore goes into a fresh database.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from pgbackup_verify.config import load_target
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.drill.restore import restore_plain
from pgbackup_verify.facts.drill.run import run_drill
from pgbackup_verify.facts.drill.safety import Janitor
from pgbackup_verify.facts.dumps.source import from_path


def build_source(c: ThrowawayCluster, tables: int, rows: int) -> None:
    with psycopg.connect(c.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE bench")
    with psycopg.connect(c.dsn("bench"), autocommit=True) as conn:
        for schema in ("public", "cutter_governance", "sandbox_tac"):
            if schema != "public":
                conn.execute(f"CREATE SCHEMA {schema}")
        for i in range(tables):
            schema = ("public", "cutter_governance", "sandbox_tac")[i % 3]
            conn.execute(f"CREATE TABLE {schema}.t_{i:03d} (id bigserial PRIMARY KEY, label text NOT NULL, "
                         "n integer, note text, created timestamptz DEFAULT now())")
            conn.execute(f"CREATE INDEX ON {schema}.t_{i:03d} (n)")
            conn.execute(f"INSERT INTO {schema}.t_{i:03d} (label, n, note) SELECT md5(g::text), g % 1000, "
                         f"CASE WHEN g % 7 = 0 THEN E'tab\\tand\\\\backslash' END FROM generate_series(1, {rows}) g")


def fresh_db(c: ThrowawayCluster, name: str) -> str:
    with psycopg.connect(c.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    return c.dsn(name)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", type=int, default=60)
    ap.add_argument("--rows", type=int, default=25000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pgbv-bench-"))
    work.chmod(0o711)
    plain, custom = work / "bench.sql.gz", work / "bench.dump"
    with ThrowawayCluster(tag="bench-src-") as src, ThrowawayCluster(tag="bench-dst-") as dst:
        t = timed(lambda: build_source(src, args.tables, args.rows))
        subprocess.run(f"pg_dump -d bench | gzip -6 > {plain}", shell=True, env=src.env(), check=True)
        subprocess.run(["pg_dump", "-Fc", "-f", str(custom), "-d", "bench"], env=src.env(), check=True)
        payload = from_path(plain).payload_estimate()
        print(f"dump: {args.tables} tables x {args.rows} rows, payload {payload / 2**20:.0f} MiB, "
              f"{plain.stat().st_size / 2**20:.0f} MiB .sql.gz, {custom.stat().st_size / 2**20:.0f} MiB -Fc "
              f"(built in {t:.0f} s)")
        bare, drill, j1, j2 = [], [], [], []
        for _ in range(args.runs):
            dsn = fresh_db(dst, "bare")
            bare.append(timed(lambda d=dsn: subprocess.run(
                f"gunzip -c {plain} | psql -X -q -v ON_ERROR_STOP=1 -d '{d}'", shell=True, env=dst.env(),
                check=True, stdout=subprocess.DEVNULL)))
            dsn = fresh_db(dst, "drill")
            outcome = None

            def run(d: str = dsn) -> None:
                nonlocal outcome
                outcome = restore_plain(from_path(plain), d, dst.env(), 3600, Janitor())
            drill.append(timed(run))
            assert outcome is not None and not outcome.problems, outcome
            assert outcome.payload_bytes >= payload - 1024, "the drill must stream the whole payload"
            for jobs, out in ((1, j1), (2, j2)):
                dsn = fresh_db(dst, f"j{jobs}")
                out.append(timed(lambda d=dsn, j=jobs: subprocess.run(
                    ["pg_restore", "-j", str(j), "-d", d, str(custom)], env=dst.env(), check=True)))
        mb, md, m1, m2 = (statistics.median(x) for x in (bare, drill, j1, j2))
        print(f"gunzip -c | psql          {mb:6.2f} s  1.00x (baseline)")
        print(f"drill plain restore       {md:6.2f} s  {md / mb:.2f}x  (goal <= 1.10x; scan, row count, "
              f"{sum(outcome.rows.values())} rows counted, progress)")
        print(f"pg_restore -j1            {m1:6.2f} s  1.00x (baseline)")
        print(f"pg_restore -j2            {m2:6.2f} s  {m2 / m1:.2f}x  ({m1 / m2:.2f}x faster)")
    target_file = work / "bench.toml"
    target_file.write_text(f'[database]\ndsn = "host=127.0.0.1 dbname=x user=x"\ndump_role = "x"\n'
                           f'[backups]\ndirectory = "{work}"\npattern = "bench.sql.gz"\n'
                           f'expected_schemas = ["public", "cutter_governance", "sandbox_tac"]\n'
                           f'[drill]\nwork_dir = "{work}"\n')
    facts = run_drill(load_target(target_file))
    assert facts.aborted is None and facts.outcome and not facts.outcome.problems, facts.aborted
    print(f"whole drill (throwaway cluster, restore, catalog, {len(facts.rows)} row counts, cleanup): "
          f"{facts.seconds:.2f} s")
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
