#!/usr/bin/env python3
"""The daily run's cost grows with what is new, not with what is kept: the scan record (issue 25).

Writes 30 nights of large `pg_dump | gzip -6` style dumps (bench_verify's generator, one file per
night, each its own inode), then times the dump checks alone (`pgbackup-verify -m dumps`, whole
process, peak RSS from GNU time), medians of --runs:
  - retention_days = min_good_dumps = 1, no scan record yet: the newest dump and the previous good
    one read (the baseline of issue 25)
  - retention_days = min_good_dumps = 30, first run: all 30 dumps read, the record written
  - the same, second and later runs: the newest dump read, 29 verdicts from the record
Goal: the second run with 30 nights within 1.3x of the run with 1 night; peak memory flat.

    python benchmarks/bench_rescan.py                  # 30 x ~200 MB payload (~35 MB gzip each)
    python benchmarks/bench_rescan.py --payload-mb 600 # the issue's size (~100 MB gzip each, ~3 GB disk)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_verify import GNU_TIME, generate

BIN = Path(sys.executable).parent
NIGHTS = 30
TARGET = """[target]
name = "rescan"

[database]
dsn = "host=/nonexistent dbname=none"
dump_role = "none"

[backups]
directory = "{backups}"
pattern = "db_*.sql.gz"
max_age_hours = 26
min_payload_bytes = 10000
retention_days = {nights}
min_good_dumps = {nights}
"""


def run(target: Path, reports: Path, work: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one `pgbackup-verify -m dumps` process."""
    rss_file = work / "rss.txt"
    cmd = [str(BIN / "pgbackup-verify"), "--target", str(target), "-m", "dumps", "--reports-dir", str(reports),
           "-q", "-p", "no:cacheprovider"]
    timed = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *cmd] if GNU_TIME else cmd
    t = time.perf_counter()
    proc = subprocess.run(timed, cwd=work, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"the dump checks failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    rss = int(rss_file.read_text().split()[-1]) / 1024 if GNU_TIME else float("nan")
    return wall, rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--payload-mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, help="keep the generated dumps here and reuse them")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pgbv-bench-rescan-"))
    backups = work / "backups"
    backups.mkdir(parents=True, exist_ok=True)
    try:
        seed = work / f"seed_{args.payload_mb}.sql.gz"
        if not seed.exists():
            t = time.perf_counter()
            generate(seed, args.payload_mb * 1_000_000)
            print(f"generated {seed.name} ({seed.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s")
        now = time.time()
        for night in range(NIGHTS):  # newest ~1 h old, one a night before; each file a copy of its own
            path = backups / f"db_{night:02d}.sql.gz"
            if not path.exists() or path.stat().st_size != seed.stat().st_size:
                shutil.copyfile(seed, path)
            ts = now - 3600 - (NIGHTS - 1 - night) * 86400
            os.utime(path, (ts, ts))
        targets = {}
        for nights in (1, NIGHTS):
            targets[nights] = work / f"t{nights}.toml"
            targets[nights].write_text(TARGET.format(backups=backups, nights=nights))

        def fresh_reports(tag: str) -> Path:
            d = work / f"reports-{tag}"
            shutil.rmtree(d, ignore_errors=True)
            return d

        one = [run(targets[1], fresh_reports(f"one{i}"), work) for i in range(args.runs)]
        first = [run(targets[NIGHTS], fresh_reports(f"first{i}"), work) for i in range(args.runs)]
        kept = work / f"reports-first{args.runs - 1}"  # the record the last first run wrote
        second = [run(targets[NIGHTS], kept, work) for _ in range(args.runs)]
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    size = seed.stat().st_size if seed.exists() else 0
    base = statistics.median(w for w, _ in one)
    print(f"\n{NIGHTS} nights of ~{args.payload_mb} MB payload ({size / 1e6:.0f} MB gzip each), "
          f"`-m dumps`, whole process, median of {args.runs}; load {os.getloadavg()[0]:.1f}")
    print(f"  {'run':<52}{'seconds':>9}{'vs 1 night':>12}{'peak RSS':>12}")
    for name, rows in (("retention 1 night (no record)", one),
                       (f"retention {NIGHTS} nights, first run (reads all)", first),
                       (f"retention {NIGHTS} nights, second run (scan record)", second)):
        wall = statistics.median(w for w, _ in rows)
        print(f"  {name:<52}{wall:>9.2f}{wall / base:>11.2f}x{max(m for _, m in rows):>9.1f} MiB")
    ratio = statistics.median(w for w, _ in second) / base
    print(f"second run vs 1 night: {ratio:.2f}x (goal <= 1.3x) -> {'met' if ratio <= 1.3 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
