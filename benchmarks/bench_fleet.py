"""200 targets in one run, drill off: serial and `-n auto`, against one target. Wall time, per-target
cost and peak memory (RSS of the whole process tree, sampled every 0.1 s: with xdist, the controller and
every worker together), with `--metrics` on as a fleet would run it.

Every target is the demo host (the seed-shaped database, a week of real dumps, the host scene, the offsite
archive) under its own name: the same checks and the same reads 200 times, so the figure is the suite's
own cost per target, not the data's.

    python benchmarks/bench_fleet.py [TARGETS]
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from pgbackup_verify_demo import demo

TARGETS = 200
CHECKS = Path(__file__).resolve().parent.parent / "checks"
MIB = 1024 * 1024


def peak_tree_rss(proc: subprocess.Popen[str], out: list[int]) -> None:
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(0.1)
    out.append(peak)


def cpu_seconds() -> float:
    """User + system time of every finished child process (pytest, its workers, rclone, shellcheck, psql...);
    less sensitive than wall time to a machine shared with other work."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(label: str, targets: Path, reports: Path, *extra: str) -> tuple[float, float, int, str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not drill", "--target",
           str(targets), "--reports-dir", str(reports), f"--metrics={reports / 'm.prom'}", *extra, str(CHECKS)]
    start, cpu = time.perf_counter(), cpu_seconds()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak: list[int] = []
    sampler = threading.Thread(target=peak_tree_rss, args=(proc, peak))
    sampler.start()
    out, _ = proc.communicate()
    elapsed, used = time.perf_counter() - start, cpu_seconds() - cpu
    sampler.join()
    summary = next((ln for ln in out.splitlines() if ln.startswith("pgbackup-verify: ")), out[-2000:])
    if proc.returncode != 0:
        sys.exit(f"{label}: exit {proc.returncode}\n{out[-3000:]}")
    return elapsed, used, peak[0] if peak else 0, summary


def main(n: int = TARGETS) -> None:
    with tempfile.TemporaryDirectory(prefix="pgbv-bench-fleet-") as tmp:
        root = Path(tmp)
        (root / "demo").mkdir()
        d = demo.build(root / "demo")
        try:
            one, many = root / "one", root / "many"
            one.mkdir()
            many.mkdir()
            text = d.target_file.read_text()
            (one / "db-000.toml").write_text(text.replace('name = "demo"', 'name = "db-000"'))
            for i in range(n):
                (many / f"db-{i:03d}.toml").write_text(text.replace('name = "demo"', f'name = "db-{i:03d}"'))
            load = psutil.getloadavg()[0]
            print(f"{n} targets, drill off, --metrics on; load average {load:.1f} on {psutil.cpu_count()} cores")
            base, base_cpu, base_rss, _ = run("1 target", one, root / "r1")
            print(f"1 target: {base:.1f} s wall, {base_cpu:.1f} s CPU, peak RSS {base_rss / MIB:.0f} MiB")
            for label, extra in ((f"{n} targets serial", ()), (f"{n} targets -n auto", ("-n", "auto"))):
                secs, used, rss, summary = run(label, many, root / label.replace(" ", "_"), *extra)
                print(f"{label}: {secs:.1f} s wall = {secs / n * 1000:.0f} ms per target ({secs / base:.1f}x one "
                      f"target); CPU {used:.1f} s = {used / n * 1000:.0f} ms per target, "
                      f"{(used - base_cpu) / (n - 1) * 1000:.0f} ms each beyond the first; peak RSS "
                      f"{rss / MIB:.0f} MiB ({rss / base_rss:.1f}x one target); load {psutil.getloadavg()[0]:.1f}")
                print(f"  {summary[:160]}")
        finally:
            d.cluster.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else TARGETS)
