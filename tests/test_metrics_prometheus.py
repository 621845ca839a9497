"""The metrics in a real Prometheus: one stack (Prometheus, Pushgateway, node_exporter, Debian's packages)
and one demo database for the module. Three targets run: `demo` (healthy), `broken` (the seed's night: the
newest dump is a 20-byte empty gzip) and `silent` (healthy, then never run again). Every series is read back
through Prometheus' query API, from the textfile (job "node") and the Pushgateway (job "pgbackup_verify");
the shipped alert rules, with short `for:` and thresholds in a test copy, fire for the fault and for the run
that never happens, and clear when the fault is fixed."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from checkrun import pytester_env
from demohost import built_demo
from pgbackup_verify_demo import demo
from pgbackup_verify_demo.prometheus_stack import PrometheusStack

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "pgbackup-verify.rules.yml"
STALE_AFTER = 30  # seconds without a run before PgBackupNoRecentRun, in the test copy (26 h shipped)
SECRET = "pgbv-metrics-secret-7f3a"  # in the run's environment as a password and a token: never in a metric
JOBS = ("node", "pgbackup_verify")  # the textfile through node_exporter, the Pushgateway's group


def rules_copy(path: Path) -> Path:
    """The shipped rules with seconds where they have minutes, hours and days."""
    text = RULES.read_text()
    for old, new in (("for: 10m", "for: 1s"), ("for: 1h", "for: 1s"), ("> 93600", f"> {STALE_AFTER}"),
                     ("> 2 * 86400", "> 600"), ("> 8 * 86400", "> 600")):
        assert old in text, f"the shipped rules no longer hold {old!r}: update this copy"
        text = text.replace(old, new)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusStack]:
    work = tmp_path_factory.mktemp("prometheus")
    s = PrometheusStack(work, rules=rules_copy(work / "rules.yml")).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def demo_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo.Demo]:
    yield from built_demo(tmp_path_factory, "metrics-demo")


def variant(d: demo.Demo, name: str, pushgateway: str, backups: Path | None = None) -> Path:
    """The demo target under another name (and backup directory), pushing to the stack's Pushgateway."""
    text = d.target_file.read_text().replace('name = "demo"', f'name = "{name}"')
    if backups is not None:
        text = text.replace(str(d.workdir / "backups"), str(backups))
    path = d.workdir / "targets" / f"{name}.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'{text}\n[prometheus]\npushgateway = "{pushgateway}"\npush_timeout = 3\n')
    return path


def broken_backups(d: demo.Demo) -> Path:
    """A copy of the demo's week of dumps with a newer 20-byte empty gzip, as on the seed's night."""
    dst = d.workdir / "broken-backups"
    shutil.copytree(d.workdir / "backups", dst)
    empty = dst / time.strftime("directus_%Y-%m-%d_0300.sql.gz")
    empty.write_bytes(gzip.compress(b""))
    os.chmod(empty, 0o600)
    return dst


def run(d: demo.Demo, stack: PrometheusStack, *targets: Path, metrics: Path | None = None,
        reports: Path | None = None) -> tuple[subprocess.CompletedProcess[str], dict]:
    reports = reports or d.workdir / "reports"
    args = [f"--target={t}" for t in targets]
    args += [f"--metrics={metrics or stack.textfile_dir / 'pgbackup_verify.prom'}", f"--reports-dir={reports}"]
    env = pytester_env(d.workdir, {**d.cluster.env(), "PGPASSWORD": SECRET, "KUMA_PUSH_BACKUP_LOCAL": SECRET})
    proc = subprocess.run([sys.executable, "-m", "pgbackup_verify.cli", *args],
                          cwd=d.workdir, env=env, capture_output=True, text=True, timeout=600, check=False)
    return proc, json.loads((reports / "latest.json").read_text())


def failed(doc: dict) -> list[str]:
    return [f"{c['target']} {c['name']}: {c['message']}" for c in doc["checks"] if c["outcome"] != "passed"]


def by_job(stack: PrometheusStack, promql: str) -> dict[str, float]:
    """job -> value of a query that selects one series per job."""
    return {dict(k)["job"]: v for k, v in stack.values(promql).items()}


@pytest.fixture(scope="module")
def first_run(demo_host: demo.Demo, stack: PrometheusStack) -> tuple[subprocess.CompletedProcess[str], dict]:
    d = demo_host
    targets = (variant(d, "demo", stack.pushgateway), variant(d, "broken", stack.pushgateway, broken_backups(d)),
               variant(d, "silent", stack.pushgateway))
    proc, doc = run(d, stack, *targets)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc, doc


def test_the_series_reach_prometheus_through_the_textfile_and_the_pushgateway(first_run, stack, demo_host):
    proc, doc = first_run
    stack.wait_for("both jobs' series", lambda: set(by_job(
        stack, 'pgbackup_verify_target_ok{target="demo"}')) == set(JOBS))
    assert by_job(stack, 'pgbackup_verify_target_ok{target="demo"}') == {"node": 1, "pgbackup_verify": 1}
    assert by_job(stack, 'pgbackup_verify_target_ok{target="broken"}') == {"node": 0, "pgbackup_verify": 0}
    assert set(by_job(stack, "pgbackup_verify_run_exit_code").values()) == {1}
    assert set(by_job(stack, "pgbackup_verify_run_ok").values()) == {0}
    assert by_job(stack, 'pgbackup_verify_concern_ok{target="broken",concern="dumps"}') == {"node": 0,
                                                                                           "pgbackup_verify": 0}
    assert set(by_job(stack, 'pgbackup_verify_check_passed{target="broken",'
                             'check="test_latest_dump_payload_reaches_minimum"}').values()) == {0}
    assert set(by_job(stack, 'pgbackup_verify_check_passed{target="demo",'
                             'check="test_latest_dump_payload_reaches_minimum"}').values()) == {1}
    # The figures are the run's own (the JSON report's facts), in base units.
    facts = doc["facts"]["demo"]
    assert set(by_job(stack, 'pgbackup_verify_dump_payload_bytes{target="demo"}').values()) == {
        facts["payload_bytes"]}
    assert set(by_job(stack, 'pgbackup_verify_dump_age_seconds{target="demo"}').values()) == {
        facts["dump_age_hours"] * 3600}
    # The seed's night: the newest dump is the 20-byte file, the newest good one the night before's.
    assert set(by_job(stack, 'pgbackup_verify_dump_age_seconds{target="broken"}').values()) == {
        doc["facts"]["broken"]["dump_age_hours"] * 3600}
    assert doc["facts"]["broken"]["dump_age_hours"] < 0.5 < doc["facts"]["broken"]["good_dump_age_hours"]
    assert set(by_job(stack, 'pgbackup_verify_good_dump_age_seconds{target="broken"}').values()) == {
        doc["facts"]["broken"]["good_dump_age_hours"] * 3600}
    assert set(by_job(stack, 'pgbackup_verify_drill_duration_seconds{target="demo"}').values()) == {
        facts["drill_seconds"]}
    assert set(by_job(stack, 'pgbackup_verify_drill_tier{target="demo"}').values()) == {2}  # full
    assert facts["drill_rows_restored"] > 0
    assert set(by_job(stack, 'pgbackup_verify_drill_rows_restored{target="demo"}').values()) == {
        facts["drill_rows_restored"]}
    assert set(by_job(stack, 'pgbackup_verify_grant_findings{target="demo"}').values()) == {0}
    # A green concern has its last success; the broken dumps have none yet.
    assert stack.values('pgbackup_verify_last_success_timestamp_seconds{target="demo",concern="dumps"}')
    assert not stack.values('pgbackup_verify_last_success_timestamp_seconds{target="broken",concern="dumps"}')
    assert by_job(stack, 'pgbackup_verify_last_run_timestamp_seconds{target="broken",concern="dumps"}')
    assert "pgbackup-verify prometheus: metrics written to" in proc.stdout


def test_the_metrics_file_passes_promtool_and_holds_no_secret(first_run, stack):
    text = (stack.textfile_dir / "pgbackup_verify.prom").read_text()
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                             timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    pushed = requests.get(f"{stack.pushgateway}/metrics", timeout=10).text
    assert 'pgbackup_verify_target_ok{' in pushed
    for where in (text, pushed, json.dumps(stack.query('{__name__=~"pgbackup_verify_.+"}'))):
        assert SECRET not in where
        # No file name and no message as a label value.
        assert ".sql.gz" not in where and "fix" not in where


def test_the_alerts_fire_for_the_fault_and_the_silent_host_and_clear_when_healthy(first_run, stack, demo_host):
    d = demo_host
    stack.wait_for("PgBackupDumpsFailing for broken", lambda: "broken" in stack.firing("PgBackupDumpsFailing"))
    assert stack.firing("PgBackupDumpsFailing") == {"broken"}
    # exit 1: the checks judged, a concern alert says what
    assert not stack.firing("PgBackupRunNotChecked")
    # The fault is fixed (the empty file removed); the next run checks demo and broken, silent never runs again.
    for f in (d.workdir / "broken-backups").glob("directus_*_0300.sql.gz"):
        f.unlink()
    proc, doc = run(d, stack, d.workdir / "targets" / "demo.toml", d.workdir / "targets" / "broken.toml")
    assert proc.returncode == 0, failed(doc)
    stack.wait_for("PgBackupDumpsFailing cleared", lambda: not stack.firing("PgBackupDumpsFailing"))
    assert stack.values('pgbackup_verify_last_success_timestamp_seconds{target="broken",concern="dumps"}')
    # silent's group stays in the Pushgateway with its old last run: after STALE_AFTER s the alert fires for it
    # alone (demo and broken ran again just now); the textfile dropped it with the run that left it out.
    stack.wait_for("PgBackupNoRecentRun for silent", lambda: "silent" in stack.firing("PgBackupNoRecentRun"),
                   timeout=STALE_AFTER + 60)
    assert stack.firing("PgBackupNoRecentRun") == {"silent"}
    assert set(by_job(stack, 'pgbackup_verify_target_ok{target="silent"}')) == {"pgbackup_verify"}


def test_a_push_the_gateway_never_takes_is_exit_15_and_a_line_in_the_report(demo_host, stack, tmp_path):
    d = demo_host
    closed = f"http://127.0.0.1:{PrometheusStack(tmp_path).node_port}"  # a free port: nothing listens
    target = variant(d, "demo", closed)
    reports = tmp_path / "reports"
    started = time.monotonic()
    proc, doc = run(d, stack, target, metrics=tmp_path / "m.prom", reports=reports)
    assert proc.returncode == 18, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert doc["status"] == "OK"  # the backups are fine; the push failed
    [note] = [n for n in doc["notes"] if "Prometheus push" in n]
    assert note.startswith("Prometheus push of target demo FAILED: connection refused or host unreachable at "
                           f"{closed} after 2 attempts")
    assert "Prometheus push of target demo FAILED" in proc.stdout
    assert "Prometheus push of target demo FAILED" in (reports / "latest.html").read_text()
    assert time.monotonic() - started < 300


def test_a_target_file_that_does_not_load_still_tells_its_pushgateway(stack, tmp_path):
    """Exit 4 before any check: its [prometheus] section is still read, the group says run_ok 0 and exit 4,
    and PgBackupRunNotChecked fires for it."""
    broken = tmp_path / "misconfigured.toml"
    broken.write_text(f'[target]\nname = "misconfigured"\n[database]\ndsn = "host=127.0.0.1 dbname=x"\n'
                      f'[prometheus]\npushgateway = "{stack.pushgateway}"\n')  # no dump_role, no [backups]
    proc = subprocess.run([sys.executable, "-m", "pgbackup_verify.cli", f"--target={broken}",
                           f"--reports-dir={tmp_path / 'reports'}"], cwd=tmp_path, env=pytester_env(tmp_path),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "pgbackup-verify prometheus: metrics of target misconfigured pushed to" in proc.stderr
    stack.wait_for("the refused run's group", lambda: by_job(
        stack, 'pgbackup_verify_target_ok{target="misconfigured"}') == {"pgbackup_verify": 0})
    assert by_job(stack, 'pgbackup_verify_run_exit_code{target="misconfigured"}') == {"pgbackup_verify": 4}
    stack.wait_for("PgBackupRunNotChecked", lambda: "misconfigured" in stack.firing("PgBackupRunNotChecked"))
