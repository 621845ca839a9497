"""Restore drill speed against the bare tools, on a real generated dump: every ratio in one run.

    .venv/bin/python benchmarks/bench_drill.py [--tables 60] [--rows 25000] [--runs 3] [--jobs 2]

Each round restores the same dump, each variant into a fresh database of one cluster, in turn
(so a change in the machine's load hits every variant alike), each round starting at the next
variant; medians over --runs rounds. That
cluster is the drill's own (facts/drill/drillcluster.py): sandboxed (bubblewrap, socket only, scram),
every variant restoring as the plain role `pgbv_restore`; the bare tools run outside the sandbox,
the drill's psql inside it (--sandbox none: no namespaces).

- bare `gunzip -c dump | psql -X -q -v ON_ERROR_STOP=1` (the baseline of the plain restores);
- the drill's serial plain restore (decompress + COPY-aware scan + row counting, one read of the
  stream, psql under \\restrict; the restored rows from psql's own COPY tags). Goal: <= 1.10x bare;
- the drill's parallel plain restore on --jobs connections. Goal: <= 0.55x bare with 2 jobs (issue 20);
- `pg_restore -j1` and `-jN` of the custom-format dump of the same database;
- the drill's custom-format restore (`pg_restore -jN`, the archive's rows counted from the load itself,
  facts/drill/loadcount.py: the server's insert counters, the archive read once).
The drill variants run in a child process each, which reports its own peak RSS. Then the whole
drill (lock, sweep, throwaway cluster, restore, catalog, row counts, cleanup) once, and the
ratios of issue 20: plain drill with --jobs vs bare psql, -Fc drill vs bare pg_restore -jN, and
the restored side's row count as a share of the restore (against one count(*) per table).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg

from pgbackup_verify.config import load_target
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.drill.drillcluster import DrillCluster, Endpoint
from pgbackup_verify.facts.drill.restore import restore_custom, restore_plain
from pgbackup_verify.facts.drill.run import run_drill
from pgbackup_verify.facts.drill.safety import Janitor
from pgbackup_verify.facts.drill.sandbox import Sandbox, resolve
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


def fresh_db(c: DrillCluster, name: str) -> Endpoint:
    return c.database(name)


def bare_env(e: Endpoint) -> dict[str, str]:
    """The bare tools' environment: the host's PATH, the restore role's password."""
    return {**e.env(), "PATH": os.environ["PATH"]}


def endpoint_json(e: Endpoint) -> str:
    box = e.sandbox
    assert box is not None
    return json.dumps({"conninfo": e.conninfo, "password": e.password, "socket_dir": str(e.socket_dir),
                       "mode": box.mode, "uid": box.uid, "gid": box.gid, "bwrap": box.bwrap, "etc": str(box.etc)})


def endpoint_from_json(text: str) -> Endpoint:
    d = json.loads(text)
    box = Sandbox(d["mode"], d["uid"], d["gid"], d["bwrap"], Path(d["etc"]))
    return Endpoint(d["conninfo"], d["password"], box, Path(d["socket_dir"]))


def cpu_seconds(c: DrillCluster) -> float:
    """CPU used so far by this process, its waited-for children (psql, pg_restore, the drill's child) and the
    drill cluster's server processes (the backends it has reaped included): wall time on a shared machine
    measures the other jobs too, CPU time does not."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    assert c.proc is not None
    for p in psutil.Process(c.proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def timed(fn, c: DrillCluster | None = None, cpu: list[float] | None = None) -> float:
    start, used = time.perf_counter(), cpu_seconds(c) if c else 0.0
    fn()
    seconds = time.perf_counter() - start
    if c is not None and cpu is not None:
        time.sleep(0.2)  # the backends exit after their clients: their CPU lands in the postmaster's
        cpu.append(cpu_seconds(c) - used)
    return seconds


def child(dump: str, endpoint: str, jobs: int, work: str) -> int:
    """One drill restore in this (child) process: its time, rows and peak RSS as JSON."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    startup_cpu = own.ru_utime + own.ru_stime  # the interpreter and its imports: not the restore's
    start = time.perf_counter()
    out = restore_plain(from_path(Path(dump)), endpoint_from_json(endpoint), 3600, Janitor(), jobs=jobs,
                        work_dir=Path(work))
    seconds = time.perf_counter() - start
    # VmHWM: this process's own high-water mark. ru_maxrss would fold in this bench's RSS, which the
    # child had at exec (Linux counts the parent's pages before exec replaces them).
    hwm = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert hwm is not None
    rss_mib = int(hwm[1]) / 1024
    print(json.dumps({"seconds": seconds, "problems": out.problems, "rows": sum((out.rows or {}).values()),
                      "tagged": None if out.loaded is None else len(out.loaded), "tables": len(out.rows or {}),
                      "payload": out.payload_bytes, "rss_mib": rss_mib,
                      "startup_cpu": startup_cpu, "spool_mib": out.spool_peak / 2**20}))
    return 0


def drill_restore(plain: Path, endpoint: Endpoint, jobs: int, work: Path) -> dict:
    env = {**os.environ, "PGBV_BENCH_ENDPOINT": endpoint_json(endpoint)}
    res = subprocess.run([sys.executable, __file__, "--child", str(plain), "-", str(jobs), str(work)], env=env,
                         capture_output=True, text=True, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert not out["problems"], out["problems"]
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2], os.environ["PGBV_BENCH_ENDPOINT"], int(sys.argv[4]), sys.argv[5])
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", type=int, default=60)
    ap.add_argument("--rows", type=int, default=25000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--sandbox", choices=("bwrap", "none"), default="bwrap")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pgbv-bench-"))
    work.chmod(0o711)
    plain, custom = work / "bench.sql.gz", work / "bench.dump"
    load = [os.getloadavg()[0]]
    with ThrowawayCluster(tag="bench-src-") as src, DrillCluster(resolve(args.sandbox), work, "bench-dst-") as dst:
        dst.prepare_restore("first", ("postgres",))  # as the drill does: the dump names postgres as owner
        t = timed(lambda: build_source(src, args.tables, args.rows))
        subprocess.run(f"pg_dump -d bench | gzip -6 > {plain}", shell=True, env=src.env(), check=True)
        subprocess.run(["pg_dump", "-Fc", "-f", str(custom), "-d", "bench"], env=src.env(), check=True)
        payload = from_path(plain).payload_estimate()
        print(f"dump: {args.tables} tables x {args.rows} rows, payload {payload / 2**20:.0f} MiB, "
              f"{plain.stat().st_size / 2**20:.0f} MiB .sql.gz, {custom.stat().st_size / 2**20:.0f} MiB -Fc "
              f"(built in {t:.0f} s)")
        keys = ("bare", "serial", "parallel", "j1", "jn", "jn_rows")
        times: dict[str, list[float]] = {k: [] for k in keys}
        cpu: dict[str, list[float]] = {k: [] for k in keys}
        last: dict[str, dict] = {}
        rows_from = ""

        def bare() -> None:
            e = fresh_db(dst, "bare")
            times["bare"].append(timed(lambda: subprocess.run(
                f"gunzip -c {plain} | psql -X -q -v ON_ERROR_STOP=1 -d '{e.conninfo}'", shell=True, env=bare_env(e),
                check=True, stdout=subprocess.DEVNULL), dst, cpu["bare"]))

        def drill_plain(name: str, jobs: int) -> None:
            e = fresh_db(dst, name)
            timed(lambda: last.__setitem__(name, drill_restore(plain, e, jobs, work)), dst, cpu[name])
            cpu[name][-1] -= last[name]["startup_cpu"]
            times[name].append(last[name]["seconds"])
            assert last[name]["payload"] >= payload - 1024, "the drill must stream the whole payload"

        def bare_custom(key: str, jobs: int) -> None:
            e = fresh_db(dst, key)
            times[key].append(timed(lambda: subprocess.run(
                ["pg_restore", "-j", str(jobs), "--no-owner", "--no-privileges", "-d", e.conninfo, str(custom)],
                env=bare_env(e), check=True), dst, cpu[key]))

        def drill_custom() -> None:
            nonlocal rows_from
            janitor, e, got = Janitor(), fresh_db(dst, "jn_rows"), []
            timed(lambda: got.append(restore_custom(from_path(custom), e, args.jobs, 3600, janitor, work,
                                                    count_rows=True)), dst, cpu["jn_rows"])
            out = got[0]
            assert not janitor.run_all() and not out.problems, out.problems
            assert sum((out.rows or {}).values()) == args.tables * args.rows, "every row of the archive counted"
            times["jn_rows"].append(out.seconds)
            rows_from = out.rows_from

        variants = [bare, lambda: drill_plain("serial", 1), lambda: drill_plain("parallel", args.jobs),
                    lambda: bare_custom("j1", 1), lambda: bare_custom("jn", args.jobs), drill_custom]
        for round_no in range(args.runs):
            # Each round starts at another variant: none always follows the same one (the last one's
            # checkpoint, its cache) on a machine whose load drifts.
            for variant in variants[round_no % len(variants):] + variants[:round_no % len(variants)]:
                variant()
            load.append(os.getloadavg()[0])
        with dst.admin("parallel").connect() as conn:
            # What the drill's row check did before issue 20 (one count(*) per table), timed here.
            started = time.perf_counter()
            restored = sum(conn.execute(f"SELECT count(*) FROM ONLY {s}.{t}").fetchone()[0]  # type: ignore[index]
                           for s, t in conn.execute("SELECT schemaname, tablename FROM pg_tables "
                                                    "WHERE tablename LIKE 't\\_%'").fetchall())
            count_star = time.perf_counter() - started
        m = {k: statistics.median(v) for k, v in times.items()}
        mc = {k: statistics.median(v) for k, v in cpu.items()}
        paired: dict[str, float] = {}
        rows = last["parallel"]["rows"]
        assert rows == last["serial"]["rows"] == restored == args.tables * args.rows, (rows, restored)
        # Paired: the median of each round's own ratio (its variants ran minutes apart at most, under the
        # same load), steadier than the ratio of the medians on a shared machine.
        print(f"{'variant':34s} {'median s':>8s}  {'ratio':>6s}  {'paired':>6s}  {'CPU s':>6s}  {'ratio':>6s}  runs")
        for label, key, base in (("gunzip -c | psql", "bare", "bare"),
                                 ("drill plain restore, serial", "serial", "bare"),
                                 (f"drill plain restore, {args.jobs} jobs", "parallel", "bare"),
                                 ("pg_restore -j1 (custom format)", "j1", "bare"),
                                 (f"pg_restore -j{args.jobs}", "jn", "bare"),
                                 (f"drill custom, -j{args.jobs} + row count", "jn_rows", "jn")):
            paired[key] = statistics.median(a / b for a, b in zip(times[key], times[base], strict=True))
            print(f"{label:34s} {m[key]:8.2f}  {m[key] / m[base]:5.2f}x  {paired[key]:5.2f}x  {mc[key]:6.2f}  "
                  f"{mc[key] / mc[base]:5.2f}x  " + " ".join(f"{x:.2f}" for x in times[key]))
        print(f"-Fc drill's rows: {rows_from}")
        print(f"plain drill, {args.jobs} jobs vs bare pg_restore -j{args.jobs} of the same data: "
              f"{m['parallel'] / m['jn']:.2f}x, paired "
              f"{statistics.median(a / b for a, b in zip(times['parallel'], times['jn'], strict=True)):.2f}x")
        print(f"pg_restore -j{args.jobs} vs -j1: {m['jn'] / m['j1']:.2f}x; parallel drill vs serial drill: "
              f"{m['parallel'] / m['serial']:.2f}x; rows counted and restored: {rows}")
        print("restored rows from the load's own COPY counts (no count(*)): "
              + ", ".join(f"{k} {last[k]['tagged'] or 0} of {last[k]['tables']} tables"
                          for k in ("serial", "parallel")))
        print(f"peak RSS of the drill process: serial {last['serial']['rss_mib']:.0f} MiB, parallel "
              f"{last['parallel']['rss_mib']:.0f} MiB (spool peak {last['parallel']['spool_mib']:.0f} MiB on disk)")
    shares = {}
    for jobs in dict.fromkeys((args.jobs, 1)):  # the parallel drill, then the serial one (psql's COPY tags)
        target_file = work / "bench.toml"
        target_file.write_text(f'[database]\ndsn = "host=127.0.0.1 dbname=x user=x"\ndump_role = "x"\n'
                               f'[backups]\ndirectory = "{work}"\npattern = "bench.sql.gz"\n'
                               f'expected_schemas = ["public", "cutter_governance", "sandbox_tac"]\n'
                               f'[drill]\nwork_dir = "{work}"\njobs = {jobs}\nsandbox = "{args.sandbox}"\n')
        facts = run_drill(load_target(target_file))
        assert facts.aborted is None and facts.outcome and not facts.outcome.problems, facts.aborted
        print(f"whole drill, {jobs} jobs (throwaway cluster, restore, catalog, {len(facts.rows)} row counts, "
              f"cleanup): {facts.seconds:.2f} s, of it restore {facts.outcome.seconds:.2f} s, restored rows read "
              f"{facts.row_count_seconds:.2f} s ({facts.rows_restored}); one count(*) per table: {count_star:.2f} s")
        shares[jobs] = facts.row_count_seconds / facts.outcome.seconds, count_star / facts.outcome.seconds
    print("issue 20 ratios (goal):")
    print(f"  plain drill, {args.jobs} jobs vs bare psql:          {m['parallel'] / m['bare']:.2f}x, paired "
          f"{paired['parallel']:.2f}x, CPU {mc['parallel'] / mc['bare']:.2f}x  (<= 0.55x)")
    print(f"  -Fc drill + row count vs bare pg_restore -j{args.jobs}: {m['jn_rows'] / m['jn']:.2f}x, paired "
          f"{paired['jn_rows']:.2f}x, CPU {mc['jn_rows'] / mc['jn']:.2f}x  (<= 1.05x)")
    for jobs, (share, before) in shares.items():
        print(f"  restored row count, {jobs} jobs, share of the restore: {share:.1%}  (<= 10%; one count(*) per "
              f"table: {before:.1%})")
    load.append(os.getloadavg()[0])
    print(f"machine: {os.cpu_count()} cores, 1-min load average during the run "
          f"{min(load):.1f}-{max(load):.1f}")
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
