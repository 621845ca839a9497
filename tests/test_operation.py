"""Daily operation: summary line, JSON, report rotation, the run lock and one-line user errors."""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

import pytest
from checkrun import run_sql_check as run
from pgbackup_verify_demo import demo

from pgbackup_verify.facts.drill.cluster import ThrowawayCluster


def test_green_run_writes_reports_summary_line_and_json(pytester: pytest.Pytester, target_file: Path) -> None:
    result = run(pytester, "--target", str(target_file), "--json", "out.json")
    result.assert_outcomes(passed=1)
    reports = pytester.path / "reports"
    result.stdout.fnmatch_lines(["pgbackup-verify: OK targets=t failed=0 error=0 skipped=0 passed=1 exit=0 *"
                                 f"report={reports / 'latest.html'}"])
    assert {p.name for p in reports.glob("latest.*")} == {"latest.html", "latest.xml", "latest.json"}
    doc = json.loads((pytester.path / "out.json").read_text())
    assert doc["status"] == "OK" and doc["counts"]["passed"] == 1
    assert doc["checks"][0]["target"] == "t" and doc["checks"][0]["concern"] == "sql"
    html = (reports / "latest.html").read_text()
    assert "Backup health: OK" in html and "pgbv-concerns" in html


def test_rotation_keeps_the_last_n_runs(pytester: pytest.Pytester, target_file: Path) -> None:
    reports = pytester.path / "reports"
    reports.mkdir()
    for i in range(5):
        for ext in ("html", "xml", "json"):
            (reports / f"pgbackup-verify-20200101T00000{i}.{ext}").write_text("old")
    run(pytester, "--target", str(target_file), "--keep-reports", "2").assert_outcomes(passed=1)
    stamps = sorted({p.name.split(".")[0] for p in reports.glob("pgbackup-verify-*")})
    assert len(stamps) == 2 and stamps[0] == "pgbackup-verify-20200101T000004"
    assert (reports / "latest.html").exists()


def test_bad_keep_reports_names_its_source(pytester: pytest.Pytester, target_file: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGBACKUP_VERIFY_KEEP_REPORTS", "3x")
    result = run(pytester, "--target", str(target_file))
    assert result.ret == 4
    assert "invalid keep-reports '3x' from env PGBACKUP_VERIFY_KEEP_REPORTS; use a whole number >= 1" in \
        result.stderr.str()


def test_overlapping_run_is_refused_with_exit_14(pytester: pytest.Pytester, target_file: Path, tmp_path: Path) -> None:
    lock = tmp_path / "pgbv.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    os.write(fd, b"4242")
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        result = run(pytester, "--target", str(target_file), "--lock", str(lock))
    finally:
        os.close(fd)
    assert result.ret == 14
    assert f"lock '{lock}' is held by another pgbackup-verify run (pid 4242)" in result.stderr.str()
    assert not (pytester.path / "reports").exists()
    run(pytester, "--target", str(target_file), "--lock", str(lock)).assert_outcomes(passed=1)


def test_unreachable_database_is_one_line_and_exit_10(pytester: pytest.Pytester, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    t = demo.write_target_file(tmp_path / "t.toml", "host=127.0.0.1 port=1 dbname=x user=y connect_timeout=2",
                               tmp_path / "b", name="t")
    result = run(pytester, "--target", str(t), "--json", "out.json")
    assert result.ret == 10
    result.stdout.fnmatch_lines(["DatabaseUnreachable: database 127.0.0.1:1/x as y of target 't' is unreachable*"
                                 "check ?database?.dsn and that the server runs"])
    assert "Traceback" not in result.stdout.str()
    # The check could not look (its fixture hit the user error): one error, the same in every output.
    result.stdout.fnmatch_lines(["pgbackup-verify target t: FAILED (1 error)",
                                 "pgbackup-verify: FAILED targets=t failed=0 error=1 skipped=0 passed=0 exit=10 *"])
    doc = json.loads((pytester.path / "out.json").read_text())
    assert (doc["status"], doc["exit_status"], doc["checks"][0]["outcome"], doc["checks"][0]["kind"]) == \
        ("FAILED", 10, "error", "setup")
    assert doc["checks"][0]["message"].startswith("DatabaseUnreachable: database 127.0.0.1:1/x as y")


def test_refused_login_is_exit_11_without_the_password(pytester: pytest.Pytester, tmp_path: Path,
                                                       cluster: ThrowawayCluster) -> None:
    hba = cluster.root / "data" / "pg_hba.conf"
    import psycopg

    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pwuser') THEN "
                     "CREATE ROLE pwuser LOGIN PASSWORD 'right-pass'; END IF; END $$")
        original = hba.read_text()
        hba.write_text("host all pwuser 127.0.0.1/32 scram-sha-256\n" + original)
        conn.execute("SELECT pg_reload_conf()")
    try:
        (tmp_path / "b").mkdir()
        pw = tmp_path / "pw"
        pw.write_text("Wr0ng-S3cret\n")
        pw.chmod(0o600)  # a password file others may read is refused (config.trust)
        t = demo.write_target_file(tmp_path / "t.toml", cluster.dsn("postgres", "pwuser"), tmp_path / "b", name="t")
        t.write_text(t.read_text().replace('dump_role = ', f'password_file = "{pw}"\ndump_role = '))
        result = run(pytester, "--target", str(t))
    finally:
        hba.write_text(original)
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
    assert result.ret == 11
    result.stdout.fnmatch_lines(["DatabaseAuthFailed: database * as pwuser of target 't' refused the login*"])
    everything = result.stdout.str() + result.stderr.str() + "".join(
        p.read_text() for p in (pytester.path / "reports").glob("latest.*"))
    assert "Wr0ng-S3cret" not in everything


def test_demo_on_an_existing_server_leaves_it_as_found(cluster: ThrowawayCluster, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`demo --server DSN` (the hosted-CI workflow's mode) builds, checks and drops only its own objects."""
    import psycopg

    from pgbackup_verify.cli import main

    def objects() -> set[str]:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            rows = conn.execute("SELECT datname FROM pg_database UNION ALL SELECT rolname FROM pg_roles")
            return {r[0] for r in rows}

    before = objects()
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--server", cluster.dsn(), "-p", "no:cacheprovider", "-q", "-m", "sql"]) == 0
    assert objects() == before
    assert (tmp_path / "reports" / "latest.json").is_file()


# Two checks that each hold their xdist worker until the test releases them, saying who they are.
LOCK_PROBE = """
import os
import time
from pathlib import Path

import pytest

SIGNALS = Path(os.environ["PGBV_LOCK_PROBE_DIR"])


@pytest.mark.parametrize("n", [1, 2])
def test_runs_under_the_lock(target, n):
    (SIGNALS / f"started-{n}").write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not (SIGNALS / "release").exists():
        assert time.monotonic() < deadline, "the self-test never released this check"
        time.sleep(0.05)
"""


def test_lock_holds_for_a_parallel_run(pytester: pytest.Pytester, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """With -n 2 only the controller takes the lock and holds it while both workers run checks under it:
    a second run meanwhile is refused (exit 14) naming the controller, and no worker was refused."""
    lock, signals = tmp_path / "pgbv.lock", tmp_path / "signals"
    signals.mkdir()
    (tmp_path / "b").mkdir()
    # No database needed: the probe only asks for the target.
    t = demo.write_target_file(tmp_path / "t.toml", "host=127.0.0.1 port=1 dbname=x user=y", tmp_path / "b",
                               name="t")
    pytester.makepyfile(test_lock_probe=LOCK_PROBE)
    monkeypatch.setenv("PGBV_LOCK_PROBE_DIR", str(signals))
    args = ["-p", "no:cacheprovider", "--target", str(t), "--lock", str(lock)]
    out, err = tmp_path / "first.out", tmp_path / "first.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        first = pytester.popen([sys.executable, "-m", "pytest", *args, "-n", "2", "test_lock_probe.py"],
                               stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while not all((signals / f"started-{n}").exists() for n in (1, 2)):
            assert first.poll() is None, f"the run ended before both workers ran a check:\n{out.read_text()}"
            assert time.monotonic() < deadline, f"both workers never ran a check:\n{out.read_text()}"
            time.sleep(0.05)
        workers = {(signals / f"started-{n}").read_text() for n in (1, 2)}
        assert len(workers) == 2 and str(first.pid) not in workers  # two workers, side by side
        assert lock.is_file(), "the run took no lock"
        assert lock.read_text() == str(first.pid)  # the controller holds the lock, not a worker
        second = pytester.runpytest_subprocess(*args, "--collect-only", "test_lock_probe.py")
        assert second.ret == 14
        assert f"lock '{lock}' is held by another pgbackup-verify run (pid {first.pid})" in second.stderr.str()
    finally:
        (signals / "release").touch()
        first.wait(timeout=120)
    output = out.read_text() + err.read_text()
    assert first.returncode == 0, output
    assert "pgbackup-verify: OK targets=t failed=0 error=0 skipped=0 passed=2 exit=0" in output
    assert "is held by another" not in output and "LockHeld" not in output  # no worker was refused
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the run ended
    finally:
        os.close(fd)
