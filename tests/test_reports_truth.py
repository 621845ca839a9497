"""Reports never lie: latest.* always describes the last run, also when that run checked nothing.

A config error, a crash before or during the checks and an interrupt each replace latest.html,
latest.json and latest.xml with a report that says so; the reports directory is printed as an absolute
path; a reports directory that cannot be written is one line and exit 4 before anything runs.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
from checkrun import run_sql_check, write_probe_target

# Probe checks that need a target but no database: the plugin's whole run, in a second.
PROBE = """
import os, signal

def test_first(target):
    pass

def test_second(target):
    if os.environ.get("PGBV_PROBE") == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)

def test_third(target):
    pass
"""
SITE_CONFTEST = """
import os

def pytest_configure(config):
    if os.environ.get("PGBV_PROBE") == "configure":
        raise RuntimeError("a site plugin broke in configure")

def pytest_collection_finish(session):
    if os.environ.get("PGBV_PROBE") == "collection":
        raise RuntimeError("a site plugin broke in collection")
"""


def headline(reports: Path) -> str:
    page = html.unescape((reports / "latest.html").read_text())
    found = re.search(r"Backup health: [^<]*", page)
    assert found, page[:2000]
    return found.group(0)


def notes(reports: Path) -> list[str]:
    return [html.unescape(n) for n in re.findall(r"class='pgbv-note'>([^<]*)<", (reports / "latest.html").read_text())]


def latest_json(reports: Path) -> dict:
    return json.loads((reports / "latest.json").read_text())


def green_then(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, probe: str) -> pytest.RunResult:
    """A green probe run, then the same run with PGBV_PROBE=probe: the second run's result."""
    pytester.makepyfile(test_probe=PROBE)
    pytester.makeconftest(SITE_CONFTEST)
    target = write_probe_target(pytester.path)
    first = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--target", str(target), timeout=60)
    assert first.ret == 0, first.stdout.str()
    assert headline(pytester.path / "reports") == "Backup health: OK"
    monkeypatch.setenv("PGBV_PROBE", probe)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--target", str(target), timeout=60)


def test_green_run_then_a_config_error_no_latest_file_says_ok(pytester: pytest.Pytester, target_file: Path) -> None:
    """The real custom SQL check on the seed database, green; then the target file gets a mistake."""
    green = run_sql_check(pytester, "--target", str(target_file))
    green.assert_outcomes(passed=1)
    reports = pytester.path / "reports"
    # The default location, ./reports of the directory the run started in, printed as an absolute path.
    green.stdout.fnmatch_lines([f"pgbackup-verify: OK targets=t * report={reports / 'latest.html'}"])
    assert headline(reports) == "Backup health: OK"
    before = {p.name for p in reports.iterdir()}

    target_file.write_text(target_file.read_text().replace("dump_role =", "connect_timeout = -10\ndump_role ="))
    broken = run_sql_check(pytester, "--target", str(target_file))
    line = f"target file '{target_file}': [database].connect_timeout: -10 must be greater than 0; use e.g. 10"
    assert broken.ret == 4
    assert [ln for ln in broken.stderr.lines if ln.strip()] == [f"ERROR: {line}"]
    assert "Traceback" not in broken.stdout.str() + broken.stderr.str()
    assert headline(reports) == f"Backup health: NOT CHECKED \u2014 config error: {line}"
    doc = latest_json(reports)
    assert (doc["status"], doc["exit_status"], doc["abort"], doc["counts"]["passed"]) == \
        ("FAILED", 4, f"config error: {line}", 0)
    xml = ElementTree.parse(reports / "latest.xml").getroot()
    assert [e.get("message") for e in xml.iter("error")] == [f"NOT CHECKED: config error: {line}"]
    # Only latest.* were replaced: no timestamped report of a run that did not run, history untouched.
    assert {p.name for p in reports.iterdir()} == before


def test_a_crash_before_the_checks_replaces_latest(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = green_then(pytester, monkeypatch, "configure")
    assert result.ret == 3
    reports = pytester.path / "reports"
    reason = "internal error before the checks ran: RuntimeError: a site plugin broke in configure"
    assert headline(reports) == f"Backup health: NOT CHECKED \u2014 {reason}"
    assert (latest_json(reports)["status"], latest_json(reports)["exit_status"]) == ("FAILED", 3)


def test_a_crash_during_the_session_replaces_latest(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = green_then(pytester, monkeypatch, "collection")
    assert result.ret == 3
    reports = pytester.path / "reports"
    assert headline(reports) == "Backup health: FAILED"
    assert notes(reports)[0].startswith("FAILED: internal error in the suite")
    assert latest_json(reports)["abort"].startswith("internal error")


def test_sigterm_mid_run_replaces_latest_saying_interrupted(pytester: pytest.Pytester,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd's stop or a timeout: the run ends as interrupted and the reports name the checks not run."""
    result = green_then(pytester, monkeypatch, "sigterm")
    assert result.ret == 2
    reports = pytester.path / "reports"
    assert headline(reports) == "Backup health: FAILED"
    assert notes(reports) == ["FAILED: run interrupted by SIGTERM (2 of 3 selected checks not run: second, third)"]
    doc = latest_json(reports)
    assert (doc["status"], doc["abort"], doc["counts"]["not run"]) == ("FAILED", "run interrupted by SIGTERM", 2)


@contextlib.contextmanager
def unwritable(d: Path) -> Iterator[None]:
    """A directory this process cannot create files in: immutable for root (chattr), read-only otherwise."""
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield
        d.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode:
        pytest.skip("root, and this filesystem has no immutable flag to make a directory unwritable")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(d)], check=True)


@pytest.mark.parametrize("where", ["read-only directory", "under a file"])
def test_an_unwritable_reports_directory_is_one_line(pytester: pytest.Pytester, where: str) -> None:
    pytester.makepyfile(test_probe=PROBE)
    target = write_probe_target(pytester.path)
    if where == "under a file":
        (pytester.path / "file").write_text("")
        reports, why = pytester.path / "file" / "reports", "Not a directory"
        ctx: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    else:
        reports, why = pytester.path / "ro", "Permission denied" if os.geteuid() else "Operation not permitted"
        ctx = unwritable(reports)
    with ctx:
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--target", str(target),
                                               "--reports-dir", str(reports), timeout=60)
    assert result.ret == 4
    assert [ln for ln in result.stderr.lines if ln.strip()] == [
        f"ERROR: reports directory '{reports}' cannot be written ({why}); pass a writable --reports-dir "
        "or set PGBACKUP_VERIFY_REPORTS"]
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert "collected" not in result.stdout.str()  # refused before anything ran


def test_a_relative_reports_directory_is_printed_absolute(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_probe=PROBE)
    target = write_probe_target(pytester.path)
    (pytester.path / "sub").mkdir()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--target", str(target), "--reports-dir",
                                           "sub/../out", timeout=60)
    assert result.ret == 0
    result.stdout.fnmatch_lines([f"pgbackup-verify: OK * report={pytester.path / 'out' / 'latest.html'}"])
    assert (pytester.path / "out" / "latest.json").is_file()


def test_no_target_and_no_reports_directory_leaves_the_current_directory_alone(pytester: pytest.Pytester) -> None:
    """A plain pytest run of some other suite with the plugin installed writes no reports anywhere."""
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    assert result.ret == 0
    assert not (pytester.path / "reports").exists()
