"""The `pgbackup-verify` command itself: its help, its version, -q for cron, and checks named by name.

Real subprocesses of the installed console script, from a directory that is not the checkout, so paths
are shown the way an operator's shell would show them.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from pgbackup_verify.errors import EXIT_CODES

CLI = str(Path(sys.executable).parent / "pgbackup-verify")
FAILING_SQL = ('\n[[sql_check]]\nname = "always a row"\nquery = "SELECT 1 AS stray"\nexpect = "no_rows"\n'
               'fix = "remove it"\n')


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PGBACKUP_VERIFY_", "PYTEST_"))}
    return subprocess.run([CLI, *args], cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args", [["--help"], ["-h"], []])
def test_help_lists_options_environment_commands_and_exit_codes(tmp_path: Path, args: list[str]) -> None:
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
    text = proc.stdout
    for flag in ("--target FILE|DIR", "--reports-dir DIR", "--keep-reports N", "--lock FILE", "--json FILE",
                 "--kuma-dry-run", "--kuma-config", "-q, --quiet", "--version", "--pytest-help"):
        assert f"\n  {flag}" in text, flag
    for env in ("PGBACKUP_VERIFY_TARGET", "PGBACKUP_VERIFY_REPORTS", "PGBACKUP_VERIFY_KEEP_REPORTS",
                "PGBACKUP_VERIFY_LOCK", "PGBACKUP_VERIFY_KUMA_CONFIG", "PGPASSWORD"):
        assert f"\n  {env}" in text, env
    assert "default: ./reports under the directory the run starts in" in " ".join(text.split())
    assert "\n  demo " in text  # the checkout's demo distribution registers it
    # The exit codes come from the one table in errors.py, every one of them.
    assert [ln for ln in text.splitlines() if ln[:5].strip().isdigit()] == [
        f"  {code:>3}  {meaning}" for code, meaning in sorted(EXIT_CODES.items())]


def test_version_is_this_package_version(tmp_path: Path) -> None:
    proc = cli("--version", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"pgbackup-verify {version('pgbackup-verify')} (pytest ")


def test_pytest_help_is_still_reachable(tmp_path: Path) -> None:
    proc = cli("--pytest-help", cwd=tmp_path)
    assert proc.returncode == 0
    assert "--basetemp" in proc.stdout and "pgbackup-verify:" in proc.stdout  # pytest's, with our group


def test_quiet_green_run_prints_nothing(tmp_path: Path, target_file: Path) -> None:
    proc = cli("--target", str(target_file), "-q", "-m", "sql", cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert (tmp_path / "reports" / "latest.json").is_file()  # quiet, not idle


def test_quiet_failed_run_prints_the_summary(tmp_path: Path, target_file: Path) -> None:
    target_file.write_text(target_file.read_text() + FAILING_SQL)
    proc = cli("--target", str(target_file), "-q", "-m", "sql", cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert "FAILED t sql \u00b7 custom sql check [always a row]: always a row: FAILED (1 row(s): 1); fix: remove it" \
        in lines
    [run_line] = [ln for ln in lines if ln.startswith("pgbackup-verify: ")]
    assert run_line.startswith("pgbackup-verify: FAILED targets=t failed=1 error=0 skipped=0 passed=1 exit=1 ")
    assert run_line.endswith(f" report={tmp_path / 'reports' / 'latest.html'}")


def test_quiet_config_error_is_still_said(tmp_path: Path) -> None:
    target = tmp_path / "t.toml"
    target.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(32))
    proc = cli("--target", str(target), "-q", cwd=tmp_path)
    assert proc.returncode == 4
    assert proc.stdout == ""
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        f"ERROR: target file '{target}' is a binary file, not TOML; pass the target file (see target.example.toml)"]


def test_checks_are_named_by_name_not_by_path(tmp_path: Path, target_file: Path) -> None:
    """From another directory, skipped and failed checks read `target concern · check`, compactly: the
    shipped checks' source paths (an installed copy's lie in site-packages) appear in none of those lines."""
    target_file.write_text(target_file.read_text() + FAILING_SQL)
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = cli("--target", str(target_file), "-m", "sql or kuma", cwd=work)
    assert proc.returncode == 1, proc.stdout[-3000:]
    listed = [ln for ln in proc.stdout.splitlines() if ln.startswith(("FAILED ", "ERROR ", "SKIPPED "))]
    assert listed == [
        "FAILED t sql \u00b7 custom sql check [always a row]: always a row: FAILED (1 row(s): 1); fix: remove it",
        "SKIPPED [7] t kuma: not configured: target 't' has no [kuma] section; add one to check its Kuma monitors "
        "(every named monitor exists in kuma, every monitor is effectively active, every monitor has an active "
        "notification, +4 more)"]


def test_an_unknown_option_also_replaces_latest(tmp_path: Path) -> None:
    """pytest refuses it before any plugin is configured; the command still says NOT CHECKED in latest.*."""
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "latest.html").write_text("<h2>Backup health: OK</h2>")
    target = tmp_path / "t.toml"
    target.write_text("")
    proc = cli("--target", str(target), "--tagret", "x", "-q", cwd=tmp_path)
    assert proc.returncode == 4
    assert "unrecognized arguments: --tagret x" in proc.stderr
    page = html.unescape((reports / "latest.html").read_text())
    assert "Backup health: NOT CHECKED \u2014 usage error: unrecognized arguments: --tagret x</h2>" in page
    doc = json.loads((reports / "latest.json").read_text())
    assert (doc["status"], doc["abort"]) == ("FAILED", "usage error: unrecognized arguments: --tagret x")
