#!/usr/bin/env python3
"""Payload + integrity verification of a .sql.gz (.sql.zst, .sql.xz): the suite's scanner vs `gzip -t`,
`pigz -t` (`zstd -t`, `xz -t`).

Generates realistic `pg_dump | gzip -6` files on the fly (COPY blocks of varied rows, the
header and the footer of a real pg_dump), then times, side by side on the same file:
  - pgbackup_verify.facts.dumps.gzipscan.scan_file (payload bytes, CRC/ISIZE, header, footer)
  - gzip -t, pigz -t (integrity only, what backup scripts usually run)
  - gzip -dc | wc -c (the shell way to get the payload size)
The same payload recompressed by the real `zstd` (default level) and `xz` (default -6) is timed
against `zstd -t` and `xz -t` (--formats). Each runs in its own process; peak RSS comes from GNU
time. Medians of --runs.

    python benchmarks/bench_verify.py            # ~10 MB and ~100 MB compressed dumps
    python benchmarks/bench_verify.py --big      # plus one of ~1 GB payload
Goals (issue 6): >= 5x faster than gzip -t, >= 2.5x than pigz -t, < 16 MB RSS, flat with size.
Goals (issue 23): zstd and xz at least as fast as `zstd -t` / `xz -t`, memory flat.
"""

from __future__ import annotations

import argparse
import os
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
# The binding is imported before the clock starts, as in the suite's long-lived process (compression.py
# imports each one when its format is first met).
SCANNER = ("import io, sys, time\nfrom pgbackup_verify.facts.dumps.gzipscan import scan_file\n"
           "from pgbackup_verify.facts.dumps.compression import payload_reader\n"
           "payload_reader(io.BytesIO(), sys.argv[2]).close()\n"
           "t, c = time.perf_counter(), time.process_time(); s = scan_file(sys.argv[1])\n"
           "e, cpu = time.perf_counter() - t, time.process_time() - c\n"
           "assert s.valid and s.footer_found, s\nprint(e, cpu, s.payload_bytes)\n")
# format -> (suffix, command compressing stdin to stdout, the tool's own test)
RECOMPRESS = {"zstd": (".sql.zst", ["zstd", "-q", "-c"], "zstd -t"), "xz": (".sql.xz", ["xz", "-c"], "xz -t")}


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


def measure(cmd: list[str], work: Path, to_wc: bool = False) -> tuple[float, float, float, float]:
    """(wall seconds, own seconds, peak RSS in MiB, own CPU seconds) of one process; the scanner reports
    its own scan time (the suite scans inside its pytest process, so interpreter start-up is not paid
    per file). CPU seconds (user + system) stay meaningful on a machine shared with other jobs, where
    wall time mostly measures the others.

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
    # wait4's rusage counts the child and what it waited for (the tool under GNU time) in microseconds;
    # GNU time's %U %S print hundredths, 10-15% of a 0.07 s `zstd -t`.
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    wall = time.perf_counter() - t
    scanner = cmd[0] == sys.executable
    own = float(out.split()[0]) if scanner else wall
    rss, cpu = float("nan"), usage.ru_utime + usage.ru_stime
    if GNU_TIME:
        rss = int(rss_file.read_text().split()[-1]) / 1024
    if scanner:
        cpu = float(out.split()[1])
    return wall, own, rss, cpu


def recompress(gz: Path, fmt: str) -> Path:
    """The same payload through the real compressor, as `pg_dump | zstd` would have written it."""
    suffix, cmd, _ = RECOMPRESS[fmt]
    out = gz.with_name(gz.name.removesuffix(".sql.gz") + suffix)
    if not out.exists():
        part = out.with_name(out.name + ".part")  # an interrupted run leaves no half file to reuse
        with part.open("wb") as f:
            dc = subprocess.Popen(["gzip", "-dc", str(gz)], stdout=subprocess.PIPE)
            subprocess.run(cmd, stdin=dc.stdout, stdout=f, check=True)
            if dc.wait() != 0:
                raise SystemExit(f"recompressing {gz.name} with {fmt} failed")
        part.rename(out)
    return out


def tools_for(path: Path, fmt: str) -> tuple[str, dict[str, list[str]]]:
    """(the scanner's row name, tool -> command) for one file."""
    if fmt == "gzip":
        tools = {"gzipscan (isal)": [sys.executable, "-c", SCANNER, str(path), fmt],
                 "gzip -t": ["gzip", "-t", str(path)]}
        if shutil.which("pigz"):
            tools["pigz -t"] = ["pigz", "-t", str(path)]
        tools["gzip -dc | wc -c"] = ["gzip", "-dc", str(path)]
        return "gzipscan (isal)", tools
    test = RECOMPRESS[fmt][2]
    scan = f"scan ({'zstandard' if fmt == 'zstd' else 'lzma'})"
    return scan, {scan: [sys.executable, "-c", SCANNER, str(path), fmt], test: [fmt, "-q", "-t", str(path)],
                  f"{fmt} -dc | wc -c": [fmt, "-dc", str(path)]}


def bench(path: Path, runs: int, work: Path, fmt: str = "gzip") -> dict[str, tuple[float, float, float]]:
    """tool -> (median seconds, peak RSS MiB, median CPU seconds)."""
    scan_name, tools = tools_for(path, fmt)
    results: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in tools}
    for _ in range(runs):  # interleaved, so page cache and CPU noise hit every tool alike
        for name, cmd in tools.items():
            results[name].append(measure(cmd, work, to_wc=name.endswith("wc -c")))
    table = {k: (statistics.median(r[1] for r in v), max(r[2] for r in v), statistics.median(r[3] for r in v))
             for k, v in results.items()}
    scans = results[scan_name]
    table["scan, incl. start-up"] = (statistics.median(r[0] for r in scans), max(r[2] for r in scans), float("nan"))
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--big", action="store_true", help="add a dump of ~1 GB payload")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workdir", type=Path, help="keep generated dumps here and reuse them")
    ap.add_argument("--formats", default="gzip,zstd,xz", help="which compressors to time (default: %(default)s)")
    ap.add_argument("--sizes", default="10 MB,100 MB", help="which dump sizes (default: %(default)s; `xz -6` "
                    "of the 600 MB payload takes minutes on a loaded machine)")
    args = ap.parse_args()
    if not GNU_TIME:
        print("note: GNU time (/usr/bin/time) missing: peak RSS shown as nan (apt-get install time)")
    if not shutil.which("pigz"):
        print("note: pigz not installed (./dev setup installs it); its column is skipped")
    sizes = {"10 MB": 60_000_000, "100 MB": 600_000_000}  # payload; gzip -6 gives ~6x here
    sizes = {k: v for k, v in sizes.items() if k in args.sizes.split(",")}
    if args.big:
        sizes["1 GB payload"] = 1_100_000_000
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pgbv-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average at the start: {_load()}")
    try:
        for label, payload in sizes.items():
            path = work / f"bench_{payload}.sql.gz"
            if not path.exists():
                t = time.perf_counter()
                generate(path, payload)
                print(f"generated {path.name} in {time.perf_counter() - t:.1f} s")
            for fmt in args.formats.split(","):
                report(label, payload, path if fmt == "gzip" else recompress(path, fmt), fmt, args.runs, work)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average at the end: {_load()}")
    return 0


def _load() -> str:
    """The 1/5/15-minute load: on a shared machine wall seconds measure the other jobs as much as ours."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def report(label: str, payload: int, path: Path, fmt: str, runs: int, work: Path) -> None:
    res = bench(path, runs, work, fmt)
    test = "gzip -t" if fmt == "gzip" else RECOMPRESS[fmt][2]
    base, base_cpu = res[test][0], res[test][2]
    print(f"\n{label} dump, {fmt}: {path.stat().st_size / 1e6:.0f} MB compressed, ~{payload / 1e6:.0f} MB payload, "
          f"median of {runs}")
    print(f"  {'tool':<26}{'seconds':>9}{f'vs {test}':>12}{'peak RSS':>12}{'CPU s':>8}{'CPU vs':>8}")
    for name, (secs, rss, cpu) in res.items():
        print(f"  {name:<26}{secs:>9.3f}{base / secs:>11.1f}x{rss:>9.1f} MiB{cpu:>8.3f}{base_cpu / cpu:>7.2f}x")
    scan, scan_cpu = next(iter(res.values()))[0], next(iter(res.values()))[2]
    if "pigz -t" in res:
        print(f"  gzipscan vs pigz -t: {res['pigz -t'][0] / scan:.1f}x (goal 2.5x); "
              f"vs gzip -t: {base / scan:.1f}x (goal 5x)")
    elif fmt != "gzip":
        print(f"  scan vs {test}: {base / scan:.2f}x wall, {base_cpu / scan_cpu:.2f}x CPU (goal >= 1x)")


if __name__ == "__main__":
    sys.exit(main())
