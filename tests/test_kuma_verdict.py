"""What a push monitor is told: the verdict rules alone (the real pushes are in test_kuma_push)."""

from __future__ import annotations

from pgbackup_verify.kuma.verdict import Outcomes, PushMonitor, judge

LOCAL = PushMonitor("PG Backup Local", "KUMA_PUSH_LOCAL", ("dumps",), "http://127.0.0.1:1", 1.0)


def outcomes(results: dict[str, str], target: str | None = "demo") -> Outcomes:
    o = Outcomes()
    for name, outcome in results.items():
        nodeid = f"checks/test_dumps.py::{name}[{target}]" if target else f"checks/test_dumps.py::{name}"
        o.select(nodeid, {"dumps", "test_dumps"}, target)
        o.record(nodeid, "setup", "passed")
        o.record(nodeid, "call", outcome)
    return o


def test_one_target_id_is_left_out_of_the_msg():
    v = judge(LOCAL, outcomes({"test_latest_dump_is_fresh": "passed", "test_payload": "failed"}), 1234)
    assert (v.status, v.msg, v.ping_ms) == ("down", "1 failed of 2: test_payload", 1234)


def test_many_failures_fit_in_one_short_msg():
    v = judge(LOCAL, outcomes({f"test_check_number_{i:02d}_with_a_long_name": "failed" for i in range(30)}), 1)
    assert v.status == "down" and len(v.msg) < 200
    assert v.msg.startswith("30 failed of 30: test_check_number_00_with_a_long_name, ")
    assert v.msg.endswith(" more)")


def test_setup_error_counts_as_error_and_teardown_error_spoils_a_pass():
    o = outcomes({"test_a": "passed"})
    o.select("checks/test_dumps.py::test_b[demo]", {"dumps"}, "demo")
    o.record("checks/test_dumps.py::test_b[demo]", "setup", "failed")
    o.record("checks/test_dumps.py::test_a[demo]", "teardown", "failed")
    assert judge(LOCAL, o, 1).msg == "2 errors of 2: test_a, test_b"


def test_abort_reason_wins_over_outcomes():
    v = judge(LOCAL, outcomes({"test_a": "passed"}), 1, abort="run interrupted by SIGTERM")
    assert (v.status, v.msg) == ("down", "run interrupted by SIGTERM")


def test_a_check_no_monitor_covers_counts_for_every_monitor() -> None:
    """Never silent: a failing check whose marker the target file forgot to route still turns DOWN."""
    guard = PushMonitor("Guard", "T1", ("grants",), "http://k", 5.0)
    local = PushMonitor("Local", "T2", ("dumps",), "http://k", 5.0)
    out = Outcomes()
    out.claimed = {"grants", "dumps"}
    for nodeid, groups, outcome in (("g::a", {"grants"}, "passed"), ("d::b", {"dumps"}, "passed"),
                                    ("s::registry lock", {"sql"}, "failed")):
        out.select(nodeid, groups, None)
        out.outcome[nodeid] = outcome
    for m in (guard, local):
        v = judge(m, out, 10)
        assert v.status == "down" and "registry lock" in v.msg, v
    out.outcome["s::registry lock"] = "passed"
    assert [judge(m, out, 10).status for m in (guard, local)] == ["up", "up"]


def test_xdist_controller_routes_sql_checks_like_a_single_process(pytester, monkeypatch) -> None:
    """Under -n the controller sees reports, not items: the sql marker must still route the check."""
    from kuma_helpers import DUMP_CHECKS, GRANT_CHECKS, write_target

    pytester.makepyfile(test_grants=GRANT_CHECKS, test_dumps=DUMP_CHECKS.format(ok=True),
                        test_sql="import pytest\npytestmark = pytest.mark.sql\n\ndef test_lock(): pass\n")
    monkeypatch.setenv("KUMA_PUSH_GUARD", "tok-guard")
    monkeypatch.setenv("KUMA_PUSH_LOCAL", "tok-local")
    kuma = ('\n[kuma]\nurl = "http://127.0.0.1:9"\n[[kuma.push]]\nmonitor = "Guard"\n'
            'token_env = "KUMA_PUSH_GUARD"\ncovers = ["grants", "sql"]\n[[kuma.push]]\nmonitor = "Local"\n'
            'token_env = "KUMA_PUSH_LOCAL"\ncovers = ["dumps"]\n')
    target = write_target(pytester.path, kuma)
    for extra in ([], ["-n", "2"]):
        result = pytester.runpytest_subprocess("--target", str(target), "--kuma-dry-run", "-p", "no:cacheprovider",
                                               "test_grants.py", "test_dumps.py", "test_sql.py", *extra)
        result.assert_outcomes(passed=5)
        result.stdout.fnmatch_lines(["Guard: *status=up msg='OK: 3/3 checks passed (grants, sql)'*",
                                     "Local: *status=up msg='OK: 2/2 checks passed (dumps)'*"])
