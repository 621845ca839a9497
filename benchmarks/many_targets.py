"""Two targets in parallel (`-n 2`) against one target and two in a row: wall time of whole runs.

Each target is a seed-shaped host (scripts, crontab, a running throwaway postgres) with a real
offsite archive on an rclone local remote; the PG member is a real `pg_dump | gzip -9` of a database
grown to ROWS extra rows (argv[1]), so the offsite scan has a real payload. Medians of REPEAT runs.

    python benchmarks/many_targets.py [ROWS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from pgbackup_verify_demo import demo, scene

from pgbackup_verify.facts.drill.cluster import ThrowawayCluster

ROWS = 1_500_000
REPEAT = 3
CHECKS = Path(__file__).resolve().parent.parent / "checks"


def run(args: list[str], reports: Path) -> float:
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--reports-dir",
                          str(reports), *args, str(CHECKS)], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"run {args} failed:\n{res.stdout[-3000:]}")
    return elapsed


def main(rows: int = ROWS) -> None:
    with tempfile.TemporaryDirectory(prefix="pgbv-bench-") as tmp, ThrowawayCluster(tag="bench-") as cluster:
        root = Path(tmp)
        dsn = demo.build_seed_database(cluster)
        with psycopg.connect(cluster.dsn(demo.DBNAME), autocommit=True) as conn:
            conn.execute(f"INSERT INTO public.item_01 (label) SELECT md5(g::text) || md5((g * 7)::text) "
                         f"FROM generate_series(1, {rows}) g")
        backups = root / "backups"
        backups.mkdir(mode=0o700)
        demo.write_nightly_dumps(cluster, backups, nights=1)
        dump = next(backups.iterdir())
        targets = root / "targets"
        targets.mkdir()
        for name in ("alpha", "beta"):
            extra = scene.demo_sections(root / name, backups, Path(cluster.executor.datadir))
            demo.write_target_file(targets / f"{name}.toml", dsn, backups, name=name, extra=extra)
        one = ["--target", str(targets / "alpha.toml")]
        two = ["--target", str(targets)]
        cases = {"1 target": one, "2 targets in a row": two, "2 targets, -n 2": [*two, "-n", "2"]}
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(REPEAT):
            for label, args in cases.items():
                times[label].append(run(args, root / "reports"))
        base = statistics.median(times["1 target"])
        print(f"PG member: {dump.stat().st_size / 2**20:.1f} MiB gzip ({rows} extra rows); checks: host + offsite "
              f"(+ any others in checks/); median of {REPEAT} runs")
        for label, ts in times.items():
            med = statistics.median(ts)
            print(f"{label:20s} {med:6.2f} s   {med / base:4.2f}x of 1 target")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else ROWS)
