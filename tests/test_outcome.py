"""One verdict: every output of a run says the same thing about every shape of outcome.

Each row runs a small check module through the real plugin (real pytest reports, real xdist-free
session) against a target file whose database is never contacted, then reads the run's six
outputs: the summary line, the per-target line, the JSON, history.jsonl, the HTML summary and the
Kuma verdict (--kuma-dry-run). They must agree with each other and with the row.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest
from kuma_helpers import MARKERS_INI, write_target

MONITOR = "Local"
KUMA = ('\n[kuma]\nurl = "http://127.0.0.1:9"\npush_timeout = 1\n'
        f'[[kuma.push]]\nmonitor = "{MONITOR}"\ntoken_env = "KUMA_PUSH_OUTCOME"\ncovers = ["dumps"]\n')

HEAD = """import pytest
from pgbackup_verify.facts.db import DatabaseUnreachable

pytestmark = pytest.mark.dumps

@pytest.fixture
def broken_setup():
    raise RuntimeError("fixture could not start")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("cleanup: FAILED (left a lock file)")

def test_baseline(target):
    pass

"""

SUBJECTS = {
    "pass": "def test_subject(target):\n    pass\n",
    "fail": "def test_subject(target):\n"
            "    assert False, 'latest dump: FAILED (20 B vs 10000 B); fix: rerun the job'\n",
    "setup error": "def test_subject(target, broken_setup):\n    pass\n",
    "fail + teardown error": "def test_subject(target, broken_teardown):\n"
                             "    assert False, 'latest dump: FAILED (20 B vs 10000 B); fix: rerun the job'\n",
    "skip": "def test_subject(target):\n    pytest.skip('no [host] section; add one')\n",
    "not applicable": "def test_subject(target):\n"
                      "    pytest.skip('not applicable: plain-format dumps have no TOC')\n",
    "xfail": "@pytest.mark.xfail(reason='known gap')\ndef test_subject(target):\n    assert False\n",
    "xpass": "@pytest.mark.xfail(reason='known gap')\ndef test_subject(target):\n    pass\n",
    "xpass strict": "@pytest.mark.xfail(reason='known gap', strict=True)\ndef test_subject(target):\n    pass\n",
    "interrupted": "def test_subject(target):\n    raise KeyboardInterrupt\n\n"
                   "def test_zz_after(target):\n    pass\n",
    "user error": "def test_subject(target):\n"
                  "    raise DatabaseUnreachable(\"database x:1/y of target 'selftest' is unreachable; check it\")\n",
    "collection error": "import no_such_module\n",
    "zero selected": "def test_subject(target):\n    pass\n",
    "all skipped": "def test_subject(target):\n    pytest.skip('no [host] section; add one')\n",
}


@dataclass
class Row:
    shape: str
    status: str  # OK or FAILED, said by every output
    exit: int
    subject: tuple[str, str] | None  # (outcome, kind) of test_subject in the JSON
    kuma: str  # the exact msg pushed to the monitor (up when status is OK)
    counts: dict[str, int] = field(default_factory=dict)  # the run's counts (JSON, summary line)
    args: tuple[str, ...] = ()
    ran: bool = True  # some check reported: a per-target line, a history record


ROWS = [
    Row("pass", "OK", 0, ("passed", ""), "OK: 2/2 checks passed (dumps)", {"passed": 2}),
    Row("fail", "FAILED", 1, ("failed", ""), "FAILED dumps: latest dump: 20 B vs 10000 B", {"passed": 1, "failed": 1}),
    Row("setup error", "FAILED", 1, ("error", "setup"), "ERROR dumps: RuntimeError: fixture could not start",
        {"passed": 1, "error": 1}),
    # One check, one outcome: pytest counts "1 failed, 1 error"; the fold says failed everywhere.
    Row("fail + teardown error", "FAILED", 1, ("failed", ""), "FAILED dumps: latest dump: 20 B vs 10000 B",
        {"passed": 1, "failed": 1}),
    Row("skip", "OK", 0, ("skipped", ""), "OK: 1/2 checks passed, 1 skipped (dumps)", {"passed": 1, "skipped": 1}),
    Row("not applicable", "OK", 0, ("skipped", "not applicable"), "OK: 1/2 checks passed, 1 not applicable (dumps)",
        {"passed": 1, "skipped": 1}),
    Row("xfail", "OK", 0, ("skipped", "xfail"), "OK: 1/2 checks passed, 1 xfailed (dumps)",
        {"passed": 1, "skipped": 1}),
    Row("xpass", "OK", 0, ("passed", "xpass"), "OK: 2/2 checks passed (dumps)", {"passed": 2}),
    Row("xpass strict", "FAILED", 1, ("failed", "xpass strict"),
        "FAILED dumps: unexpectedly passed (strict xfail): known gap",
        {"passed": 1, "failed": 1}),
    Row("interrupted", "FAILED", 2, ("not run", ""), "run interrupted", {"passed": 1, "not run": 2}),
    Row("user error", "FAILED", 10, ("failed", ""),
        "FAILED dumps: DatabaseUnreachable: database x:1/y of target 'selftest' is unreachable; check it",
        {"passed": 1, "failed": 1}),
    Row("collection error", "FAILED", 2, None, "1 collection error(s): test_dumps.py", {}, ran=False),
    Row("zero selected", "FAILED", 5, None, "no check collected or selected", {}, ("-k", "nomatch"), ran=False),
    # Nothing judged is not a pass: every output says FAILED, and the exit is that of zero selected.
    Row("all skipped", "FAILED", 5, ("skipped", ""), "no check judged: all 1 selected checks skipped", {"skipped": 1},
        ("-k", "subject")),
]


@dataclass
class Outputs:
    line: str
    target_line: str | None
    doc: dict
    history: dict | None
    html_status: str
    kuma: tuple[str, str]  # (status, msg)


def read_outputs(pytester: pytest.Pytester, result: pytest.RunResult) -> Outputs:
    out = result.stdout.str()
    lines = [x for x in out.splitlines() if x.startswith("pgbackup-verify: ") and "targets=" in x]
    assert len(lines) == 1, out
    targets = re.findall(r"^pgbackup-verify target selftest: .*$", out, re.M)
    assert len(targets) <= 1, targets
    kuma = re.findall(rf"^{MONITOR}: would push status=(up|down) msg='(.*)' ping=\d+ ms", out, re.M)
    assert len(kuma) == 1, out
    reports = pytester.path / "reports"
    history = reports / "history.jsonl"
    records = [json.loads(x) for x in history.read_text().splitlines()] if history.exists() else []
    assert len(records) <= 1
    html = (reports / "latest.html").read_text()
    status = re.findall(r"Backup health: (OK|FAILED)", html)
    assert len(status) == 1, "no summary status in the HTML"
    return Outputs(lines[0], targets[0] if targets else None, json.loads((pytester.path / "out.json").read_text()),
                   records[0] if records else None, status[0], kuma[0])


@pytest.mark.parametrize("row", ROWS, ids=[r.shape for r in ROWS])
def test_every_output_says_the_same(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, row: Row) -> None:
    monkeypatch.setenv("KUMA_PUSH_OUTCOME", "tok-outcome")
    pytester.makefile(".ini", pytest=MARKERS_INI)
    pytester.makepyfile(test_dumps=(HEAD if row.shape != "collection error" else "") + SUBJECTS[row.shape])
    target = write_target(pytester.path, KUMA)
    result = pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", "--kuma-dry-run",
                                           "--json", "out.json", "test_dumps.py", *row.args)
    assert result.ret == row.exit, result.stdout.str()[-3000:]
    o = read_outputs(pytester, result)

    # The one verdict, said six times.
    assert o.line.startswith(f"pgbackup-verify: {row.status} targets=")
    assert o.doc["status"] == row.status
    assert o.html_status == row.status
    assert o.kuma == ("up" if row.status == "OK" else "down", row.kuma)
    if row.ran:
        assert (o.target_line or "").startswith(f"pgbackup-verify target selftest: {row.status} (")
        assert o.history is not None and o.history["status"] == row.status
    else:  # nothing ran: no target verdict to give, nothing for the trend of a target
        assert o.target_line is None and o.history is None

    # The same counts in the JSON, the summary line, the per-target line and the history.
    counts = {k: v for k, v in o.doc["counts"].items() if v}
    assert counts == row.counts
    for k in ("failed", "error", "skipped", "passed"):
        assert f" {k}={row.counts.get(k, 0)} " in o.line
    assert ("not_run=" in o.line) == ("not run" in row.counts)
    if row.ran:
        shown = ", ".join(f"{row.counts[k]} {k}" for k in ("failed", "error", "passed", "skipped", "not run")
                          if row.counts.get(k))
        assert o.target_line is not None and o.target_line.endswith(f"{shown})")
        assert {k: v for k, v in o.history["outcomes"].items() if v} == row.counts  # type: ignore[index]
    assert o.doc["exit_status"] == row.exit and f" exit={row.exit} " in o.line

    # The subject check, as the JSON names it.
    checks = {c["name"]: c for c in o.doc["checks"]}
    if row.subject is None:
        assert "test_subject" not in checks
    else:
        assert (checks["test_subject"]["outcome"], checks["test_subject"]["kind"]) == row.subject
    aborted = row.exit in (2, 5)
    assert (o.doc["abort"] is not None) == aborted
    if aborted:
        assert o.doc["abort"] == row.kuma and f'abort="{row.kuma}"' in o.line
        assert o.doc["notes"][0].startswith(f"FAILED: {row.kuma}")
    if row.shape == "fail + teardown error":
        result.assert_outcomes(passed=1, failed=1, errors=1)  # pytest's own count differs; ours is one check
        assert checks["test_subject"]["detail"].endswith(
            "\nteardown error: RuntimeError: cleanup: FAILED (left a lock file)")
        assert o.history is not None and o.history["failed"] == ["subject"]
    if row.shape == "interrupted":
        assert checks["test_zz_after"]["outcome"] == "not run"
        assert "run interrupted: " in (o.target_line or "")
        assert o.doc["notes"][0] == "FAILED: run interrupted (2 of 3 selected checks not run: subject, zz after)"
    if row.shape == "user error":
        assert checks["test_subject"]["message"].startswith("DatabaseUnreachable: database x:1/y")


def test_a_check_without_a_target_counts_too(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that takes no target is still a selected check: its failure fails the run everywhere."""
    monkeypatch.setenv("KUMA_PUSH_OUTCOME", "tok-outcome")
    pytester.makefile(".ini", pytest=MARKERS_INI)
    pytester.makepyfile(test_dumps=HEAD + "def test_helper_invariant():\n    assert 1 == 2, 'broken: FAILED'\n")
    target = write_target(pytester.path, KUMA)
    result = pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", "--kuma-dry-run",
                                           "--json", "out.json", "test_dumps.py")
    assert result.ret == 1
    o = read_outputs(pytester, result)
    assert o.line.startswith("pgbackup-verify: FAILED targets=selftest failed=1 error=0 skipped=0 passed=1 ")
    assert o.doc["status"] == o.html_status == "FAILED"
    assert o.kuma == ("down", "FAILED dumps: broken: FAILED")
    # The target's own checks passed: its line and history say so; the run says FAILED.
    assert o.target_line == "pgbackup-verify target selftest: OK (1 passed)"
    assert o.history is not None and o.history["status"] == "OK"


def test_the_fold_is_the_same_under_xdist(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller sees rebuilt reports, not items: routing and user errors travel on the reports."""
    monkeypatch.setenv("KUMA_PUSH_OUTCOME", "tok-outcome")
    pytester.makefile(".ini", pytest=MARKERS_INI)
    pytester.makepyfile(test_dumps=HEAD + SUBJECTS["fail + teardown error"] + "\n" + SUBJECTS["user error"]
                        .replace("test_subject", "test_unreachable"))
    target = write_target(pytester.path, KUMA)
    result = pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", "--kuma-dry-run",
                                           "--json", "out.json", "test_dumps.py", "-n", "2")
    assert result.ret == 1  # test_subject failed on its own finding: the user error's 10 does not hide it
    o = read_outputs(pytester, result)
    assert o.line.startswith("pgbackup-verify: FAILED targets=selftest failed=2 error=0 skipped=0 passed=1 ")
    assert o.target_line == "pgbackup-verify target selftest: FAILED (2 failed, 1 passed)"
    assert o.kuma == ("down", "FAILED dumps: latest dump: 20 B vs 10000 B (+1 more)")
    assert o.doc["status"] == o.html_status == o.history["status"] == "FAILED"  # type: ignore[index]


def test_collect_only_gives_no_verdict_and_no_trend_point(pytester: pytest.Pytester) -> None:
    pytester.makefile(".ini", pytest=MARKERS_INI)
    pytester.makepyfile(test_dumps=HEAD + SUBJECTS["pass"])
    target = write_target(pytester.path, "")
    result = pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", "--collect-only",
                                           "test_dumps.py")
    assert result.ret == 0
    assert "pgbackup-verify: OK" not in result.stdout.str() and "pgbackup-verify: FAILED" not in result.stdout.str()
    assert "pgbackup-verify target" not in result.stdout.str()
    assert not (pytester.path / "reports" / "history.jsonl").exists()
