"""The HTML summary and charts as rendered strings: order, escaping, edge cases of the history.

The browser test (test_report_browser.py) shows the same in Chromium; these pin the details fast.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from pgbackup_verify_demo import demo

from pgbackup_verify.facts import history
from pgbackup_verify.facts.history import History, RunRecord
from pgbackup_verify.report import charts
from pgbackup_verify.report.html import split_message
from pgbackup_verify.report.summary import CONCERNS, CheckResult, RunSummary


def result(name: str, concern: str, outcome: str, message: str = "", evidence=(), target: str = "t") -> CheckResult:
    return CheckResult(nodeid=f"checks/x.py::{name}[{target}]", name=name, target=target, concern=concern,
                       outcome=outcome, message=message, evidence=list(evidence), seconds=0.01,
                       label=name.removeprefix("test_").replace("_", " "))


def summary(*results: CheckResult) -> RunSummary:
    run = RunSummary(started=time.time())
    run.results = {r.nodeid: r for r in results}
    run.exit_status = 1 if any(r.outcome in ("failed", "error") for r in results) else 0
    return run


def test_message_splits_into_cause_and_fix() -> None:
    assert split_message("dump role usage: FAILED (sandbox_tac vs all schemas); fix: GRANT USAGE ON SCHEMA "
                         "sandbox_tac TO directus;") == (
        "dump role usage: FAILED (sandbox_tac vs all schemas)", "GRANT USAGE ON SCHEMA sandbox_tac TO directus;", "")
    # Multi-line findings: listed objects before or after the fix line stay with the cause.
    assert split_message("restore drill errors: FAILED (2 error lines vs 0):\n  x\n  y\nfix: repair the dump job") \
        == ("restore drill errors: FAILED (2 error lines vs 0):\n  x\n  y", "repair the dump job", "")
    assert split_message("table SELECT: FAILED (2 of 9 tables lack SELECT vs 0 allowed); fix (as workflow_admin or "
                         "a superuser): GRANT SELECT ON a, b TO directus;\n  sandbox_tac.a\n  sandbox_tac.b") == (
        "table SELECT: FAILED (2 of 9 tables lack SELECT vs 0 allowed)\n  sandbox_tac.a\n  sandbox_tac.b",
        "GRANT SELECT ON a, b TO directus;", "as workflow_admin or a superuser")
    assert split_message("no fix given") == ("no fix given", "", "")


def test_failing_concerns_first_healthy_ones_one_line_and_unchecked_named() -> None:
    run = summary(
        result("test_latest_dump_is_fresh", "dumps", "passed", evidence=[("latest dump", "d.sql.gz, 64 MiB")]),
        result("test_dump_role_has_usage_on_every_schema", "grants", "failed",
               "dump role usage: FAILED (sandbox_tac); fix: GRANT USAGE ON SCHEMA sandbox_tac TO directus;",
               [("schemas without USAGE", "sandbox_tac")]),
        result("test_kuma_monitor_is_up", "kuma", "skipped", "no [kuma] section in the target file"))
    html = run.html(targets=["t"])
    concerns = re.findall(r"data-concern='(\w+)'", html)
    assert concerns == ["grants", "kuma", "dumps"]  # FAILED, SKIPPED, OK
    assert "<code>GRANT USAGE ON SCHEMA sandbox_tac TO directus;</code>" in html
    assert "latest dump=d.sql.gz, 64 MiB" in html  # the seed's "latest success OK size=64M" line
    assert "no [kuma] section in the target file" in html
    assert "not checked in this run: drill, host, offsite, sql" in html
    assert "Backup health: FAILED" in html and "http" not in html.replace("http://www.w3.org", "")


def test_multi_line_finding_keeps_its_fix_and_listed_objects() -> None:
    detail = ("table SELECT: FAILED (2 of 9 tables vs 0 allowed); fix (as workflow_admin): GRANT SELECT ON "
              "sandbox_tac.a, sandbox_tac.b TO directus;\n  sandbox_tac.a\n  sandbox_tac.b")
    r = result("test_dump_role_can_read_every_table", "grants", "failed", detail.splitlines()[0])
    r.detail = detail
    html = summary(r).html()
    assert "<code>GRANT SELECT ON sandbox_tac.a, sandbox_tac.b TO directus;</code>" in html
    assert "fix, as workflow_admin:" in html
    assert "(2 of 9 tables vs 0 allowed)\n  sandbox_tac.a\n  sandbox_tac.b</div>" in html


def test_names_from_the_database_are_escaped() -> None:
    evil = "<img src=x onerror=alert(1)>"
    run = summary(result("test_custom_sql_check", "sql", "failed", f"{evil}: FAILED (x); fix: DROP {evil}",
                         [("findings", evil)], target=evil))
    html = run.html(targets=[evil])
    assert evil not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_charts_from_history_with_one_run_and_with_none(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    assert "no payload or drill figures recorded yet (0 run(s)" in charts.trends_html(
        history.read(path), ["t"], {"t": 60.0}, 30)
    history.append(path, [RunRecord(time=1.7e9, target="t", status="FAILED", outcomes={"failed": 1},
                                    failed=["payload follows its recent trend"],
                                    facts={"payload_bytes": 5_000_000, "drill_seconds": 80.0})])
    html = charts.trends_html(history.read(path), ["t"], {"t": 60.0}, 30)
    assert html.count("<svg") == 2 and html.count("<circle") == 2 and "<polyline" not in html
    assert "fill='#c62828'" in html  # a failed run's point is red
    assert "budget 60 s" in html and "stroke-dasharray" in html  # budget line within the scale
    assert "payload follows its recent trend" in html  # the recent-runs table names the failed check


@pytest.mark.parametrize("runs", [3, 30])
def test_charts_draw_the_retention_window_only(runs: int) -> None:
    recs = [RunRecord(time=1.7e9 + i * 86400, target="t", status="OK", outcomes={"passed": 1}, failed=[],
                      facts={"payload_bytes": 1e6 + i}) for i in range(10)]
    html = charts.trends_html(History(recs), ["t"], {}, runs)
    assert html.count("<circle") == min(runs, 10)


def test_every_concern_has_a_description() -> None:
    assert set(CONCERNS) == {"grants", "dumps", "drill", "kuma", "host", "offsite", "sql"}


def test_any_check_module_plugs_into_the_summary(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A check of another concern (here a stand-in grants check) needs nothing but its marker."""
    pytester.makepyfile(test_standin="""
import pytest

pytestmark = pytest.mark.grants

def test_dump_role_can_read_every_table(target, evidence):
    evidence("tables audited", 9)
    pytest.fail("table SELECT: FAILED (2 of 9 tables vs 0 allowed); fix (as workflow_admin): GRANT SELECT ON "
                "sandbox_tac.a, sandbox_tac.b TO directus;\\n  sandbox_tac.a\\n  sandbox_tac.b", pytrace=False)
""")
    (tmp_path / "b").mkdir()
    t = demo.write_target_file(tmp_path / "t.toml", "host=127.0.0.1 port=1 dbname=x user=y", tmp_path / "b",
                               name="t")
    result = pytester.runpytest_subprocess("--target", str(t), "-p", "no:cacheprovider", "--json", "out.json",
                                           "test_standin.py")
    result.assert_outcomes(failed=1)
    check = json.loads((pytester.path / "out.json").read_text())["checks"][0]
    assert check["concern"] == "grants" and check["label"] == "dump role can read every table"
    assert check["message"] == ("table SELECT: FAILED (2 of 9 tables vs 0 allowed); fix (as workflow_admin): "
                                "GRANT SELECT ON sandbox_tac.a, sandbox_tac.b TO directus;")
    assert check["detail"].endswith("\n  sandbox_tac.a\n  sandbox_tac.b")
    html = (pytester.path / "reports" / "latest.html").read_text()
    assert "<code>GRANT SELECT ON sandbox_tac.a, sandbox_tac.b TO directus;</code>" in html
    assert "data-concern='grants'" in html and "tables audited" in html
