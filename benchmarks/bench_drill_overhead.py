#!/usr/bin/env python3
"""The restore drill's own cost, apart from the restore, on the demo target (issue 13 item 2).

Builds the demo target once, then runs the drill --runs times in this process and prints, per
run and as medians: the whole drill, the restore step, and the rest (lock, sweep, throwaway
cluster from the cached template, catalog reads, row and large-object counts, cleanup), with
the same figure for a bare `initdb` as the floor the template replaces.
Goal: whole drill minus restore <= 1.5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from pgbackup_verify_demo import demo

from pgbackup_verify.config import load_target
from pgbackup_verify.facts.drill.cluster import pg_bindir
from pgbackup_verify.facts.drill.run import run_drill


def initdb_seconds() -> float:
    """One bare initdb (what every drill paid before the cached template), as the cluster's user would."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        cmd = [str(pg_bindir() / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]
        if os.geteuid() == 0:  # initdb refuses root
            os.chmod(tmp, 0o777)
            cmd = ["runuser", "-u", "nobody", "--", *cmd]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-drill-overhead-") as tmp:
        d = demo.build(Path(tmp))
        try:
            target = load_target(d.target_file)
            rest, restore, whole = [], [], []
            for i in range(args.runs):
                f = run_drill(target)
                assert f.outcome is not None and not f.outcome.problems, f.outcome and f.outcome.problems
                whole.append(f.seconds)
                restore.append(f.outcome.seconds)
                rest.append(f.seconds - f.outcome.seconds)
                print(f"run {i + 1}: drill {f.seconds:.2f} s = restore {f.outcome.seconds:.2f} s "
                      f"+ the rest {rest[-1]:.2f} s")
        finally:
            d.cluster.stop()
    floor = initdb_seconds()
    print(f"median of {args.runs}: drill {statistics.median(whole):.2f} s, restore {statistics.median(restore):.2f} s, "
          f"drill minus restore {statistics.median(rest):.2f} s (goal <= 1.5 s: "
          f"{'met' if statistics.median(rest) <= 1.5 else 'MISSED'}); a bare initdb alone: {floor:.2f} s; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
