"""The HTML summary and charts as rendered strings: order, escaping, edge cases of the history.

The browser test (test_report_browser.py) shows the same in Chromium; these pin the details fast.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from markupsafe import escape
from pgbackup_verify_demo import demo

from pgbackup_verify.config import concerns as registry
from pgbackup_verify.evidence import Evidence
from pgbackup_verify.facts import history
from pgbackup_verify.facts.history import History, RunRecord
from pgbackup_verify.report import charts, render
from pgbackup_verify.report.html import split_message, summary_data
from pgbackup_verify.report.summary import CONCERNS, CheckResult, RunSummary

SRC = Path(render.__file__).resolve().parents[1]


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
    # The seed's "latest success OK size=64M", as a named value of the healthy concern's table.
    assert "<tr><th>latest dump</th><td>d.sql.gz, 64 MiB</td></tr>" in html
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


def test_each_concern_shows_its_description_in_the_summary() -> None:
    """Whatever its status, a concern's line carries its description from the registry."""
    assert CONCERNS is registry.CONCERNS  # the report reads the registry the config declares, not a copy
    outcomes = ["passed", "failed", "skipped", "error"]
    run = summary(*(result(f"test_{c}_check", c, outcomes[i % len(outcomes)], "x: FAILED (y); fix: z")
                    for i, c in enumerate(registry.CONCERNS)))
    html = run.html(targets=["t"])
    for concern, description in registry.CONCERNS.items():
        assert description.strip(), concern
        block = re.search(rf"<div class='pgbv-concern [^']*' data-target='t' data-concern='{concern}'>(.*?)</div>",
                          html, re.S)
        assert block is not None, concern
        assert f"<span class='pgbv-desc'>{escape(description)}</span>" in block.group(1), concern
    assert "not checked in this run" not in html


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


def test_summary_data_orders_concerns_failing_first_then_by_target_and_concern() -> None:
    """The template's data without a browser: blocks, counts, the split finding, what was not checked."""
    run = summary(
        result("test_b_ok", "dumps", "passed", evidence=[("a", "1"), ("b", "2"), ("c", "3")], target="b"),
        result("test_a_ok", "dumps", "passed", evidence=[("x", "y" * 500)], target="a"),
        result("test_a_skip", "kuma", "skipped", "no [kuma] section", target="a"),
        result("test_b_grants", "grants", "failed", "usage: FAILED (s); fix (as admin): GRANT USAGE ON SCHEMA s TO d;",
               [("schemas", "s")], target="b"),
        result("test_b_grants_skip", "grants", "skipped", "not applicable", target="b"),
        result("test_a_drill", "drill", "error", "", target="a"))
    data = summary_data(run, CONCERNS, ["a", "b", "c"])
    assert [(b.status, b.target, b.concern) for b in data.blocks] == [
        ("FAILED", "a", "drill"), ("FAILED", "b", "grants"), ("SKIPPED", "a", "kuma"),
        ("OK", "a", "dumps"), ("OK", "b", "dumps")]
    drill, grants, kuma, dumps_a, dumps_b = data.blocks
    assert (data.status, data.failed, data.passed, data.skipped, data.targets) == ("FAILED", 2, 2, 2, ["a", "b", "c"])
    assert drill.failed[0].cause == "error" and drill.failed[0].fix == ""  # an empty finding says what happened
    check = grants.failed[0]
    assert (check.outcome, check.cause, check.fix, check.who) == (
        "failed", "usage: FAILED (s)", "GRANT USAGE ON SCHEMA s TO d;", "admin")
    assert check.evidence == [("schemas", "s")] and grants.evidence_rows == []
    assert grants.count == "1 of 2 checks failed" and [k.reason for k in grants.skipped] == ["not applicable"]
    assert kuma.count == "0 of 1 checks passed, 1 skipped" and kuma.evidence_rows == []
    assert dumps_b.evidence_rows == [("a", "1"), ("b", "2"), ("c", "3")]  # a small table of named values
    [(name, value)] = dumps_a.evidence_rows
    assert name == "x" and len(value) == 200 and value.endswith("\u2026")  # a long value is cut
    assert [(u.target, u.concerns) for u in data.unchecked] == [
        ("a", ["grants", "host", "offsite", "sql"]), ("b", ["drill", "kuma", "host", "offsite", "sql"]),
        ("c", list(CONCERNS))]


def test_report_parts_are_plain_strings_that_cross_to_the_xdist_controller() -> None:
    """A worker's evidence extras travel through execnet, which refuses Markup (a str subclass)."""
    import execnet

    ev = Evidence()
    ev("findings", "<script>x</script>")
    html = ev.html()
    assert type(html) is str and execnet.loads(execnet.dumps(html)) == html
    assert "<code>&lt;script&gt;x&lt;/script&gt;</code>" in html
    for part in (summary(result("test_a", "dumps", "passed")).html(),
                 render.render_text("kuma.html.j2", ok=False, line="m: PUSH FAILED msg='<b>'")):
        assert type(part) is str
    assert render.render_text("kuma.html.j2", ok=False, line="m: PUSH FAILED msg='<b>'") == (
        "<p style='color:red'>Uptime Kuma m: PUSH FAILED msg=&#39;&lt;b&gt;&#39;</p>")


def test_templates_and_static_files_are_package_data_inlined_unescaped() -> None:
    """Every template compiles, and the page's CSS and JS are inlined as written (the JS has `&&`)."""
    names = render.ENV.list_templates()
    assert {"summary.html.j2", "charts.html.j2", "trends.html.j2", "evidence.html.j2", "kuma.html.j2"} <= set(names)
    for name in names:
        render.ENV.get_template(name)
    html = summary(result("test_a", "dumps", "failed", "a: FAILED (x); fix: y")).html()
    js = (SRC / "report" / "static" / "report.js").read_text().strip()
    css = (SRC / "report" / "static" / "report.css").read_text().strip()
    assert "&&" in js and f"<script>{js}</script>" in html and f"<style>{css}</style>" in html
    trends = charts.trends_html(History([]), ["t"], {}, 30)
    assert f"<style>{(SRC / 'report' / 'static' / 'trends.css').read_text().strip()}</style>" in trends


def test_markup_is_built_in_templates_only() -> None:
    """No hand escaping or HTML strings in Python; render.py is the one place that trusts markup."""
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "html.escape" not in text and "import html\n" not in text, path
        if path.name != "render.py":
            assert "Markup(" not in text, path


def test_chart_data_scales_points_and_the_budget_line() -> None:
    one = charts.chart(charts.Series("t", [(1.7e9, 10.0, "FAILED")], str, limit=15.0, limit_label="budget 15 s",
                                     zero=True))
    assert one.line == [] and one.last == "" and len(one.points) == 1
    assert one.points[0].color == charts.FAILED_COLOR and one.points[0].x == charts.LEFT + one.plot_width / 2
    assert one.limit is not None and one.limit.label == "budget 15 s"
    assert one.top <= one.limit.y < one.points[0].y <= one.top + one.plot_height  # the budget is above the value
    far = charts.chart(charts.Series("t", [(1.7e9, 10.0, "OK"), (1.7e9 + 86400, 12.0, "OK")], str, limit=100.0))
    assert far.limit is None and len(far.line) == 2 and far.last  # a budget off the scale is not drawn


def test_a_healthy_concern_says_each_value_once_and_codes_in_words() -> None:
    """The newest dump's path is in every dump check's evidence: the concern's table shows it once."""
    from pgbackup_verify.report.figures import concern_rows, figures_line

    same = ("file", "/var/backups/pg/directus_2026-12-07_0200.sql.gz (211550 bytes on disk, 206.6 KiB)")
    rows = concern_rows([[same, ("age", "1.0 h")], [same, ("payload", "206.6 KiB")], [same, ("read", "0.1 s")]])
    assert rows == [same, ("age", "1.0 h"), ("payload", "206.6 KiB"), ("read", "0.1 s")]
    line = figures_line({"dump role": "directus", "payload_bytes": 211550, "dump_age_hours": 1.01,
                         "drill_tier": 2, "drill_full_passed": 1, "drill_seconds": 4.57, "tables_restored": 21,
                         "restore drill": "21 tables in 2 schemas, 4.6 s"})
    assert line == ("dump role: directus, payload: 206.6 KiB, dump age: 1.0 h, drill tier: full, "
                    "full drill passed: yes, restore drill: 21 tables in 2 schemas, 4.6 s")
