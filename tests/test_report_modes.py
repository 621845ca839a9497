"""Reports are private: the reports directory 0700, every file in it 0600 (history.jsonl and latest.*
too), and the --json copy 0600, whoever's umask the run inherits.

One real run of the dump checks over an empty backup directory (it fails: reports are written all the
same), under umask 022 as cron gives it; a reports directory an older version left 0755 with 0644 files
is tightened by the next run; a run refused for a bad target file writes its NOT CHECKED latest.* 0600.
With --reports-group, 0750 and 0640 in that group; an unknown group is one line and exit 4.
"""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from checkrun import ChecksRun, pytester_env, run_checks
from checkrun import write_probe_target as target

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_dumps.py"


def modes(reports: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(reports.stat().st_mode)}
    out.update({p.name: stat.S_IMODE(p.lstat().st_mode) for p in reports.iterdir()})
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> ChecksRun:
    tmp = tmp_path_factory.mktemp("modes")
    old = os.umask(0o022)
    try:
        return run_checks(tmp / "run", [target(tmp)], [CHECKS])
    finally:
        os.umask(old)


def test_every_report_file_is_0600_in_a_0700_directory(run: ChecksRun) -> None:
    got = modes(run.workdir / "reports")
    names = set(got)
    assert {"latest.html", "latest.xml", "latest.json", "history.jsonl"} <= names, names
    assert any(n.endswith(".html") and n.startswith("pgbackup-verify-") for n in names), names
    assert any(n.endswith(".xml") and n.startswith("pgbackup-verify-") for n in names), names
    assert got == {n: 0o700 if n == "." else 0o600 for n in got}, {n: f"{m:o}" for n, m in got.items()}
    assert stat.S_IMODE((run.workdir / "run.json").stat().st_mode) == 0o600  # --json's copy


def test_a_directory_an_older_version_left_open_is_tightened(tmp_path: Path) -> None:
    reports = tmp_path / "run" / "reports"
    reports.mkdir(parents=True, mode=0o755)
    os.chmod(reports, 0o755)
    for name in ("latest.html", "history.jsonl", "pgbackup-verify-20250101T000000.html"):
        (reports / name).write_text("old\n")
        (reports / name).chmod(0o644)
    os.symlink("/etc/hostname", reports / "planted-link")  # not ours to chmod: left alone, never followed
    before = stat.S_IMODE(os.stat("/etc/hostname").st_mode)
    old = os.umask(0o022)
    try:
        run_checks(tmp_path / "run", [target(tmp_path)], [CHECKS])
    finally:
        os.umask(old)
    got = {n: m for n, m in modes(reports).items() if n != "planted-link"}
    assert got == {n: 0o700 if n == "." else 0o600 for n in got}, {n: f"{m:o}" for n, m in got.items()}
    assert stat.S_IMODE(os.stat("/etc/hostname").st_mode) == before


def test_a_refused_run_writes_its_not_checked_report_private_too(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[database\n")
    reports = tmp_path / "reports"
    old = os.umask(0o022)
    try:
        proc = subprocess.run([sys.executable, "-m", "pgbackup_verify.cli", "--target", str(bad), "--reports-dir",
                               str(reports)], cwd=tmp_path, env=pytester_env(tmp_path), capture_output=True,
                              text=True, timeout=120, check=False)
    finally:
        os.umask(old)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    got = modes(reports)
    assert {"latest.html", "latest.xml", "latest.json"} <= set(got)
    assert got == {n: 0o700 if n == "." else 0o600 for n in got}, {n: f"{m:o}" for n, m in got.items()}


def test_a_reports_group_reads_them_and_no_one_else(tmp_path: Path) -> None:
    """--reports-group: 0750 and 0640 in that group (a web server's, a monitoring user's)."""
    gid = grp.getgrnam("daemon").gr_gid
    old = os.umask(0o022)
    try:
        run = run_checks(tmp_path / "run", [target(tmp_path)], [CHECKS], "--reports-group", "daemon")
    finally:
        os.umask(old)
    reports = tmp_path / "run" / "reports"
    got = modes(reports)
    assert "history.jsonl" in got and "latest.html" in got
    assert got == {n: 0o750 if n == "." else 0o640 for n in got}, {n: f"{m:o}" for n, m in got.items()}
    assert {p.stat().st_gid for p in [reports, *reports.iterdir()]} == {gid}
    assert run.ret in (0, 1)


def test_an_unknown_reports_group_is_one_line_and_exit_4(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pgbackup_verify.cli", "--target", str(target(tmp_path)),
                           "--reports-dir", str(tmp_path / "reports"), "--reports-group", "no-such-group-pgbv"],
                          cwd=tmp_path, env=pytester_env(tmp_path), capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "reports group 'no-such-group-pgbv' from command line does not exist" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
