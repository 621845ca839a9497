"""The table of "this check owns this fault" (pgbackup_verify.ownership) against the shipped checks, and the
words every output takes from the fold: cause order in the console, one line per warning, a likely cause.

The table-driven run that injects every fault the self-tests know is in test_fix_texts.py
(test_one_fault_one_red_line): it shares that module's one demo build.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from pgbackup_verify import ownership
from pgbackup_verify.evidence import Evidence, Found, Upstream
from pgbackup_verify.outcome import ROUTING_ATTR, RunFold
from pgbackup_verify.report.summary import RunSummary, check_lines
from pgbackup_verify.report.wording import in_short, warnings_of

CHECKS = Path(__file__).resolve().parent.parent / "checks"


def _checks() -> dict[str, str]:
    """Every shipped check function and the source of its body."""
    out = {}
    for path in CHECKS.glob("test_*.py"):
        text = path.read_text()
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                out[node.name] = ast.get_source_segment(text, node) or ""
    return out


def test_every_owner_in_the_table_is_a_shipped_check_named_once() -> None:
    checks = _checks()
    names = [o.check for o in ownership.OWNERS]
    assert sorted(set(names) - set(checks)) == []
    assert len(names) == len(set(names))


def test_every_check_that_vouches_for_a_key_is_in_the_table_with_it() -> None:
    """A check calling evidence.cause(...) owns a fault: the table must say which (and not vice versa)."""
    for name, body in _checks().items():
        owner = ownership.owner_of(name)
        if "evidence.cause(" in body or "owns=" in body:
            assert owner is not None and owner.keys, name
    for o in ownership.OWNERS:
        if o.keys and o.check.startswith("test_dump_role"):
            assert "evidence.cause(READ)" in _checks()[o.check], o.check


def test_the_causes_link_known_keys() -> None:
    keys = {k for o in ownership.OWNERS for k in o.keys}
    for cause, effect in ownership.CAUSES:
        assert cause in keys and effect in keys, (cause, effect)
    assert ownership.causes_of(ownership.dump_key("/b/x.sql.gz")) == [ownership.GRANTS_READ]
    assert ownership.causes_of(ownership.DUMP_AGE) == []


def _registry(*found: tuple[str, Found]) -> Upstream:
    up = Upstream()
    for key, f in found:
        up.report("t", (key,), f)
    return up


def test_a_dump_finding_names_the_grant_that_explains_it() -> None:
    usage = "dump role USAGE on every schema: FAILED (1 of 3 schemas without USAGE for directus vs 0 allowed)"
    up = _registry((ownership.GRANTS_READ, Found("failed", usage, "grants", ("sandbox_tac",))))
    ev = Evidence(target="t", registry=up)
    ev.cause(ownership.dump_key("/b/x.sql.gz"))
    ev.in_short("x.sql.gz: 0 B of dump, minimum 9.8 KiB", ["x.sql.gz"])
    msg = ev.explained("latest dump payload: FAILED (x.sql.gz: 0 bytes); fix: read the job log")
    assert msg == ("latest dump payload: FAILED (x.sql.gz: 0 bytes); likely cause: grants \u00b7 dump role USAGE on "
                   "every schema (sandbox_tac); fix: read the job log")
    assert ("in short", "x.sql.gz: 0 B of dump, minimum 9.8 KiB; likely cause: grants \u00b7 dump role USAGE on every "
                        "schema (sandbox_tac)") in ev.items
    # Grants that passed explain nothing; a key with no declared cause is left alone.
    passed = Evidence(target="t", registry=_registry((ownership.GRANTS_READ, Found("passed"))))
    passed.cause(ownership.dump_key("/b/x.sql.gz"))
    assert passed.explained("a: FAILED (b); fix: c") == "a: FAILED (b); fix: c"
    age = Evidence(target="t", registry=up)
    age.cause(ownership.DUMP_AGE)
    assert age.explained("a: FAILED (b); fix: c") == "a: FAILED (b); fix: c"


def test_the_first_failure_under_a_key_stands_and_later_checks_are_not_judged() -> None:
    key = ownership.dump_key("/b/x.sql.gz")
    up = _registry((key, Found("failed", "latest dump payload: FAILED (0 bytes)", "dumps")),
                   (key, Found("failed", "latest dump gzip stream: FAILED (cut)", "dumps")))
    ev = Evidence(target="t", registry=up)
    assert ev.upstream_finding(key) == "latest dump payload: FAILED (0 bytes)"
    with pytest.raises(pytest.skip.Exception, match="not judged: latest dump payload: FAILED"):
        ev.require_upstream(key)
    assert Evidence(target="other", registry=up).upstream_finding(key) == ""  # per target


def _phase(fold: RunFold, nodeid: str, concern: str, outcome: str, text: str = "",
           evidence: tuple[tuple[str, str], ...] = ()) -> None:
    longrepr = None if outcome == "passed" else (("x.py", 1, f"Skipped: {text}") if outcome == "skipped" else text)
    rep = pytest.TestReport(nodeid, ("x.py", 1, nodeid), {}, outcome, longrepr, "call",  # type: ignore[arg-type]
                            user_properties=list(evidence))
    setattr(rep, ROUTING_ATTR, {"target": "demo", "concern": concern, "markers": [concern]})
    fold.record(rep)


def _seed_night() -> RunFold:
    """pytest ran them drill, offsite, dumps, grants (any order): the console says grants first."""
    fold = RunFold()
    _phase(fold, "checks/test_drill.py::test_restore_finished_without_errors[demo]", "drill", "skipped",
           "not judged: latest dump payload: FAILED (x: 0 bytes)")
    _phase(fold, "checks/test_offsite.py::test_offsite_pg_dump_is_complete[demo]", "offsite", "failed",
           "offsite PG dump a.tar.gz: FAILED (empty payload); fix: re-upload")
    _phase(fold, "checks/test_dumps.py::test_latest_dump_payload_reaches_minimum[demo]", "dumps", "failed",
           "latest dump payload: FAILED (x: 0 bytes); fix: read the job log")
    _phase(fold, "checks/test_grants.py::test_dump_role_has_usage_on_every_schema[demo]", "grants", "failed",
           "dump role USAGE on every schema: FAILED (1 of 3 schemas); fix: GRANT USAGE ON SCHEMA sandbox_tac TO d;",
           (("in short", "USAGE missing on sandbox_tac for d"),))
    _phase(fold, "checks/test_grants.py::test_dump_role_can_select_every_relation[demo]", "grants", "passed",
           evidence=(("warning: not needed by pg_dump (a failure with [database].strict_grants = true)",
                      "view public.v (owner o) lacks SELECT\nview public.w (owner o) lacks SELECT\nfix: GRANT ..."),))
    fold.finish(1)
    return fold


def test_the_console_lists_failures_in_the_order_of_cause_by_readable_name() -> None:
    lines = check_lines(_seed_night())
    failed = [ln for ln in lines if ln.startswith("FAILED")]
    assert [ln.split(" \u00b7 ")[0] for ln in failed] == ["FAILED demo grants", "FAILED demo dumps",
                                                          "FAILED demo offsite"]
    assert failed[0] == ("FAILED demo grants \u00b7 dump role has usage on every schema: dump role USAGE on every "
                         "schema: FAILED (1 of 3 schemas); fix: GRANT USAGE ON SCHEMA sandbox_tac TO d;")
    assert ("WARNING demo grants \u00b7 dump role can select every relation: not needed by pg_dump (a failure with "
            "[database].strict_grants = true): view public.v (owner o) lacks SELECT (+1 more)") in lines
    assert not [ln for ln in lines if "test_" in ln]


def test_the_summary_line_and_json_count_the_warnings() -> None:
    run = RunSummary(fold=_seed_night())
    run.finish(1, 1)
    assert " exit=1 warnings=1 " in run.line(None)
    doc = json.loads(run.to_json())
    assert doc["warnings"] == [{"target": "demo", "concern": "grants", "check": "dump role can select every relation",
                                "warning": "not needed by pg_dump (a failure with [database].strict_grants = true): "
                                           "view public.v (owner o) lacks SELECT (+1 more)"}]


def test_in_short_is_the_checks_own_words_or_its_measure() -> None:
    fold = _seed_night()
    by = {r.name: r for r in fold.results()}
    assert in_short(by["test_dump_role_has_usage_on_every_schema"]) == "USAGE missing on sandbox_tac for d"
    assert in_short(by["test_latest_dump_payload_reaches_minimum"]) == "latest dump payload: x: 0 bytes"
    assert in_short(by["test_restore_finished_without_errors"]) == "latest dump payload: x: 0 bytes"
    assert warnings_of(by["test_latest_dump_payload_reaches_minimum"]) == []
