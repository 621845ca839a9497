"""The push plugin against a real Kuma: up only when every covered check passed, never silent."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest
from kuma_helpers import (
    DUMP_CHECKS,
    GRANT_CHECKS,
    MARKERS_INI,
    STAMP_CONFTEST,
    beats,
    kuma_toml,
    new_monitor,
    push_phase,
    write_target,
)
from pgbackup_verify_demo.kuma_server import free_port

UP, DOWN = 1, 0


@pytest.fixture
def suite(pytester: pytest.Pytester):
    """Two small check modules carrying the suite's markers; `broken=True` fails one dump check."""

    def _make(broken: bool = False) -> None:
        pytester.makefile(".ini", pytest=MARKERS_INI)
        pytester.makepyfile(test_grants=GRANT_CHECKS, test_dumps=DUMP_CHECKS.format(ok=not broken))

    return _make


@pytest.fixture
def two_monitors(kuma, monkeypatch):
    tag = secrets.token_hex(3)
    guard = new_monitor(kuma, monkeypatch, f"Guard {tag}", "KUMA_PUSH_TEST_GUARD")
    local = new_monitor(kuma, monkeypatch, f"Local {tag}", "KUMA_PUSH_TEST_LOCAL")
    return guard, local


def run(pytester: pytest.Pytester, target, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider",
                                         "--reports-dir", str(pytester.path / "reports"), *args)


def reports_text(pytester: pytest.Pytester) -> str:
    files = [p for p in (pytester.path / "reports").iterdir() if p.suffix in (".html", ".xml")]
    assert {p.suffix for p in files} == {".html", ".xml"}
    return "".join(p.read_text() for p in files)


def test_green_run_pushes_up_and_token_stays_out_of_reports(pytester, kuma, suite, two_monitors, tmp_path):
    guard, local = two_monitors
    suite()
    target = write_target(pytester.path, kuma_toml(kuma.url, [(guard, ["grants"]), (local, ["test_dumps"])]))
    result = run(pytester, target)
    result.assert_outcomes(passed=4)
    assert result.ret == 0
    assert beats(kuma, guard.id)[0][:2] == (UP, "OK: 2/2 checks passed (grants)")
    status, msg, ping = beats(kuma, local.id)[0]
    assert (status, msg) == (UP, "OK: 2/2 checks passed (test_dumps)") and ping > 0
    out = result.stdout.str()
    assert f"{guard.name}: pushed status=up" in out and "Kuma answered ok" in out
    text = reports_text(pytester)
    assert "Uptime Kuma" in text and "pushed status=up" in text
    for m in (guard, local):
        assert m.token not in text and m.token not in out and m.token not in result.stderr.str()


def test_failing_check_pushes_down_naming_it(pytester, kuma, suite, two_monitors, tmp_path):
    guard, local = two_monitors
    suite(broken=True)
    target = write_target(pytester.path, kuma_toml(kuma.url, [(guard, ["grants"]), (local, ["dumps"])]))
    result = run(pytester, target)
    result.assert_outcomes(passed=3, failed=1)
    assert result.ret == 1
    assert beats(kuma, guard.id)[0][0] == UP  # the guard's own checks passed: it stays green
    status, msg, _ = beats(kuma, local.id)[0]
    assert status == DOWN and msg == "FAILED dumps: latest dump: 20 B vs 10000 B"
    assert local.token not in reports_text(pytester)


@pytest.mark.parametrize("args, reason", [
    (["-k", "nomatch"], "no check collected or selected"),
    (["-m", "offsite"], "no check collected or selected"),
])
def test_zero_selected_checks_push_down(pytester, kuma, suite, two_monitors, tmp_path, args, reason):
    guard, local = two_monitors
    suite()
    target = write_target(pytester.path, kuma_toml(kuma.url, [(guard, ["grants"]), (local, ["dumps"])]))
    result = run(pytester, target, *args)
    assert result.ret == 5
    assert beats(kuma, guard.id)[0][:2] == (DOWN, reason)
    assert beats(kuma, local.id)[0][:2] == (DOWN, reason)


def test_monitor_whose_checks_were_not_selected_goes_down(pytester, kuma, suite, two_monitors, tmp_path):
    guard, local = two_monitors
    suite()
    target = write_target(pytester.path, kuma_toml(kuma.url, [(guard, ["grants"]), (local, ["dumps"])]))
    result = run(pytester, target, "-m", "grants")
    assert result.ret == 0
    assert beats(kuma, guard.id)[0][0] == UP
    assert beats(kuma, local.id)[0][:2] == (DOWN, "no check covering dumps ran (2 selected in total)")


@pytest.mark.parametrize("breakage, expected", [
    ('max_shrink_ratio = 0.2', "[backups].max_shrink_ratio: 2.0 is not in [0, 1)"),
    ('min_good_dumps = 7', "invalid TOML"),
])
def test_config_error_pushes_down(pytester, kuma, suite, two_monitors, tmp_path, breakage, expected):
    guard, local = two_monitors
    suite()
    target = write_target(pytester.path, kuma_toml(kuma.url, [(guard, ["grants"]), (local, ["dumps"])]))
    bad = "max_shrink_ratio = 2" if "shrink" in breakage else "min_good_dumps = = 7"
    target.write_text(target.read_text().replace(breakage, bad))
    result = run(pytester, target)
    assert result.ret == 4
    assert "Traceback" not in result.stderr.str()
    for m in (guard, local):
        status, msg, _ = beats(kuma, m.id)[0]
        assert status == DOWN and msg.startswith("config error: ") and expected in msg
        assert len(msg) < 200 and m.token not in msg
    assert f"{guard.name}: pushed status=down" in result.stderr.str()


def test_dry_run_prints_and_sends_nothing(pytester, kuma, suite, two_monitors, tmp_path):
    guard, local = two_monitors
    suite(broken=True)
    target = write_target(pytester.path, kuma_toml(kuma.url, [(guard, ["grants"]), (local, ["dumps"])]))
    result = run(pytester, target, "--kuma-dry-run")
    assert result.ret == 1
    result.stdout.fnmatch_lines([f"{local.name}: would push status=down msg='FAILED dumps: latest dump: 20 B vs "
                                 "10000 B' ping=* ms -> dry run*"])
    assert beats(kuma, guard.id) == [] and beats(kuma, local.id) == []


@pytest.fixture
def hung_port():
    """A port that accepts connections but never answers: a hung Kuma."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@pytest.mark.parametrize("where", ["stopped", "hung"])
def test_unreachable_kuma_fails_the_run_but_not_the_report(pytester, kuma, suite, two_monitors, tmp_path,
                                                           hung_port, where):
    guard, local = two_monitors
    suite()
    port = free_port() if where == "stopped" else hung_port
    target = write_target(pytester.path, kuma_toml(f"http://127.0.0.1:{port}", [(guard, ["grants"]),
                                                                                (local, ["dumps"])]))
    pytester.makeconftest(STAMP_CONFTEST)
    result = pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider",
                                           "--reports-dir", str(pytester.path / "reports"), timeout=120)
    assert result.ret == 12
    reason = "connection refused" if where == "stopped" else "no answer within 1 s"
    result.stdout.fnmatch_lines([f"{guard.name}: PUSH FAILED status=up * -> {reason}* after 2 attempts",
                                 "Kuma push failed; exit code 12: a push to Uptime Kuma failed"])
    # Two 1 s attempts and the 1 s pause: the pushes are over within 3 s of the last check (a default socket
    # timeout would take minutes); the slack is for a loaded machine's scheduling, not for another attempt.
    pushing = push_phase(pytester.path)
    assert pushing < 3 + 2, f"the pushes took {pushing:.1f} s after the last check with push_timeout 1 s"
    assert f"{local.name}: PUSH FAILED" in result.stdout.str()
    reports = sorted(p for p in (pytester.path / "reports").glob("pgbackup-verify-*") if p.suffix in (".html", ".xml"))
    assert [r.suffix for r in reports] == [".html", ".xml"]
    for report in reports:
        text = report.read_text()
        assert "PUSH FAILED" in text and reason in text and guard.token not in text, report.name


def test_unknown_token_and_missing_env_are_errors(pytester, kuma, suite, two_monitors, tmp_path, monkeypatch):
    guard, local = two_monitors
    suite()
    monkeypatch.setenv(guard.env, "notAKumaToken42")
    monkeypatch.delenv(local.env)
    target = write_target(pytester.path, kuma_toml(kuma.url, [(guard, ["grants"]), (local, ["dumps"])]))
    result = run(pytester, target)
    assert result.ret == 13
    out = result.stdout.str()
    assert f"{guard.name}: PUSH FAILED" in out and "HTTP 404" in out and "notAKumaToken42" not in out
    assert f"env {local.env} is not set" in out


def test_paused_monitor_push_is_an_error(pytester, kuma, suite, two_monitors, tmp_path):
    guard, _ = two_monitors
    kuma.admin.pause(guard.id)
    suite()
    target = write_target(pytester.path, kuma_toml(kuma.url, [(guard, ["grants"])]))
    result = run(pytester, target)
    assert result.ret == 12
    assert "not active" in result.stdout.str()


def test_sigterm_pushes_down(pytester, kuma, two_monitors, tmp_path):
    guard, _ = two_monitors
    pytester.makefile(".ini", pytest=MARKERS_INI)
    flag = tmp_path / "started"
    pytester.makepyfile(test_slow=f"""
import pathlib, time, pytest
pytestmark = pytest.mark.grants
def test_long_running_check():
    pathlib.Path({str(flag)!r}).write_text("x")
    time.sleep(60)
""")
    target = write_target(pytester.path, kuma_toml(kuma.url, [(guard, ["grants"])]))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "--target", str(target), "-p", "no:cacheprovider",
                             "--reports-dir", str(tmp_path / "reports")], cwd=pytester.path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 30
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2, out
    assert beats(kuma, guard.id)[0][:2] == (DOWN, "run interrupted by SIGTERM")
    assert f"{guard.name}: pushed status=down" in out
    # The reports say what Kuma was told: the run's one fold knows the signal too.
    doc = json.loads((tmp_path / "reports" / "latest.json").read_text())
    assert (doc["status"], doc["abort"]) == ("FAILED", "run interrupted by SIGTERM")
    assert [c["outcome"] for c in doc["checks"]] == ["not run"]
    assert 'abort="run interrupted by SIGTERM"' in out


def test_internal_error_pushes_down(pytester, kuma, suite, two_monitors):
    guard, _ = two_monitors
    suite()
    pytester.makeconftest("def pytest_collection_modifyitems(items):\n    raise RuntimeError('plugin bug')\n")
    target = write_target(pytester.path, kuma_toml(kuma.url, [(guard, ["grants"])]))
    result = run(pytester, target)
    assert result.ret == 3
    assert beats(kuma, guard.id)[0][:2] == (DOWN, "internal error in the suite; see the report")


def test_collection_error_pushes_down_naming_the_module(pytester, kuma, suite, two_monitors):
    guard, _ = two_monitors
    suite()
    pytester.makepyfile(test_offsite="import no_such_module\n")
    target = write_target(pytester.path, kuma_toml(kuma.url, [(guard, ["grants"])]))
    result = run(pytester, target)
    assert result.ret == 2
    assert beats(kuma, guard.id)[0][:2] == (DOWN, "1 collection error(s): test_offsite.py")


def test_under_xdist_the_controller_counts_the_workers_checks(pytester, kuma, suite, two_monitors):
    guard, local = two_monitors
    suite(broken=True)
    target = write_target(pytester.path, kuma_toml(kuma.url, [(guard, ["grants"]), (local, ["test_dumps"])]))
    result = run(pytester, target, "-n", "2")
    assert result.ret == 1
    assert beats(kuma, guard.id)[0][:2] == (UP, "OK: 2/2 checks passed (grants)")
    assert beats(kuma, local.id)[0][:2] == (DOWN, "FAILED dumps: latest dump: 20 B vs 10000 B")


@pytest.mark.parametrize("broken", [False, True])
def test_any_pytest_suite_can_push_with_its_own_kuma_file(pytester, kuma, suite, two_monitors, monkeypatch,
                                                          broken):
    """`-p pgbackup_verify.kuma.plugin --kuma-config FILE`, without the rest of pgbackup-verify."""
    guard, _ = two_monitors
    suite()
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    cfg = pytester.path / "kuma.toml"
    cfg.write_text(kuma_toml(kuma.url, [(guard, ["grants"])], extra="stale_days = -1" if broken else ""))
    result = pytester.runpytest_subprocess("-p", "pgbackup_verify.kuma.plugin", "--kuma-config", str(cfg),
                                           "-p", "no:cacheprovider")
    if broken:
        assert result.ret == 4
        status, msg, _ = beats(kuma, guard.id)[0]
        assert status == DOWN and msg.startswith("config error: kuma config 'kuma.toml': [kuma].stale_days: -1.0")
    else:
        result.assert_outcomes(passed=4)
        # The suite's two unmarked checks are covered by no monitor, so they count for this one too.
        assert beats(kuma, guard.id)[0][:2] == (UP, "OK: 4/4 checks passed (grants)")


def test_hosts_sharing_a_monitor_get_one_push_naming_the_failed_host(pytester, kuma, two_monitors):
    shared, only_a = two_monitors
    pytester.makefile(".ini", pytest=MARKERS_INI)
    pytester.makepyfile(test_grants="""
import pytest
pytestmark = pytest.mark.grants

def test_dump_role_has_usage_on_every_schema(target):
    assert target.name != "hostb", "hostb: FAILED (sandbox_tac without USAGE)"
""")
    targets = pytester.path / "targets"
    targets.mkdir()
    write_target(targets, kuma_toml(kuma.url, [(shared, ["grants"]), (only_a, ["grants"])]), name="hosta")
    write_target(targets, kuma_toml(kuma.url, [(shared, ["grants"])]), name="hostb")
    result = run(pytester, targets)
    result.assert_outcomes(passed=1, failed=1)
    assert beats(kuma, shared.id)[0][:2] == (DOWN, "FAILED hostb grants: hostb: sandbox_tac without USAGE")
    assert len(beats(kuma, shared.id)) == 1  # one push, not one per host
    assert beats(kuma, only_a.id)[0][:2] == (UP, "OK: 1/1 checks passed (grants)")


def test_dry_run_reports_an_unset_token_env(pytester, kuma, suite, two_monitors, monkeypatch):
    guard, _ = two_monitors
    suite()
    monkeypatch.delenv(guard.env)
    target = write_target(pytester.path, kuma_toml(kuma.url, [(guard, ["grants"])]))
    result = run(pytester, target, "--kuma-dry-run")
    assert result.ret == 13
    assert f"{guard.name}: PUSH FAILED status=up" in result.stdout.str()
    assert f"env {guard.env} is not set" in result.stdout.str()


def test_a_not_applicable_skip_is_named_but_only_all_skipped_is_down(pytester, kuma, two_monitors):
    guard, local = two_monitors
    pytester.makefile(".ini", pytest=MARKERS_INI)
    pytester.makepyfile(test_dumps="""
import pytest
pytestmark = pytest.mark.dumps

def test_latest_dump_is_fresh():
    pass

def test_custom_format_toc_lists_expected_schemas():
    pytest.skip("plain-format dumps have no TOC")
""", test_grants="""
import pytest
pytestmark = pytest.mark.grants

def test_dump_role_has_usage_on_every_schema():
    pytest.skip("no database configured")
""")
    target = write_target(pytester.path, kuma_toml(kuma.url, [(guard, ["grants"]), (local, ["dumps"])]))
    result = run(pytester, target)
    assert result.ret == 0
    assert beats(kuma, local.id)[0][:2] == (UP, "OK: 1/2 checks passed, 1 skipped (dumps)")
    assert beats(kuma, guard.id)[0][:2] == (DOWN, "all 1 covered checks skipped: "  # readable names
                                                  "dump role has usage on every schema")


def test_a_finding_longer_than_the_msg_reaches_kuma_cut_at_a_word(pytester, kuma, two_monitors):
    """Before: the shortener kept nothing and Kuma showed ' (+1 more)'."""
    _, local = two_monitors
    long = "latest dump of the very long named database " * 6
    pytester.makefile(".ini", pytest=MARKERS_INI)
    pytester.makepyfile(test_dumps=f"""import pytest
pytestmark = pytest.mark.dumps

def test_latest_dump_is_complete():
    assert False, "latest dump: FAILED ({long}20 B vs 10000 B); fix: rerun pg-backup.sh"

def test_latest_dump_is_fresh():
    assert False, "latest dump: FAILED (30 h vs 26 h); fix: check cron"
""")
    target = write_target(pytester.path, kuma_toml(kuma.url, [(local, ["dumps"])]))
    result = run(pytester, target)
    assert result.ret == 1
    status, msg, _ = beats(kuma, local.id)[0]
    assert status == DOWN and len(msg) <= 190
    assert msg.startswith("FAILED dumps: latest dump: latest dump of the very long named database latest")
    assert re.search(r" [a-z]+… \(\+1 more\)$", msg), msg  # cut after a whole word


def test_a_long_config_error_reaches_kuma_clipped(pytester, kuma, suite, two_monitors):
    guard, _ = two_monitors
    suite()
    target = write_target(pytester.path, kuma_toml(kuma.url, [(guard, ["grants"])]))
    unknown = "retention_of_the_nightly_archives_" * 8
    target.write_text(target.read_text().replace("[backups]\n", f"[backups]\n{unknown} = 3\n", 1))
    result = run(pytester, target)
    assert result.ret == 4
    status, msg, _ = beats(kuma, guard.id)[0]
    assert status == DOWN and msg.startswith("config error: ") and "[backups]." in msg
    assert msg.endswith("…") and len(msg) <= 190


def test_config_error_reaches_every_readable_monitor_naming_the_unreadable_one(pytester, kuma, suite, two_monitors):
    """Before: a typo inside the first [[kuma.push]] entry made the config error reach no monitor."""
    guard, local = two_monitors
    suite()
    target = write_target(pytester.path, kuma_toml(kuma.url, [(guard, ["grants"]), (local, ["dumps"])]))
    target.write_text(target.read_text().replace(f'token_env = "{guard.env}"', f'tokenenv = "{guard.env}"'))
    result = run(pytester, target)
    assert result.ret == 4
    assert "Traceback" not in result.stderr.str()
    status, msg, _ = beats(kuma, local.id)[0]
    assert status == DOWN
    assert msg.startswith("config error: target file 'selftest.toml': [kuma.push #1].tokenenv: unknown key")
    assert msg.endswith(" ([[kuma.push]] #1 unreadable, not told)") and len(msg) <= 190
    assert beats(kuma, guard.id) == []  # its token env is unknown: it cannot be told
    assert f"{local.name}: pushed status=down" in result.stderr.str()
