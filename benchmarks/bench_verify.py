#!/usr/bin/env python3
"""Payload + integrity verification of a .sql.gz: the suite's scanner vs `gzip -t` and `pigz -t`.

Generates realistic `pg_dump | gzip -6` files on the fly (COPY blocks of varied rows, the
header and the footer of a real pg_dump), then times, side by side on the same file:
  - pgbackup_verify.facts.dumps.gzipscan.scan_file (payload bytes, CRC/ISIZE, header, footer)
  - gzip -t, pigz -t (integrity only, what backup scripts usually run)
  - gzip -dc | wc -c (the shell way to get the payload size)
Each runs in its own process; peak RSS comes from wait4()'s ru_maxrss. Medians of --runs.

    python benchmarks/bench_verify.py            # ~10 MB and ~100 MB compressed dumps
    python benchmarks/bench_verify.py --big      # plus one of ~1 GB payload
Goals (issue 6): >= 5x faster than gzip -t, >= 2.5x than pigz -t, < 16 MB RSS, flat with size.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADER = ("--\n-- PostgreSQL database dump\n--\n\n\\restrict benchKEY\n\n"
          "-- Dumped from database version 15.20\n-- Dumped by pg_dump version 15.20\n\n"
          "SET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n\n")
FOOTER = "--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict benchKEY\n\n"
WORDS = ("cutter governance pilot area registry lock workflow admin directus item label note status "
         "active pending archived order invoice customer address street city river station north south "
         "east west report daily nightly backup restore check value amount total price quantity").split()
NULL = "\\N"  # COPY's NULL
STATUSES = ("active", "pending", "archived", "draft", "published")
GNU_TIME = "/usr/bin/time" if Path("/usr/bin/time").is_file() else None
SCANNER = ("import sys, time\nfrom pgbackup_verify.facts.dumps.gzipscan import scan_file\n"
           "t = time.perf_counter(); s = scan_file(sys.argv[1]); e = time.perf_counter() - t\n"
           "assert s.valid and s.footer_found, s\nprint(e, s.payload_bytes)\n")


def _row_pool(rng: random.Random, n: int = 40000) -> list[str]:
    """Distinct rows, sampled later; a large pool keeps repeats outside gzip's 32 KiB window.

    Skewed like application data (few statuses, round amounts, clustered dates), so gzip -6
    shrinks it ~6x, as it did a real 708 MB pg_dump here (118 MB).
    """
    pool = []
    labels = [" ".join(rng.choices(WORDS, k=rng.randint(2, 5))).title() for _ in range(3000)]
    for _ in range(n):
        email = NULL if rng.random() < 0.4 else rng.choice(WORDS) + "@example.org"
        status = STATUSES[min(int(rng.expovariate(1.5)), len(STATUSES) - 1)]
        pool.append(f"{rng.choice(labels)}\t{status}\t{rng.randint(1, 40)}\t{rng.choice((5, 10, 20, 50, 99))}.00\t"
                    f"{email}\t2026-04-{rng.randint(20, 27):02d} 0{rng.randint(0, 9)}:"
                    f"{rng.randint(0, 5)}0:00+00\n")
    return pool


def generate(path: Path, payload_bytes: int, seed: int = 15) -> int:
    """Write a dump of about `payload_bytes` through a real `gzip -6`; return the payload size."""
    rng = random.Random(seed)
    pool = _row_pool(rng)
    written = 0
    with path.open("wb") as out:
        gz = subprocess.Popen(["gzip", "-6"], stdin=subprocess.PIPE, stdout=out)
        assert gz.stdin is not None

        def emit(text: str) -> None:
            nonlocal written
            data = text.encode()
            gz.stdin.write(data)
            written += len(data)

        emit(HEADER)
        table, next_id = 0, 1
        while written < payload_bytes:
            table += 1
            emit(f"CREATE TABLE public.t{table:04d} (id bigint NOT NULL, label text, status text, n integer, "
                 "amount numeric, email text, created timestamptz);\n\n"
                 f"COPY public.t{table:04d} (id, label, status, n, amount, email, created) FROM stdin;\n")
            for _ in range(rng.randint(20, 200)):
                rows = rng.choices(pool, k=500)
                emit("".join(f"{next_id + i}\t{r}" for i, r in enumerate(rows)))
                next_id += 500
            emit("\\.\n\n")
        emit(FOOTER)
        gz.stdin.close()
        if gz.wait() != 0:
            raise SystemExit("gzip failed while generating the benchmark dump")
    return written


def measure(cmd: list[str], work: Path, to_wc: bool = False) -> tuple[float, float, float]:
    """(wall seconds, own seconds, peak RSS in MiB) of one process; the scanner reports its own
    scan time (the suite scans inside its pytest process, so interpreter start-up is not paid per file).

    RSS comes from GNU time: a child spawned straight from this (bigger) Python process would
    have our RSS folded into its ru_maxrss at exec.
    """
    rss_file = work / "rss.txt"
    timed = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *cmd] if GNU_TIME else cmd
    t = time.perf_counter()
    p = subprocess.Popen(timed, stdout=subprocess.PIPE)
    assert p.stdout is not None
    if to_wc:
        wc = subprocess.run(["wc", "-c"], stdin=p.stdout, capture_output=True, check=True)
        out = wc.stdout
    else:
        out = p.stdout.read()
    if p.wait() != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    wall = time.perf_counter() - t
    own = float(out.split()[0]) if cmd[0] == sys.executable else wall
    rss = int(rss_file.read_text().split()[-1]) / 1024 if GNU_TIME else float("nan")
    return wall, own, rss


def bench(path: Path, runs: int, work: Path) -> dict[str, tuple[float, float]]:
    tools = {"gzipscan (isal)": [sys.executable, "-c", SCANNER, str(path)],
             "gzip -t": ["gzip", "-t", str(path)]}
    if shutil.which("pigz"):
        tools["pigz -t"] = ["pigz", "-t", str(path)]
    tools["gzip -dc | wc -c"] = ["gzip", "-dc", str(path)]
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in tools}
    for _ in range(runs):  # interleaved, so page cache and CPU noise hit every tool alike
        for name, cmd in tools.items():
            results[name].append(measure(cmd, work, to_wc=name.endswith("wc -c")))
    table = {k: (statistics.median(own for _, own, _ in v), max(m for _, _, m in v)) for k, v in results.items()}
    scans = results["gzipscan (isal)"]
    table["gzipscan, incl. start-up"] = (statistics.median(w for w, _, _ in scans), max(m for _, _, m in scans))
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--big", action="store_true", help="add a dump of ~1 GB payload")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workdir", type=Path, help="keep generated dumps here and reuse them")
    args = ap.parse_args()
    if not GNU_TIME:
        print("note: GNU time (/usr/bin/time) missing: peak RSS shown as nan (apt-get install time)")
    if not shutil.which("pigz"):
        print("note: pigz not installed (./dev setup installs it); its column is skipped")
    sizes = {"10 MB": 60_000_000, "100 MB": 600_000_000}  # payload; gzip -6 gives ~6x here
    if args.big:
        sizes["1 GB payload"] = 1_100_000_000
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pgbv-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for label, payload in sizes.items():
            path = work / f"bench_{payload}.sql.gz"
            if not path.exists():
                t = time.perf_counter()
                generate(path, payload)
                print(f"generated {path.name} in {time.perf_counter() - t:.1f} s")
            size = path.stat().st_size
            res = bench(path, args.runs, work)
            base = res["gzip -t"][0]
            print(f"\n{label} dump: {size / 1e6:.0f} MB compressed, ~{payload / 1e6:.0f} MB payload, "
                  f"median of {args.runs}")
            print(f"  {'tool':<26}{'seconds':>9}{'vs gzip -t':>12}{'peak RSS':>12}")
            for name, (secs, rss) in res.items():
                print(f"  {name:<26}{secs:>9.3f}{base / secs:>11.1f}x{rss:>9.1f} MiB")
            scan = res["gzipscan (isal)"][0]
            if "pigz -t" in res:
                print(f"  gzipscan vs pigz -t: {res['pigz -t'][0] / scan:.1f}x (goal 2.5x); "
                      f"vs gzip -t: {base / scan:.1f}x (goal 5x)")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
