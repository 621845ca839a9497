"""One exit code per run, agreeing with the printed lines: a check that failed on its own finding
is never hidden by a user-error code (10, 11, 13) from a check that could not look."""

from __future__ import annotations

from pathlib import Path

from kuma_helpers import DUMP_CHECKS, MARKERS_INI, write_target

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_kuma.py"
# A [kuma] read by the socket with no login in the environment: every kuma check errors with 13.
NO_LOGIN = '\n[kuma]\nurl = "http://127.0.0.1:9"\nread = "socket"\nmonitors = ["PG Backup Local"]\n'


def run(pytester, monkeypatch, broken: bool):
    monkeypatch.delenv("KUMA_USERNAME", raising=False)
    monkeypatch.delenv("KUMA_PASSWORD", raising=False)
    pytester.makefile(".ini", pytest=MARKERS_INI)
    pytester.makepyfile(test_dumps=DUMP_CHECKS.format(ok=not broken))
    target = write_target(pytester.path, NO_LOGIN)
    return pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider",
                                         "--reports-dir", str(pytester.path / "reports"), "test_dumps.py",
                                         str(CHECKS))


def test_a_failed_check_keeps_exit_1_next_to_a_missing_kuma_login(pytester, monkeypatch):
    """Before: exit 13, while the summary line said a check failed."""
    result = run(pytester, monkeypatch, broken=True)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["pgbackup-verify: FAILED targets=selftest failed=1 error=7 * exit=1 *"])


def test_only_checks_that_could_not_look_give_their_user_error_code(pytester, monkeypatch):
    result = run(pytester, monkeypatch, broken=False)
    assert result.ret == 13
    result.stdout.fnmatch_lines(["pgbackup-verify: FAILED targets=selftest failed=0 error=7 * exit=13 *"])
