#!/usr/bin/env python3
"""The whole suite's overhead apart from the restore drill, on the demo target.

Builds the demo target once (no Kuma), then times side by side, medians of --runs:
  - `pgbackup-verify --target demo.toml -m "not drill"`: every check but the drill, whole process
  - `pytest --collect-only` of the same checks: pytest + plugin start-up, the floor of any run
  - `psql -c 'SELECT 1'` against the demo database: one round trip, the shell baseline
Goal (issue 6): the suite without the drill under 3 s on the demo target.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pgbackup_verify_demo import demo

BIN = Path(sys.executable).parent


def timed(cmd: list[str], cwd: Path, runs: int, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t)
        if proc.returncode not in (0, 5):
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pgbv-bench-suite-"))
    d = demo.build(work)
    try:
        target = str(d.target_file)
        checks = ["--target", target, "-m", "not drill", "-q", "-p", "no:cacheprovider"]
        suite = timed([str(BIN / "pgbackup-verify"), *checks], work, args.runs)
        collect = timed([str(BIN / "pgbackup-verify"), *checks, "--collect-only"], work, args.runs)
        psql = timed(["psql", "-X", "-d", d.cluster.dsn(demo.DBNAME, demo.DUMP_ROLE), "-c", "SELECT 1"],
                     work, args.runs)
    finally:
        d.cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'what':58} {'seconds':>8} {'vs psql':>8}")
    for name, sec in (("suite without the drill (every other check, whole process)", suite),
                      ("pytest start-up + collection only", collect),
                      ("psql -c 'SELECT 1' (baseline)", psql)):
        print(f"{name:58} {sec:8.2f} {sec / psql:7.1f}x")
    print(f"checks' own work: {suite - collect:.2f} s; goal: suite under 3 s -> {'met' if suite < 3 else 'MISSED'}")


if __name__ == "__main__":
    main()
