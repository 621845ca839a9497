"""The metrics without a Prometheus: the shipped rules pass promtool's own checks and unit tests, every name
the rules, the Grafana dashboard and the README use is one the suite writes, a run that never starts still
writes its metrics (exit 4, run_ok 0), and the carried last-success times survive a red night.
The series in a real Prometheus, the Pushgateway and the alerts firing: tests/test_metrics_prometheus.py."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from checkrun import pytester_env
from test_reports_truth import PROBE, SITE_CONFTEST, write_probe_target

from pgbackup_verify.metrics import names, state

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "pgbackup-verify.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "pgbackup-verify.rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "pgbackup-verify.json"
NAME = re.compile(r"\bpgbackup_verify_[a-z_]+")


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], input=stdin, capture_output=True, text=True, timeout=300, check=False)


def test_promtool_checks_the_rules_and_runs_their_unit_tests():
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0 and "SUCCESS: 11 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_promtool_unit_tests_fail_when_a_rule_breaks(tmp_path):
    """The unit tests can fail: a NoRecentRun at 48 h instead of 26 h misses the 41 silent hours."""
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("> 93600", "> 172800"))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    tested = promtool("test", "rules", str(tmp_path / RULE_TESTS.name))
    assert tested.returncode != 0 and "PgBackupNoRecentRun" in tested.stdout + tested.stderr


@pytest.mark.parametrize("path", [RULES, RULE_TESTS, DASHBOARD], ids=lambda p: p.name)
def test_rules_and_dashboard_name_only_metrics_the_suite_writes(path):
    used = set(NAME.findall(path.read_text()))
    assert used, f"{path.name} names no metric"
    assert used <= names.NAMES, f"{path.name} names metrics the suite never writes: {sorted(used - names.NAMES)}"


def test_the_dashboard_is_grafana_json_over_prometheus():
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    assert doc["uid"] and len(exprs) >= 10
    assert all(p["datasource"]["type"] == "prometheus" for p in doc["panels"])
    # The figures a fleet owner looks at first are on it.
    for m in (names.TARGET_OK, names.LAST_RUN, names.LAST_SUCCESS, names.DUMP_AGE, names.DRILL_DURATION):
        assert any(m.name in e for e in exprs), m.name


def test_readme_table_documents_every_metric_with_its_labels():
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(pgbackup_verify_[a-z_]+)` \| ([^|]*) \|",
                                                         (ROOT / "README.md").read_text(), re.M)}
    assert set(rows) == names.NAMES
    for m in names.ALL:
        assert rows[m.name].strip() == ", ".join(f"`{label}`" for label in m.labels), m.name


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgbackup_verify.cli", *args], cwd=tmp_path,
                          env=pytester_env(tmp_path), capture_output=True, text=True, timeout=120, check=False)


def series(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_a_run_that_never_starts_still_writes_its_metrics(tmp_path):
    """A broken target file: exit 4, and the textfile says so (run_ok 0, exit code 4) instead of keeping
    an earlier run's green series; promtool accepts it; the file is 0644 whatever the umask."""
    target = tmp_path / "broken.toml"
    target.write_text('[database]\ndsn = "host=127.0.0.1 dbname=x"\n')  # no dump_role, no [backups]
    prom = tmp_path / "textfile" / "pgbackup_verify.prom"
    prom.parent.mkdir()
    prom.write_text("pgbackup_verify_run_ok 1\n")  # an earlier green run
    old = os.umask(0o077)
    try:
        proc = run_cli(tmp_path, "--target", str(target), "--metrics", str(prom), "--reports-dir",
                       str(tmp_path / "reports"))
    finally:
        os.umask(old)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    got = series(prom.read_text())
    assert got["pgbackup_verify_run_ok"] == 0 and got["pgbackup_verify_run_exit_code"] == 4
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644
    checked = promtool("check", "metrics", stdin=prom.read_text())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The reports say the same run: latest.json is NOT CHECKED.
    assert json.loads((tmp_path / "reports" / "latest.json").read_text())["status"] == "FAILED"


@pytest.mark.parametrize(("where", "said"), [
    ("missing/pgbackup_verify.prom", "does not exist or cannot be written"),
    ("pgbackup_verify.txt", "node_exporter reads only *.prom files"),
])
def test_a_metrics_file_that_cannot_work_is_one_line_and_exit_4(tmp_path, where, said):
    target = tmp_path / "t.toml"
    target.write_text('[database]\ndsn = "host=127.0.0.1 dbname=x"\ndump_role = "r"\n'
                      f'[backups]\ndirectory = "{tmp_path}"\n')
    proc = run_cli(tmp_path, "--target", str(target), "--metrics", str(tmp_path / where))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "--metrics" in ln]
    assert lines and said in lines[0] and "Traceback" not in proc.stdout + proc.stderr


def test_last_success_is_carried_over_a_red_night_and_dropped_with_its_target(tmp_path):
    t0 = 1_700_000_000.0
    green = state.State().updated(ran=[("a", "dumps"), ("b", "dumps")], succeeded=[("a", "dumps"), ("b", "dumps")],
                                  at=t0)
    red = green.updated(ran=[("a", "dumps")], succeeded=[], at=t0 + 86400, keep=["a"])
    assert red.times == {("a", "dumps"): (t0 + 86400, t0)}  # b left the configuration
    path = tmp_path / state.STATE_FILE
    state.write(path, red)
    assert state.read(path) == red


@pytest.mark.parametrize("text", ["", "[1, 2]", '{"targets": {"a": {"dumps": {"last_run": "x", "last_success": '
                                  'NaN}}}}', '{"targets": {"a": []}}', "\xff\xfe"])
def test_a_foreign_state_file_is_no_state(tmp_path, text):
    path = tmp_path / state.STATE_FILE
    path.write_text(text, encoding="latin-1")
    assert all(v == (None, None) for v in state.read(path).times.values())


def probe_run(pytester: pytest.Pytester, prom: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--target", str(write_probe_target(pytester.path)),
                                         f"--metrics={prom}", *args, timeout=60)


@pytest.mark.parametrize(("probe", "code"), [("sigterm", 2), ("configure", 3), ("usage", 4)])
def test_after_a_green_run_an_interrupt_a_crash_or_a_usage_error_writes_run_ok_0(pytester, monkeypatch, probe, code):
    """Every way a run can end rewrites the textfile with its exit code; the last success of the green run
    before is carried, and the last run is not moved by a run that judged nothing."""
    pytester.makepyfile(test_probe=PROBE)
    pytester.makeconftest(SITE_CONFTEST)
    prom = pytester.path / "pgbackup_verify.prom"
    assert probe_run(pytester, prom).ret == 0
    green = series(prom.read_text())
    assert green["pgbackup_verify_run_ok"] == 1
    success = 'pgbackup_verify_last_success_timestamp_seconds{concern="other",target="t"}'
    last_run = 'pgbackup_verify_last_run_timestamp_seconds{concern="other",target="t"}'
    monkeypatch.setenv("PGBV_PROBE", probe)
    if probe == "usage":  # refused by pytest's parser: the CLI's witness writes the reports and the metrics
        ret = run_cli(pytester.path, "--target", str(pytester.path / "t.toml"), f"--metrics={prom}",
                      "--no-such-option").returncode
    else:
        ret = probe_run(pytester, prom).ret
    assert ret == code
    got = series(prom.read_text())
    assert (got["pgbackup_verify_run_ok"], got["pgbackup_verify_run_exit_code"]) == (0, code)
    assert got[success] == green[success]
    if probe == "sigterm":  # the checks started: the run counts as one, its concern did not succeed
        assert got[last_run] > green[last_run] and got['pgbackup_verify_target_ok{target="t"}'] == 0
        assert got['pgbackup_verify_run_checks{outcome="not run"}'] == 2
    else:
        assert got[last_run] == green[last_run]


@pytest.mark.parametrize(("section", "said"), [
    ('pushgateway = "localhost:9091"', "[prometheus].pushgateway: 'localhost:9091' is not an http(s) URL"),
    ('pushgateway = "http://user:pw@gw:9091"', "[prometheus].pushgateway: credentials in the URL are refused"),
    ('job = "pg backup"', "[prometheus].job: 'pg backup' is not a Prometheus label value"),
    ("push_timeout = 0", "[prometheus].push_timeout"),
])
def test_a_wrong_prometheus_section_is_one_line_naming_the_key(tmp_path, section, said):
    from pgbackup_verify.config import ConfigError, load_target

    (tmp_path / "b").mkdir()
    t = tmp_path / "t.toml"
    t.write_text(f'[database]\ndsn = "host=127.0.0.1 dbname=x"\ndump_role = "r"\n'
                 f'[backups]\ndirectory = "{tmp_path / "b"}"\n[prometheus]\n{section}\n')
    with pytest.raises(ConfigError) as e:
        load_target(t)
    assert said in str(e.value) and "\n" not in str(e.value) and "pw" not in str(e.value)
