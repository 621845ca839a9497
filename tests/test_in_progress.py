"""A dump still being written is "in progress", and the newest complete dump is judged instead.

The writer is a real `pg_dump | slow pipe | gzip -9 > file` kept running while the shipped checks
run: the slow pipe has passed all but the end of pg_dump's output (of a second, larger database in
the same directory), so the file holds a gzip stream cut short, exactly what a check run at 02:03
sees of a job started at 02:00. The same pipeline killed (a job that died) leaves the same kind of
file, and that one IS judged: truncated.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from as_nobody import probe, run_as_nobody
from checkrun import ChecksRun, run_checks
from pgbackup_verify_demo import demo

from pgbackup_verify.config import load_target
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.dumps import inventory as dumps
from pgbackup_verify.facts.dumps import progress

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_dumps.py"
NAME = "directus_9999-12-31_0200.sql.gz"
# All of pg_dump's output but its last 300 bytes (the footer), then nothing until killed.
THROTTLE = ("import sys, time; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d[:-300]); "
            "sys.stdout.flush(); time.sleep(600)")


BIG_DB = "in_progress"


@pytest.fixture(scope="module")
def big_db(cluster: ThrowawayCluster) -> str:
    """A database whose dump compresses to ~2 MB: gzip writes its first blocks long before the end
    (the seed's 19 kB would stay in gzip's buffers until exit, leaving a 0-byte file)."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {BIG_DB}")
    with psycopg.connect(cluster.dsn(BIG_DB), autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 60000) g")
    return BIG_DB


def start_dump(cluster: ThrowawayCluster, db: str, path: Path) -> subprocess.Popen[bytes]:
    env = {**cluster.env(), "OUT": str(path), "PY": sys.executable, "SLOW": THROTTLE}
    proc = subprocess.Popen(["bash", "-c", f'pg_dump --no-owner --no-acl -d {db} | "$PY" -c "$SLOW" '
                             '| gzip -9 > "$OUT"'], env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (path.exists() and path.stat().st_size > 100_000):
        time.sleep(0.05)
    assert path.exists() and path.stat().st_size > 100_000, "the writer did not get going"
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole pipeline, as an OOM kill or a reboot would
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def in_progress_run(seed_cluster: ThrowawayCluster, healthy_backups: Path, cluster: ThrowawayCluster,
                    big_db: str, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[tuple[ChecksRun, dict[str, Path]]]:
    root = tmp_path_factory.mktemp("in-progress")
    dsn = seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
    dirs = {"live": root / "live", "killed": root / "killed", "only-live": root / "only-live"}
    shutil.copytree(healthy_backups, dirs["live"])
    shutil.copytree(healthy_backups, dirs["killed"])
    dirs["only-live"].mkdir()
    live = [start_dump(cluster, big_db, dirs["live"] / NAME), start_dump(cluster, big_db, dirs["only-live"] / NAME)]
    try:
        killed = start_dump(cluster, big_db, dirs["killed"] / NAME)
        stop(killed)
        targets = [demo.write_target_file(root / f"{k}.toml", dsn, d, name=k) for k, d in dirs.items()]
        run = run_checks(root / "run", targets, [CHECKS])
        for p in live:
            assert p.poll() is None, "the writer ended before the checks did: the case proves nothing"
        yield run, dirs
    finally:
        for p in live:
            stop(p)


def test_a_dump_being_written_is_in_progress_and_the_previous_one_is_judged(
        in_progress_run: tuple[ChecksRun, dict[str, Path]]) -> None:
    run, _ = in_progress_run
    live = run["live"]
    live.assert_outcomes(passed=8, skipped=1)  # every check but the custom-format TOC (no -Fc here)
    live.fnmatch_line(f"in progress (not judged): {NAME} (* bytes so far, last written *; "
                      "open for writing by pid * (gzip))")
    live.fnmatch_line("file: */live/directus_20*_0200.sql.gz (*")  # the newest COMPLETE dump
    live.fnmatch_line(f"in progress (not strays): {NAME} (*")
    assert "truncated" not in live.text and "shrank" not in live.text


def test_the_same_file_left_by_a_killed_job_is_judged_truncated(
        in_progress_run: tuple[ChecksRun, dict[str, Path]]) -> None:
    run, _ = in_progress_run
    killed = run["killed"]
    # One fault, one red line: the gzip check owns the cut file; header/footer is not judged, naming it.
    assert "test_latest_dump_gzip_stream_is_valid" in killed.failed(), killed.text
    [footer] = killed.select("header_and_footer")
    assert footer["message"].startswith("not judged: latest dump gzip stream: FAILED"), killed.text
    killed.fnmatch_line(f"latest dump gzip stream: FAILED ({NAME}: gzip stream ends early at byte * (file truncated))*")
    assert "in progress" not in killed.text


def test_only_a_dump_in_progress_is_no_complete_dump(in_progress_run: tuple[ChecksRun, dict[str, Path]]) -> None:
    run, _ = in_progress_run
    only = run["only-live"]
    only.fnmatch_line(f"latest dump: FAILED (no complete file matching 'directus_*.sql.gz' in */only-live: only "
                      f"{NAME} (*open for writing by pid * (gzip))); fix: wait for the backup job to finish and "
                      "run the checks again; if it has been running for hours, look for a hung pg_dump*")
    assert "truncated" not in only.text


@pytest.fixture
def growing() -> Iterator[Path]:
    """A file a root process appends to every 50 ms, in a directory every user may read."""
    d = Path(tempfile.mkdtemp(prefix="pgbv-growing-"))
    os.chmod(d, 0o755)
    f = d / NAME
    proc = subprocess.Popen(["bash", "-c", 'while :; do echo "-- still dumping"; sleep 0.05; done > "$0"', str(f)],
                            start_new_session=True)
    try:
        while not f.exists() or f.stat().st_size == 0:
            time.sleep(0.02)
        f.chmod(0o644)
        yield f
    finally:
        stop(proc)
        shutil.rmtree(d, ignore_errors=True)


def test_a_growing_file_is_in_progress_even_where_its_writer_is_invisible(growing: Path) -> None:
    """As root the writer's open fd is seen; as `nobody` it is not (/proc/<pid>/fd of root's
    processes is closed to it), and the re-stat after a short pause sees the file grow."""
    # In the growing file's directory: pytest's tmp_path is closed to other users.
    t = demo.write_target_file(growing.parent / "t.toml", "host=127.0.0.1 dbname=x user=x", growing.parent)
    inv = dumps.take_inventory(load_target(t).backups)
    assert [p.why for p in inv.in_progress] == [inv.in_progress[0].why] and inv.dumps == ()
    assert inv.in_progress[0].why.startswith("open for writing by pid "), inv.in_progress
    assert inv.in_progress[0].why.endswith(" (bash)")  # the loop's shell holds `> file`
    # Where there is no /proc, psutil's own reading finds the same writer.
    assert progress._open_for_writing_psutil({str(growing.resolve()): growing}) == {growing: inv.in_progress[0].why}

    python, why = probe(growing.parent)
    if python is None:
        pytest.skip(why)
    t.chmod(0o644)
    res = run_as_nobody(python, "import json; from pgbackup_verify.config import load_target; "
                        "from pgbackup_verify.facts.dumps.inventory import take_inventory; "
                        f"inv = take_inventory(load_target({str(t)!r}).backups); "
                        "print(json.dumps([[p.name, p.why] for p in inv.in_progress] + [len(inv.dumps)]))",
                        growing.parent)
    assert res.returncode == 0, res.stderr
    [[name, grew], complete] = json.loads(res.stdout)
    assert name == NAME and complete == 0
    assert grew.startswith("grew from ") and grew.endswith(" bytes in 1 s"), grew
