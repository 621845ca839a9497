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
          target: str = "demo", text: str = "boom", evidence: tuple[tuple[str, str], ...] = (),
          concern: str = "dumps") -> None:
    longrepr = None if outcome == "passed" else (("x.py", 1, f"Skipped: {text}") if outcome == "skipped" else text)
    rep = pytest.TestReport(nodeid, ("x.py", 1, nodeid), {}, outcome, longrepr, when,  # type: ignore[arg-type]
                            user_properties=list(evidence))
    setattr(rep, ROUTING_ATTR, {"target": target, "concern": concern, "markers": sorted(groups or {"dumps"})})
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
    assert (v.status, v.msg, v.ping_ms) == ("down", "FAILED dumps: boom", 1234)


def test_many_failures_fit_in_one_short_msg():
    v = judge(LOCAL, outcomes({f"test_check_number_{i:02d}_with_a_long_name": "failed" for i in range(30)}), 1)
    assert (v.status, v.msg) == ("down", "FAILED dumps: boom (+29 more)")


def test_the_msg_is_the_first_cause_in_words():
    """The issue's seed night: the grants finding in a few words, naming the schema; never a function name."""
    o = RunFold()
    grants, payload, drill = ("checks/test_grants.py::test_dump_role_has_usage_on_every_schema[demo]",
                              "checks/test_dumps.py::test_latest_dump_payload_reaches_minimum[demo]",
                              "checks/test_drill.py::test_restore_finished_without_errors[demo]")
    for nodeid, concern in ((drill, "drill"), (payload, "dumps"), (grants, "grants")):  # pytest's order: any
        o.select(nodeid, "demo", concern, {concern})
    phase(o, drill, "call", "skipped", {"drill"}, text="not judged: latest dump payload: FAILED (x.sql.gz: 0 bytes)",
          concern="drill")
    phase(o, payload, "call", "failed", text="latest dump payload: FAILED (x.sql.gz: 0 bytes decompressed, minimum "
          "10000); fix: check pg_dump's stderr")
    phase(o, grants, "call", "failed", {"grants"}, concern="grants",
          text="dump role USAGE on every schema: FAILED (1 of 3 schemas without USAGE for directus vs 0 allowed); "
               "fix (as workflow_admin or a superuser): GRANT USAGE ON SCHEMA sandbox_tac TO directus;",
          evidence=(("in short", "USAGE missing on sandbox_tac for directus"),))
    o.finish(1)
    every = PushMonitor("All", "T", ("grants", "dumps", "drill"), "http://k", 1.0)
    v = judge(every, o, 1)
    assert (v.status, v.msg) == ("down", "FAILED grants: USAGE missing on sandbox_tac for directus "
                                         "(+1 more, 1 not judged)")
    v = judge(LOCAL, o, 1, {"grants", "dumps", "drill"})
    assert v.msg == "FAILED dumps: latest dump payload: x.sql.gz: 0 bytes decompressed, minimum 10000"
    drill_only = PushMonitor("Drill", "T", ("drill",), "http://k", 1.0)
    assert judge(drill_only, o, 1, {"grants", "dumps", "drill"}).msg == (
        "NOT JUDGED drill: latest dump payload: x.sql.gz: 0 bytes")


def test_a_warning_is_counted_in_an_up_msg():
    o = RunFold()
    phase(o, "checks/test_dumps.py::test_a[demo]", "call", "passed",
          evidence=(("warning: not needed by pg_dump", "view v lacks SELECT"),))
    phase(o, "checks/test_dumps.py::test_b[demo]", "call", "passed")
    o.finish(0)
    assert judge(LOCAL, o, 1).msg == "OK: 2/2 checks passed (1 warning) (dumps)"


def test_setup_error_counts_as_error_and_teardown_error_spoils_a_pass():
    o = outcomes({"test_a": "passed"})
    o.select("checks/test_dumps.py::test_b[demo]", "demo", "dumps", {"dumps"})
    phase(o, "checks/test_dumps.py::test_b[demo]", "setup", "failed")
    phase(o, "checks/test_dumps.py::test_a[demo]", "teardown", "failed")
    assert judge(LOCAL, o, 1).msg == "ERROR dumps: boom (+1 more)"


def test_a_failed_call_then_a_teardown_error_is_one_failed_check():
    """The Kuma message says what the report and JSON say: failed (the teardown error is in its detail)."""
    o = outcomes({"test_a": "failed", "test_b": "passed"})
    phase(o, "checks/test_dumps.py::test_a[demo]", "teardown", "failed", text="cleanup: FAILED (left a file)")
    assert judge(LOCAL, o, 1).msg == "FAILED dumps: boom"
    check = o.checks["checks/test_dumps.py::test_a[demo]"]
    assert (check.outcome, check.message) == ("failed", "boom")
    assert check.detail == "boom\nteardown error: cleanup: FAILED (left a file)"


def test_a_selected_check_that_never_reported_is_not_run():
    o = outcomes({"test_a": "passed"})
    o.select("checks/test_dumps.py::test_b[demo]", "demo", "dumps", {"dumps"})
    phase(o, "checks/test_dumps.py::test_b[demo]", "setup", "passed")
    v = judge(LOCAL, o, 1)
    assert (v.status, v.msg) == ("down", "NOT RUN dumps: b did not report")


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
                phase(out, nodeid, when, result, groups, target="", text="registry lock: FAILED (unlocked)")
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
def test_a_finding_too_long_for_the_msg_is_cut_at_a_word(length):
    """Before: the shortener kept nothing and Kuma showed ' (+1 more)'."""
    words = ("schema_" + "x" * 5 + " ") * (length // 13 + 1)
    o = RunFold()
    for name in ("test_a", "test_b"):
        phase(o, f"checks/test_dumps.py::{name}[demo]", "call", "failed", text=words.strip())
    o.finish(1)
    v = judge(LOCAL, o, 1)
    assert v.status == "down" and len(v.msg) <= MSG_LIMIT
    assert v.msg.startswith("FAILED dumps: schema_xxxxx")
    assert v.msg.endswith("schema_xxxxx… (+1 more)") or v.msg == f"FAILED dumps: {words.strip()} (+1 more)"


def test_one_word_too_long_is_cut_mid_word() -> None:
    o = outcomes({"test_a": "passed"})
    phase(o, "checks/test_dumps.py::test_b[demo]", "call", "failed", text="x" * 500)
    v = judge(LOCAL, o, 1)
    assert len(v.msg) == MSG_LIMIT and v.msg.startswith("FAILED dumps: xxx") and v.msg.endswith("x…")


def test_a_long_abort_reason_is_clipped_never_emptied():
    run = RunFold()
    run.refuse("config error: 'host.toml': [backups].an_unknown_key_" + "y" * 400 + ": unknown key")
    v = judge(LOCAL, run, 0)
    assert v.msg.startswith("config error: 'host.toml': [backups].an_unknown_key_yyy") and v.msg.endswith("…")
    assert len(v.msg) == MSG_LIMIT
