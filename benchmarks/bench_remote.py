#!/usr/bin/env python3
"""A dump read over SSH: the suite's remote scan (testinfra's ssh backend, chunked `dd`) vs `ssh host cat FILE`.

Starts a real OpenSSH server on a free loopback port (tests/sshd.py: own host key, own login user, the dump
in a tmpfs only the server's mount namespace sees), writes a realistic `pg_dump | gzip -6` file there
(bench_verify.generate), then times side by side, interleaved, medians of --runs:
  - `ssh host cat FILE > /dev/null`: the transport alone, one connection, nothing verified
  - the remote scan: facts.dumps.remote.scan_remote over facts.remote.open_host (the connection set up
    first, as the suite's backup_host fixture does), payload + gzip to the end + header/footer
  - the local scan of the same file (gzipscan.scan_file), the floor of the verification itself
Peak RSS of the remote scan's process comes from GNU time. Needs root (sshd, a login user, a namespace).

    python benchmarks/bench_remote.py                  # ~100 MB compressed dump (~600 MB payload)
    python benchmarks/bench_remote.py --payload-mb 60  # smaller
    python benchmarks/bench_remote.py --suite          # the whole suite on the demo target, local vs ssh://
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

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import bench_verify  # noqa: E402  (a sibling script, not a package)
import sshd  # noqa: E402

REMOTE_SCAN = """import sys, time
from pathlib import Path
from pgbackup_verify.facts import remote
from pgbackup_verify.facts.dumps.inventory import DumpFile
from pgbackup_verify.facts.dumps.remote import scan_remote
spec, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
host = remote.open_host(spec)
t = time.perf_counter(); s = scan_remote(host.host, DumpFile(Path(path), size, 0.0)); e = time.perf_counter() - t
host.close()
assert s.valid and s.footer_found, s
print(e, s.payload_bytes)
"""


def suite(root: Path, runs: int) -> None:
    """The whole suite on the demo target (drill included), local vs the same target over ssh://."""
    from pgbackup_verify_demo import demo

    from pgbackup_verify.config import load_target

    (root / "demo").mkdir()
    d = demo.build(root / "demo")
    server = None
    try:
        backups = load_target(d.target_file).backups.directory
        for p in (root / "demo", *backups.parents):  # the SSH login must reach the dumps
            if p.is_relative_to(root / "demo"):
                p.chmod(p.stat().st_mode | 0o755)
        subprocess.run(["chown", "-R", f"{sshd.LOGIN}:", str(backups)], check=True)
        (root / "empty").mkdir()
        server = sshd.start(root / "sshd", root / "remote", root / "empty")
        text = d.target_file.read_text()
        remote_target = d.target_file.with_name("demo-remote.toml")
        remote_target.write_text(text.replace("[target]\n", f'[target]\nhost = "{server.spec()}"\n', 1))
        cli = str(Path(sys.executable).parent / "pgbackup-verify")
        times: dict[str, list[float]] = {"local": [], "remote (ssh://)": []}
        for _ in range(runs):
            for name, t in (("local", d.target_file), ("remote (ssh://)", remote_target)):
                start = time.perf_counter()
                proc = subprocess.run([cli, "--target", str(t), "-q", "-p", "no:cacheprovider"], cwd=root,
                                      capture_output=True, text=True, check=False)
                times[name].append(time.perf_counter() - start)
                if proc.returncode != 0:
                    raise SystemExit(f"{name} run exited {proc.returncode}:\n{proc.stdout[-3000:]}")
        base = statistics.median(times["local"])
        print(f"whole suite on the demo target (drill included), medians of {runs}:")
        for name, values in times.items():
            print(f"  {name:18s} {statistics.median(values):6.2f} s  {statistics.median(values) / base:5.2f}x")
    finally:
        if server is not None:
            server.stop()
        d.cluster.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--payload-mb", type=int, default=600)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--suite", action="store_true", help="time the whole suite on the demo target instead")
    args = ap.parse_args()
    why = sshd.available()
    if why:
        print(f"bench_remote: skipped ({why})")
        return 0
    created = sshd.ensure_login_user()
    if args.suite:
        root = Path(tempfile.mkdtemp(prefix="pgbv-bench-remote-"))
        root.chmod(0o755)
        try:
            suite(root, args.runs)
        finally:
            sshd.teardown(None, root, created)
        return 0
    root = Path(tempfile.mkdtemp(prefix="pgbv-bench-remote-"))
    root.chmod(0o755)
    server = None
    try:
        stage = root / "stage"
        stage.mkdir()
        dump = stage / "bench.sql.gz"
        payload = bench_verify.generate(dump, args.payload_mb << 20)
        size = dump.stat().st_size
        shutil.chown(dump, sshd.LOGIN)
        hidden = root / "remote"
        server = sshd.start(root / "sshd", hidden, stage)
        remote_path = str(hidden / dump.name)
        cat = ["ssh", "-F", str(server.home / "ssh_config"), "-p", str(server.port), f"{sshd.LOGIN}@127.0.0.1",
               f"cat {remote_path}"]
        times: dict[str, list[float]] = {"ssh cat FILE > /dev/null": [], "remote scan (suite)": [],
                                         "local scan (same file)": []}
        rss = 0.0
        for _ in range(args.runs):
            t = time.perf_counter()
            subprocess.run(cat, stdout=subprocess.DEVNULL, check=True)
            times["ssh cat FILE > /dev/null"].append(time.perf_counter() - t)
            _, own, mem = bench_verify.measure([sys.executable, "-c", REMOTE_SCAN, server.spec(), remote_path,
                                                str(size)], root)
            times["remote scan (suite)"].append(own)
            rss = max(rss, mem)
            _, own, _ = bench_verify.measure([sys.executable, "-c", bench_verify.SCANNER, str(dump)], root)
            times["local scan (same file)"].append(own)
        base = statistics.median(times["ssh cat FILE > /dev/null"])
        print(f"dump: {size / 1e6:.0f} MB compressed, {payload / 1e6:.0f} MB payload; medians of {args.runs}")
        for name, values in times.items():
            med = statistics.median(values)
            print(f"  {name:28s} {med:6.2f} s  {size / 1e6 / med:6.0f} MB/s  {med / base:5.2f}x of ssh cat")
        print(f"  remote scan peak RSS: {rss:.1f} MiB")
    finally:
        sshd.teardown(server, root, created)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
