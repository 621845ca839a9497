"""What a push monitor is told: the verdict rules alone (the real pushes are in test_kuma_push).

The outcomes go through the run's fold (pgbackup_verify.outcome) as pytest TestReports, phase by phase.
"""

from __future__ import annotations

import pytest

from pgbackup_verify.kuma.routing import PushMonitor
from pgbackup_verify.kuma.verdict import MSG_LIMIT, judge
from pgbackup_verify.outcome import ROUTING_ATTR, RunFold

LOCAL = PushMonitor("PG Backup Local", "KUMA_PUSH_LOCAL", ("dumps",), "http://127.0.0.1:1", 1.0)


def phase(fold: RunFold, nodeid: str, when: str, outcome: str, groups: set[str] | None = None,
          target: str = "demo", text: str = "boom") -> None:
    longrepr = None if outcome == "passed" else (("x.py", 1, f"Skipped: {text}") if outcome == "skipped" else text)
    rep = pytest.TestReport(nodeid, ("x.py", 1, nodeid), {}, outcome, longrepr, when)  # type: ignore[arg-type]
    setattr(rep, ROUTING_ATTR, {"target": target, "concern": "dumps", "markers": sorted(groups or {"dumps"})})
    fold.record(rep)


def outcomes(results: dict[str, str], target: str | None = "demo") -> RunFold:
    o = RunFold()
    for name, outcome in results.items():
        nodeid = f"checks/test_dumps.py::{name}[{target}]" if target else f"checks/test_dumps.py::{name}"
        o.select(nodeid, target or "", "dumps", {"dumps"})
        phase(o, nodeid, "setup", "passed", target=target or "")
        phase(o, nodeid, "call", outcome, target=target or "")
        phase(o, nodeid, "teardown", "passed", target=target or "")
    o.finish(1 if "failed" in results.values() else 0)
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
    o.select("checks/test_dumps.py::test_b[demo]", "demo", "dumps", {"dumps"})
    phase(o, "checks/test_dumps.py::test_b[demo]", "setup", "failed")
    phase(o, "checks/test_dumps.py::test_a[demo]", "teardown", "failed")
    assert judge(LOCAL, o, 1).msg == "2 errors of 2: test_a, test_b"


def test_a_failed_call_then_a_teardown_error_is_one_failed_check():
    """The Kuma message says what the report and JSON say: failed (the teardown error is in its detail)."""
    o = outcomes({"test_a": "failed", "test_b": "passed"})
    phase(o, "checks/test_dumps.py::test_a[demo]", "teardown", "failed", text="cleanup: FAILED (left a file)")
    assert judge(LOCAL, o, 1).msg == "1 failed of 2: test_a"
    check = o.checks["checks/test_dumps.py::test_a[demo]"]
    assert (check.outcome, check.message) == ("failed", "boom")
    assert check.detail == "boom\nteardown error: cleanup: FAILED (left a file)"


def test_a_selected_check_that_never_reported_is_not_run():
    o = outcomes({"test_a": "passed"})
    o.select("checks/test_dumps.py::test_b[demo]", "demo", "dumps", {"dumps"})
    phase(o, "checks/test_dumps.py::test_b[demo]", "setup", "passed")
    v = judge(LOCAL, o, 1)
    assert (v.status, v.msg) == ("down", "1 not run of 2: test_b")


def test_abort_reason_wins_over_outcomes():
    o = outcomes({"test_a": "passed"})
    o.interrupt("SIGTERM")
    o.finish(2)
    v = judge(LOCAL, o, 1)
    assert (v.status, v.msg) == ("down", "run interrupted by SIGTERM")


def test_a_check_no_monitor_covers_counts_for_every_monitor() -> None:
    """Never silent: a failing check whose marker the target file forgot to route still turns DOWN."""
    guard = PushMonitor("Guard", "T1", ("grants",), "http://k", 5.0)
    local = PushMonitor("Local", "T2", ("dumps",), "http://k", 5.0)
    claimed = {"grants", "dumps"}

    def run(sql_outcome: str) -> RunFold:
        out = RunFold()
        for nodeid, groups, outcome in (("g::a", {"grants"}, "passed"), ("d::b", {"dumps"}, "passed"),
                                        ("s::registry lock", {"sql"}, sql_outcome)):
            for when, result in (("setup", "passed"), ("call", outcome), ("teardown", "passed")):
                phase(out, nodeid, when, result, groups, target="")
        out.finish(1 if sql_outcome == "failed" else 0)
        return out

    for m in (guard, local):
        v = judge(m, run("failed"), 10, claimed)
        assert v.status == "down" and "registry lock" in v.msg, v
    assert [judge(m, run("passed"), 10, claimed).status for m in (guard, local)] == ["up", "up"]


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


@pytest.mark.parametrize("length", [150, 175, 189, 300, 5000])
def test_a_first_name_too_long_for_the_msg_survives_clipped(length):
    """Before: the shortener kept nothing and Kuma showed ' (+1 more)'."""
    long = "test_" + "x" * (length - 5)
    v = judge(LOCAL, outcomes({long: "failed", "test_payload": "failed"}), 1)
    assert v.status == "down" and len(v.msg) <= MSG_LIMIT
    assert v.msg.startswith("2 failed of 2: test_xxx")
    assert v.msg.endswith("… (+1 more)") or v.msg == f"2 failed of 2: {long}, test_payload"


def test_a_long_abort_reason_is_clipped_never_emptied():
    run = RunFold()
    run.refuse("config error: 'host.toml': [backups].an_unknown_key_" + "y" * 400 + ": unknown key")
    v = judge(LOCAL, run, 0)
    assert v.msg.startswith("config error: 'host.toml': [backups].an_unknown_key_yyy") and v.msg.endswith("…")
    assert len(v.msg) == MSG_LIMIT
