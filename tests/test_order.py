"""A report ordered by cause: upstream checks run and are shown first, a check whose input an upstream
check already found bad says "not judged: <that finding>" instead of its own (wrong) fix and is never
green, and a concern with most checks skipped is "partly checked", not OK.

The checks below run through the real plugin (real pytest reports) against a target whose database is
never contacted; the module lists the downstream (drill) check FIRST, so the order is the plugin's.
"""

from __future__ import annotations

import json
import re

import pytest
from kuma_helpers import MARKERS_INI, write_target

from pgbackup_verify.outcome import CAUSE_ORDER, CheckResult, RunFold, cause_rank, concern_status, order_by_cause

KUMA = ('\n[kuma]\nurl = "http://127.0.0.1:9"\npush_timeout = 1\n'
        '[[kuma.push]]\nmonitor = "Drill"\ntoken_env = "KUMA_PUSH_ORDER"\ncovers = ["drill"]\n'
        '[[kuma.push]]\nmonitor = "All"\ntoken_env = "KUMA_PUSH_ORDER_ALL"\ncovers = ["drill", "grants", "dumps"]\n')

CHECKS = '''import pytest

@pytest.mark.drill
def test_schemas_restored(target, evidence):
    evidence.require_upstream("grants.read")
    pytest.fail("restore drill schemas: FAILED (missing: public); fix: GRANT USAGE ON SCHEMA public TO directus;",
                pytrace=False)

@pytest.mark.drill
def test_cleanup(target, evidence):
    pass

@pytest.mark.dumps
def test_dump_fresh(target, evidence):
    pass

@pytest.mark.dumps
def test_dump_toc(target, evidence):
    pytest.skip("not applicable: plain dumps")

@pytest.mark.dumps
def test_dump_other(target, evidence):
    pytest.skip("no custom dump")

@pytest.mark.grants
def test_usage(target, evidence):
    evidence.cause("grants.read")
    if {healthy}:
        return
    pytest.fail("dump role USAGE on every schema: FAILED (1 of 3 schemas without USAGE for directus vs 0 allowed); "
                "fix (as workflow_admin): GRANT USAGE ON SCHEMA sandbox_tac TO directus;", pytrace=False)
'''


def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, healthy: bool) -> tuple[str, dict, str]:
    monkeypatch.setenv("KUMA_PUSH_ORDER", "tok-order")
    monkeypatch.setenv("KUMA_PUSH_ORDER_ALL", "tok-order-all")
    pytester.makefile(".ini", pytest=MARKERS_INI)
    pytester.makepyfile(test_checks=CHECKS.replace("{healthy}", str(healthy)))
    target = write_target(pytester.path, KUMA)
    result = pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", "--kuma-dry-run",
                                           "--json", "out.json", "-v", "test_checks.py")
    out = result.stdout.str()
    assert result.ret == (0 if healthy else 1), out[-3000:]
    html = (pytester.path / "reports/latest.html").read_text()
    return out, json.loads((pytester.path / "out.json").read_text()), html


def test_upstream_failure_comes_first_and_downstream_is_not_judged(pytester: pytest.Pytester,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out, doc, html = run(pytester, monkeypatch, healthy=False)
    # Console: the checks ran in the order of cause, whatever the module's order.
    ran = re.findall(r"test_checks.py::(test_\w+)", out)
    assert ran.index("test_usage") < ran.index("test_dump_fresh") < ran.index("test_schemas_restored"), ran
    # The downstream check names the upstream finding, not its own GRANT of an already granted schema.
    [schemas] = [c for c in doc["checks"] if c["name"] == "test_schemas_restored"]
    assert (schemas["outcome"], schemas["kind"]) == ("skipped", "not judged")
    assert schemas["message"] == ("not judged: dump role USAGE on every schema: FAILED (1 of 3 schemas without "
                                  "USAGE for directus vs 0 allowed)")
    assert "GRANT USAGE ON SCHEMA public" not in out + json.dumps(doc) + html
    # Never silent: the drill monitor is DOWN although its other check passed; the first reason is the cause.
    assert ("Drill: would push status=down msg='NOT JUDGED drill: dump role USAGE on every schema: 1 of 3 schemas "
            "without USAGE for directus vs 0 allowed'") in out, out[-2000:]
    assert ("All: would push status=down msg='FAILED grants: dump role USAGE on every schema: 1 of 3 schemas "
            "without USAGE for directus vs 0 allowed (1 not judged)'") in out, out[-2000:]
    # JSON and HTML: grants before dumps before drill; the drill concern says why it is not judged.
    assert [c["concern"] for c in doc["concerns"]] == ["grants", "dumps", "drill"]
    assert [c["status"] for c in doc["concerns"]] == ["FAILED", "PARTLY CHECKED", "NOT JUDGED"]
    blocks = re.findall(r"data-concern='(\w+)'", html)
    assert blocks[:2] == ["grants", "drill"], blocks  # the failure's chain first, in the order of cause
    assert "1 of 2 checks passed, 1 not judged (an upstream check failed)" in html
    assert "pgbackup-verify target selftest: FAILED" in out


def test_healthy_upstream_judges_downstream_and_partly_checked_is_not_ok(pytester: pytest.Pytester,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makefile(".ini", pytest=MARKERS_INI)
    monkeypatch.setenv("KUMA_PUSH_ORDER", "tok-order")
    monkeypatch.setenv("KUMA_PUSH_ORDER_ALL", "tok-order-all")
    pytester.makepyfile(test_checks=CHECKS.replace("{healthy}", "True"))
    target = write_target(pytester.path, KUMA)
    result = pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", "--kuma-dry-run",
                                           "--json", "out.json", "test_checks.py")
    out = result.stdout.str()
    doc = json.loads((pytester.path / "out.json").read_text())
    html = (pytester.path / "reports/latest.html").read_text()
    # Upstream passed: the downstream check judges on its own (here it fails with its own finding).
    [schemas] = [c for c in doc["checks"] if c["name"] == "test_schemas_restored"]
    assert schemas["outcome"] == "failed" and schemas["kind"] == "", schemas
    # dumps: 1 of 3 judged -> partly checked in the console, the JSON and the HTML; never plain OK.
    assert "partly checked: dumps 1 of 3 judged" in out, out[-2000:]
    assert {"target": "selftest", "concern": "dumps", "status": "PARTLY CHECKED", "judged": "1 of 3 judged"} \
        in doc["concerns"]
    assert "partly checked (1 of 3 judged): 1 of 3 checks passed, 2 skipped" in html


def result(nodeid: str, concern: str, outcome: str, kind: str = "", target: str = "t") -> CheckResult:
    return CheckResult(nodeid=nodeid, name=nodeid, target=target, concern=concern, outcome=outcome, message="",
                       evidence=[], seconds=0.0, kind=kind)


def test_fold_orders_by_cause_and_never_reads_not_judged_as_green() -> None:
    assert [cause_rank(c) for c in CAUSE_ORDER] == list(range(len(CAUSE_ORDER)))
    assert cause_rank("site_concern") < cause_rank("other")
    fold = RunFold()
    for r in (result("d", "drill", "skipped", "not judged"), result("s", "sql", "passed"),
              result("g", "grants", "passed"), result("u", "dumps", "passed")):
        fold.checks[r.nodeid] = r
    assert [c for _, c, _, _ in fold.concern_statuses()] == ["grants", "dumps", "drill", "sql"]
    assert fold.status("t") == "FAILED"  # a not-judged check alone already makes the target red
    assert concern_status(["passed", "skipped", "skipped"]) == "PARTLY CHECKED"
    assert concern_status(["passed", "passed", "skipped"]) == "OK"
    assert concern_status(["skipped"], ["not configured"]) == "NOT CONFIGURED"
    # Collection: sorted by cause within each run of one target's checks; targets are never interleaved.
    items = [("a", "drill"), ("a", "grants"), ("b", "sql"), ("b", "dumps"), ("b", "grants")]
    assert order_by_cause(items, lambda i: i[0], lambda i: i[1]) == [
        ("a", "grants"), ("a", "drill"), ("b", "grants"), ("b", "dumps"), ("b", "sql")]
