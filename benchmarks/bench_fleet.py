"""200 targets in one run, drill off or a schema-tier drill: serial and `-n auto`, against one target.
Wall time, per-target cost and peak memory (RSS of the whole process tree, sampled every 0.1 s: with xdist,
the controller and every worker together), with `--metrics` on as a fleet would run it.

Every target is the demo host (the seed-shaped database, a week of real dumps, the host scene, the offsite
archive) under its own name: the same checks and the same reads 200 times, so the figure is the suite's
own cost per target, not the data's.

`--drill schema` adds `[drill] tier = "schema"` to every target (the sandboxed throwaway cluster, the
dump's pre- and post-data restored, no table data) and runs the drill checks too, all but the age of the
last passing full drill (a fresh fleet's history has none); the drill's own time per target is read back
from the run history (`drill_seconds`).

    python benchmarks/bench_fleet.py [TARGETS] [--drill off|schema] [--modes serial,auto]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
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


def peak_tree_rss(proc: subprocess.Popen[str], out: list[int], cpu: dict[tuple[int, float], float]) -> None:
    """Peak RSS of the tree into `out`; into `cpu`, each process's own CPU seconds as last seen (pid and
    start time as its key). The sampled CPU sees what rusage cannot: the sandboxed drill server, whose
    processes end with their pid namespace and are never waited for by the run."""
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            total = 0
            for p in procs:
                try:
                    with p.oneshot():
                        total += p.memory_info().rss
                        t = p.cpu_times()
                        cpu[(p.pid, p.create_time())] = t.user + t.system
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


def drill_seconds(reports: Path) -> list[float]:
    """Each target's drill time (the fixture's `drill_seconds`, as the history keeps it)."""
    history = reports / "history.jsonl"
    if not history.exists():
        return []
    return [float(rec["facts"]["drill_seconds"]) for rec in map(json.loads, history.read_text().splitlines())
            if "drill_seconds" in rec.get("facts", {})]


def run(label: str, targets: Path, reports: Path, drill: bool, *extra: str) -> tuple[float, float, int, str, float]:
    # A fresh fleet has no passing full drill in its history: the check of its age would fail every target.
    select = ("-k", "not last_full_drill_is_recent_enough") if drill else ("-m", "not drill")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *select, "--target",
           str(targets), "--reports-dir", str(reports), f"--metrics={reports / 'm.prom'}", *extra, str(CHECKS)]
    start, cpu = time.perf_counter(), cpu_seconds()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak: list[int] = []
    sampled: dict[tuple[int, float], float] = {}
    sampler = threading.Thread(target=peak_tree_rss, args=(proc, peak, sampled))
    sampler.start()
    out, _ = proc.communicate()
    elapsed, used = time.perf_counter() - start, cpu_seconds() - cpu
    sampler.join()
    summary = next((ln for ln in out.splitlines() if ln.startswith("pgbackup-verify: ")), out[-2000:])
    if proc.returncode != 0:
        failed = "\n".join(ln for ln in out.splitlines() if ln.startswith(("FAILED", "ERROR", "E ")))
        sys.exit(f"{label}: exit {proc.returncode}\n{failed[-6000:] or out[-3000:]}")
    return elapsed, used, peak[0] if peak else 0, summary, sum(sampled.values())


def drill_section(work_dir: Path) -> str:
    """The schema tier, its clusters in a work dir of this bench's own: a drill cluster of any other
    process in the system temp dir would be a leftover to every drill here (and fail its check)."""
    return f'\n[drill]\ntier = "schema"\nwork_dir = "{work_dir}"\n'


def drill_note(reports: Path) -> str:
    secs = drill_seconds(reports)
    if not secs:
        return ""
    return (f"; drill {len(secs)} targets, median {statistics.median(secs):.2f} s, max {max(secs):.2f} s, "
            f"sum {sum(secs):.0f} s")


def main(n: int = TARGETS, drill: str = "off", modes: tuple[str, ...] = ("serial", "auto")) -> None:
    with tempfile.TemporaryDirectory(prefix="pgbv-bench-fleet-") as tmp:
        root = Path(tmp)
        (root / "demo").mkdir()
        d = demo.build(root / "demo")
        try:
            one, many = root / "one", root / "many"
            one.mkdir()
            many.mkdir()
            work = root / "drill-work"
            work.mkdir()
            for p in (root, work):  # the drill's unnamed uid passes through to its cluster dir, lists nothing
                p.chmod(0o711)
            text = d.target_file.read_text() + (drill_section(work) if drill == "schema" else "")
            (one / "db-000.toml").write_text(text.replace('name = "demo"', 'name = "db-000"'))
            for i in range(n):
                (many / f"db-{i:03d}.toml").write_text(text.replace('name = "demo"', f'name = "db-{i:03d}"'))
            load = psutil.getloadavg()[0]
            print(f"{n} targets, drill {drill}, --metrics on; load average {load:.1f} on {psutil.cpu_count()} cores")
            base, base_cpu, base_rss, _, base_tree = run("1 target", one, root / "r1", drill != "off")
            print(f"1 target: {base:.1f} s wall, {base_cpu:.1f} s CPU (sampled tree {base_tree:.1f} s), peak RSS "
                  f"{base_rss / MIB:.0f} MiB"
                  f"{drill_note(root / 'r1')}; load {psutil.getloadavg()[0]:.1f}")
            cases = {"serial": (f"{n} targets serial", ()), "auto": (f"{n} targets -n auto", ("-n", "auto"))}
            for label, extra in (cases[m] for m in modes):
                reports = root / label.replace(" ", "_")
                secs, used, rss, summary, tree = run(label, many, reports, drill != "off", *extra)
                print(f"{label}: {secs:.1f} s wall = {secs / n * 1000:.0f} ms per target ({secs / base:.1f}x one "
                      f"target); CPU {used:.1f} s = {used / n * 1000:.0f} ms per target, "
                      f"{(used - base_cpu) / (n - 1) * 1000:.0f} ms each beyond the first; sampled tree CPU "
                      f"{tree:.1f} s = {tree / n * 1000:.0f} ms per target; peak RSS "
                      f"{rss / MIB:.0f} MiB ({rss / base_rss:.1f}x one target); load {psutil.getloadavg()[0]:.1f}"
                      f"{drill_note(reports)}")
                print(f"  {summary[:160]}")
        finally:
            d.cluster.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="?", type=int, default=TARGETS)
    parser.add_argument("--drill", choices=("off", "schema"), default="off")
    parser.add_argument("--modes", default="serial,auto", help="serial, auto or both (comma-separated)")
    args = parser.parse_args()
    main(args.targets, args.drill, tuple(m for m in args.modes.split(",") if m in ("serial", "auto")))
