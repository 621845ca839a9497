"""History and trends: every run appends its key figures; the trend checks pass with no history
(and say so), fail on a blown restore budget or a payload off its trend, and pass when in line.

The dump and drill fixtures fill `run_facts` in real runs; here a tiny plugin puts the figures in
directly (the contract documented in pgbackup_verify.facts.history), and history lines are written as
earlier runs would have written them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from checkrun import ChecksRun, run_checks
from pgbackup_verify_demo import demo

from pgbackup_verify.cli import checks_dir
from pgbackup_verify.config import ConfigError, load_target
from pgbackup_verify.facts import history
from pgbackup_verify.facts.history import RunRecord

CHECK = str(checks_dir() / "test_trends.py")
MIB = 1024 * 1024


def facts_plugin(pytester: pytest.Pytester, **facts: float) -> None:
    """What the dump/drill fixtures do in a real run: put this run's key figures into run_facts."""
    pytester.makepyfile(facts_plugin=f"""
import pytest

@pytest.fixture(scope="session", autouse=True)
def _figures(run_facts):
    run_facts.update({facts!r})
""")


def earlier_runs(where: pytest.Pytester | Path, payloads: list[float], drills: list[float] | None = None,
                 target: str = "t") -> Path:
    """Nightly history lines ending yesterday, as earlier runs would have appended them."""
    path = (where if isinstance(where, Path) else where.path) / "reports" / "history.jsonl"
    now = time.time()
    drills = drills or [30.0] * len(payloads)
    history.append(path, [RunRecord(time=now - (len(payloads) - i) * 86400, target=target, status="OK",
                                    outcomes={"passed": 2}, failed=[],
                                    facts={"payload_bytes": p, "drill_seconds": d})
                          for i, (p, d) in enumerate(zip(payloads, drills, strict=True))])
    return path


def run(pytester: pytest.Pytester, tmp_path: Path, trends: str = "", *args: str) -> pytest.RunResult:
    (tmp_path / "b").mkdir(exist_ok=True)
    # The trend checks never connect: a dead DSN proves it.
    t = demo.write_target_file(tmp_path / "t.toml", "host=127.0.0.1 port=1 dbname=x user=y", tmp_path / "b",
                               name="t", extra=trends)
    return pytester.runpytest_subprocess("--target", str(t), "-p", "no:cacheprovider", "-p", "facts_plugin",
                                         "--json", "out.json", CHECK, *args)


def checks_json(pytester: pytest.Pytester) -> dict[str, dict]:
    doc = json.loads((pytester.path / "out.json").read_text())
    return {c["name"]: c for c in doc["checks"]}


GROWING = [40 * MIB + i * 450_000 for i in range(8)]  # the seed's ~450 KB/day

# case (= target name) -> (earlier payloads, earlier drills, this run's figures, [trends] part)
CASES: dict[str, tuple[list[float], list[float] | None, dict[str, float], str]] = {
    "fresh": ([], None, {"payload_bytes": 40 * MIB, "drill_seconds": 12.5, "tables_restored": 21,
                         "dump_age_hours": 1.0}, ""),
    "in-line": (GROWING, None, {"payload_bytes": GROWING[-1] + 450_000, "drill_seconds": 31.0}, ""),
    "drop": (GROWING, None, {"payload_bytes": 12 * MIB, "drill_seconds": 31.0}, ""),
    "jump": (GROWING, None, {"payload_bytes": 90 * MIB, "drill_seconds": 31.0}, ""),
    "factor": (GROWING, None, {"payload_bytes": GROWING[-1] * 1.3},
               "[trends]\npayload_factor = 1.2\npayload_window = 3\nmin_history = 2\n"),
    "budget": (GROWING, [30.0] * 8, {"payload_bytes": GROWING[-1], "drill_seconds": 75.5},
               "[trends]\nrestore_budget_seconds = 60\n"),
    "no-figures": (GROWING, None, {}, ""),
}

FACTS_BY_TARGET_PLUGIN = """
import pytest

FIGURES = {figures!r}

@pytest.fixture(scope="session", autouse=True)
def _figures(run_facts, target):
    run_facts.update(FIGURES[target.name])
"""


@pytest.fixture(scope="module")
def trend_run(tmp_path_factory: pytest.TempPathFactory) -> ChecksRun:
    """One checks run over a target per case; each case's earlier runs are its own lines in the history."""
    root = tmp_path_factory.mktemp("trend-cases")
    work = root / "run"
    work.mkdir()
    (work / "facts_plugin.py").write_text(FACTS_BY_TARGET_PLUGIN.format(
        figures={name: figures for name, (_, _, figures, _) in CASES.items()}))
    targets = []
    for name, (payloads, drills, _, trends) in CASES.items():
        if payloads:
            earlier_runs(work, payloads, drills, target=name)
        (root / name).mkdir()
        # The trend checks never connect: a dead DSN proves it.
        targets.append(demo.write_target_file(root / name / "t.toml", "host=127.0.0.1 port=1 dbname=x user=y",
                                              root / name, name=name, extra=trends))
    return run_checks(work, targets, [CHECK], "-p", "facts_plugin")


def evidence(run: ChecksRun, target: str, check: str) -> dict[str, str]:
    [c] = [c for c in run[target].checks if c["name"] == check]
    return dict(c["evidence"])


def test_no_history_yet_passes_and_says_so(trend_run: ChecksRun) -> None:
    trend_run["fresh"].assert_outcomes(passed=2)
    ev = evidence(trend_run, "fresh", "test_payload_follows_its_recent_trend")
    assert ev["trend"] == ("not judged yet: 0 earlier run(s) with a payload in the history, 3 needed; "
                           "the trend starts with this run")
    ev = evidence(trend_run, "fresh", "test_restore_drill_fits_the_time_budget")
    assert ev["earlier drills"] == "none in the history yet"
    # ...and this run is now the history's first line of the target, with every key figure and the outcomes.
    lines = [json.loads(ln) for ln in (trend_run.workdir / "reports" / "history.jsonl").read_text().splitlines()]
    [rec] = [ln for ln in lines if ln["target"] == "fresh"]
    assert rec["status"] == "OK" and rec["outcomes"]["passed"] == 2
    assert rec["facts"] == {"payload_bytes": 40 * MIB, "drill_seconds": 12.5, "tables_restored": 21,
                            "dump_age_hours": 1.0}


def test_payload_in_line_with_its_trend_passes(trend_run: ChecksRun) -> None:
    trend_run["in-line"].assert_outcomes(passed=2)
    ev = evidence(trend_run, "in-line", "test_payload_follows_its_recent_trend")
    assert ev["trend"].startswith("median 41.7 MiB") and "of the last 7 runs" in ev["trend"]
    assert ev["growth"] == "439.5 KiB/day over the window"


@pytest.mark.parametrize(("case", "shown"), [("drop", "12.0 MiB"), ("jump", "90.0 MiB")])
def test_payload_off_its_trend_fails_with_the_fix(trend_run: ChecksRun, case: str, shown: str) -> None:
    trend_run[case].assert_outcomes(passed=1, failed=1)
    trend_run[case].fnmatch_line(f"payload trend: FAILED ({shown} vs median 41.7 MiB of the last 7 runs, allowed "
                                 "27.8 MiB .. 62.6 MiB); fix: compare the newest dump's tables with the previous "
                                 "one*raise ?trends?.payload_factor for a run")


def test_payload_factor_and_window_come_from_the_target_file(trend_run: ChecksRun) -> None:
    trend_run["factor"].assert_outcomes(failed=1, skipped=1)
    trend_run["factor"].fnmatch_line("payload trend: FAILED (* vs median * of the last 3 runs, allowed *")


def test_drill_over_the_restore_budget_fails_with_the_fix(trend_run: ChecksRun) -> None:
    trend_run["budget"].assert_outcomes(passed=1, failed=1)
    trend_run["budget"].fnmatch_line("restore time budget: FAILED (drill took 75.5 s vs budget 60 s); fix: make the "
                                     "restore faster*raise ?trends?.restore_budget_seconds")
    trend_run["budget"].fnmatch_line("earlier drills: 8 runs, median 30.0 s")


def test_no_figures_this_run_skip_with_the_reason(trend_run: ChecksRun) -> None:
    trend_run["no-figures"].assert_outcomes(skipped=2)
    trend_run["no-figures"].fnmatch_line("*no drill_seconds measured in this run (the restore drill checks did not "
                                         "run*")
    trend_run["no-figures"].fnmatch_line("*no payload_bytes measured in this run (the dump checks did not run*")


def test_bad_trends_value_is_one_line_naming_the_key(tmp_path: Path) -> None:
    t = demo.write_target_file(tmp_path / "t.toml", "host=127.0.0.1 port=1 dbname=x user=y", tmp_path,
                               name="t", extra="[trends]\npayload_factor = 1\n")
    with pytest.raises(ConfigError) as e:  # exit 4 with this one line: see test_config.py
        load_target(t)
    assert "[trends].payload_factor: 1.0 must be greater than 1; use e.g. 1.5" in str(e.value)
    assert "\n" not in str(e.value)


def test_history_is_bounded_per_target_and_survives_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    for i in range(6):
        history.append(path, [RunRecord(time=1000.0 + i, target=name, status="OK", outcomes={}, failed=[],
                                        facts={"payload_bytes": i}) for name in ("a", "b")], max_per_target=4)
    with path.open("a") as f:
        f.write('{"time": 2000, "target": "a", "fac')  # a run killed mid-write
    h = history.read(path)
    assert h.unreadable == 1
    assert [r.facts["payload_bytes"] for r in h.for_target("a")] == [2, 3, 4, 5]
    assert [r.facts["payload_bytes"] for r in h.for_target("b")] == [2, 3, 4, 5]
    history.append(path, [RunRecord(time=3000.0, target="a", status="OK", outcomes={}, failed=[])],
                   max_per_target=4)
    assert len(history.read(path).for_target("a")) == 4


def test_unwritable_history_is_a_note_not_a_traceback(pytester: pytest.Pytester, tmp_path: Path) -> None:
    (pytester.path / "reports" / "history.jsonl").mkdir(parents=True)  # root ignores modes; a dir cannot be opened
    facts_plugin(pytester, payload_bytes=40 * MIB, drill_seconds=12.5)
    result = run(pytester, tmp_path)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["pgbackup-verify: run history not written to */reports/history.jsonl (Is a directory);"
                                 " fix the reports directory",
                                 "pgbackup-verify: OK targets=t *"])
    ev = dict(checks_json(pytester)["test_payload_follows_its_recent_trend"]["evidence"])
    assert ev["history"].endswith("/reports/history.jsonl cannot be read (Is a directory): judged as if there "
                                  "were none")
    assert "run history not written" in (pytester.path / "reports" / "latest.html").read_text()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
