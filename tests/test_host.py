"""Host checks: green on a prepared healthy host (real files, testinfra's local backend, a running
throwaway postgres), red on each fault the seeds describe, with a message naming the object and the fix."""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from checkrun import ChecksRun, TargetResult, run_checks
from pgbackup_verify_demo import demo, scene

from pgbackup_verify.config import HostSection
from pgbackup_verify.facts import cron
from pgbackup_verify.facts import host as hostfacts
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_host.py"
HOST_CHECKS = 9


def _drop_line(path: Path, needle: str) -> None:
    path.write_text("".join(ln for ln in path.read_text().splitlines(True) if needle not in ln))


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


FAULTS: dict[str, tuple[Callable[[scene.HostScene, Path], None], list[str], str]] = {
    # fault -> (inject, failing checks, expected message fragment; {gd}/{pg}/{retired}/{backups} filled in)
    "missing cron entry": (
        lambda h, b: _drop_line(h.crontab, str(h.to_gdrive)),
        ["test_cron_schedules_every_backup_job"],
        "cron entry for {gd}: FAILED (no active entry runs it in {crontab} (1 entry)"),
    "entry runs a retired script": (
        lambda h, b: _append(h.crontab, f"0 3 * * * {h.retired} >> /dev/null 2>&1\n"),
        ["test_no_cron_entry_runs_a_missing_or_retired_script"],
        "cron entry at {crontab}:7: FAILED (runs retired script {retired}); fix: comment the line out"),
    "entry runs a missing script": (
        lambda h, b: _append(h.crontab, f"30 3 * * * bash {h.scripts}/gone.sh\n"),
        ["test_no_cron_entry_runs_a_missing_or_retired_script"],
        "cron entry at {crontab}:7: FAILED (script {scripts}/gone.sh does not exist); fix: restore the script"),
    "schedule does not parse": (
        lambda h, b: h.crontab.write_text(h.crontab.read_text().replace("0 2 * * *", "0 25 * * *")),
        ["test_cron_schedules_every_backup_job", "test_every_cron_schedule_parses"],
        "cron entry for {pg}: FAILED (schedule '0 25 * * *' at {crontab}:5 does not parse: hour 25 is outside 0-23)"),
    "world-writable script": (
        lambda h, b: h.pg_backup.chmod(0o777),
        ["test_backup_scripts_are_root_owned_and_not_writable_by_others"],
        "backup script {pg}: FAILED (mode 0777 is group/world-writable); fix: chmod go-w {pg}"),
    "script not owned by root": (
        lambda h, b: os.chown(h.to_gdrive, pwd.getpwnam("postgres").pw_uid, -1),
        ["test_backup_scripts_are_root_owned_and_not_writable_by_others"],
        "backup script {gd}: FAILED (owner postgres vs root); fix: chown root {gd}"),
    "script without pipefail": (
        lambda h, b: h.to_gdrive.write_text(h.to_gdrive.read_text().replace("set -euo pipefail", "set -eu")),
        ["test_backup_scripts_use_pipefail"],
        "backup script {gd}: FAILED (no `set -o pipefail`"),
    "shellcheck finding": (
        lambda h, b: _append(h.pg_backup, "RETENTION_DAYS=7\n"),
        ["test_backup_scripts_pass_shellcheck"],
        "shellcheck {pg}: FAILED (1 finding(s): 11:1: warning: RETENTION_DAYS appears unused"),
    "world-readable dump dir": (
        lambda h, b: b.chmod(0o755),
        ["test_backup_dir_and_dumps_are_not_world_readable"],
        "backup dir {backups}: FAILED (mode 0755 gives others access); fix: chmod o-rwx {backups}"),
    "world-readable dump": (
        lambda h, b: sorted(b.iterdir())[-1].chmod(0o644),
        ["test_backup_dir_and_dumps_are_not_world_readable"],
        "dumps readable by others: FAILED (1 file(s): {backups}/"),
}


def slug(case: str) -> str:
    return case.replace(" ", "-")


@dataclass(repr=False)
class Hosts:
    """One checks run over one target per case: each its own host scene and its own backups copy."""

    run: ChecksRun
    scenes: dict[str, scene.HostScene]
    backups: dict[str, Path]
    targets: dict[str, Path]
    stopped_dir: Path
    stopped_seen_running: bool

    def __getitem__(self, case: str) -> TargetResult:
        return self.run[slug(case)]


@pytest.fixture(scope="module")
def hosts(seed_cluster: ThrowawayCluster, cluster: ThrowawayCluster, healthy_backups: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Hosts:
    root = tmp_path_factory.mktemp("host-cases")
    dsn = seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
    running = Path(cluster.executor.datadir)
    # The database of the "stopped" case: a real cluster, seen running, then stopped before the run.
    stopped = ThrowawayCluster(tag="hostcheck-").start()
    stopped_dir = Path(stopped.executor.datadir)
    seen_running = database_process(stopped_dir)
    stopped.stop()
    cases: dict[str, tuple[Callable[[scene.HostScene, Path], None] | None, dict]] = {
        "healthy": (None, {}), "free space": (None, {"free_space_multiple": 1e12}),
        "stopped database": (None, {"data_dir": stopped_dir}), "no host section": (None, {"host": False}),
        "unreachable host": (None, {"host": "ssh://nobody@127.0.0.1:1"}),
        **{fault: (inject, {}) for fault, (inject, _, _) in FAULTS.items()}}
    scenes, backups, targets = {}, {}, {}
    for case, (inject, opts) in cases.items():
        d = root / slug(case)
        h = scenes[case] = scene.write_host(d / "host")
        b = backups[case] = d / "backups"
        shutil.copytree(healthy_backups, b)
        if inject:
            inject(h, b)
        if opts.get("host") is False:
            extra = ""
        elif isinstance(opts.get("host"), str):
            extra = '\n[host]\ncron_jobs = ["/x.sh"]\n'
        else:
            extra = h.toml(opts.get("data_dir", running), free_space_multiple=opts.get("free_space_multiple", 2.0))
        t = targets[case] = demo.write_target_file(d / "t.toml", dsn, b, name=slug(case), extra=extra)
        if isinstance(opts.get("host"), str):
            t.write_text(t.read_text().replace("[target]\n", f'[target]\nhost = "{opts["host"]}"\n', 1))
    run = run_checks(root / "run", list(targets.values()), [CHECKS])
    return Hosts(run, scenes, backups, targets, stopped_dir, seen_running)


def database_process(data_dir: Path) -> bool:
    """The library's answer for `postgres -D data_dir` on this host (the check's facts)."""
    section = HostSection(process="postgres", process_args=f"-D {data_dir}")
    [facts] = hostfacts.database_running(hostfacts.get_host("local://"), section)
    return facts.running


def test_healthy_host_passes_every_check(hosts: Hosts) -> None:
    hosts["healthy"].assert_outcomes(passed=HOST_CHECKS)
    out = hosts["healthy"].text
    assert "0 2 * * *" in out and "set -euo pipefail" in out and "pid " in out
    assert "Traceback" not in hosts.run.stdout


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_host_fault_fails_its_check(fault: str, hosts: Hosts) -> None:
    _, failing, message = FAULTS[fault]
    result, host, backups = hosts[fault], hosts.scenes[fault], hosts.backups[fault]
    result.assert_outcomes(passed=HOST_CHECKS - len(failing), failed=len(failing))
    assert result.failed() == set(failing)
    expected = message.format(gd=host.to_gdrive, pg=host.pg_backup, retired=host.retired, crontab=host.crontab,
                              scripts=host.scripts, backups=backups)
    assert expected in result.text


def test_too_little_free_space_fails(hosts: Hosts) -> None:
    result = hosts["free space"]
    result.assert_outcomes(passed=HOST_CHECKS - 1, failed=1)
    result.fnmatch_line("*free space for backups: FAILED (* free on * vs * = 1e+12 x latest dump); "
                        "fix: free space on that filesystem or prune old dumps*")


def test_stopped_database_fails(hosts: Hosts) -> None:
    """The same data dir passes while its postgres runs (seen by the check's own facts) and fails once stopped."""
    datadir = hosts.stopped_dir
    assert hosts.stopped_seen_running and not database_process(datadir)
    result = hosts["stopped database"]
    result.assert_outcomes("database_service", failed=1)
    assert (f"database process postgres with '-D {datadir}': FAILED (no such process); fix: start it"
            in result.text)
    hosts["healthy"].assert_outcomes("database_service", passed=1)  # the running session cluster end to end


def test_host_checks_skip_visibly_without_a_host_section(hosts: Hosts) -> None:
    result = hosts["no host section"]
    result.assert_outcomes(passed=2, skipped=HOST_CHECKS - 2)  # dir mode and free space need no [host]
    result.fnmatch_line("*no [[]host] section in *; add one to check cron and scripts")


@pytest.mark.parametrize(("schedule", "error"), [
    ("0 2 * * *", ""), ("*/15 1-5 * jan-jun mon-fri", ""), ("@daily", ""), ("0 0 1,15 * 7", ""),
    ("60 * * * *", "minute 60 is outside 0-59"), ("* * * *", "expected 5 schedule fields, got 4"),
    ("5-2 * * * *", "minute range '5-2' runs backwards"), ("*/0 * * * *", "minute step '0' is not a positive number"),
    ("0 2 * * funday", "day of week 'funday' is not a number"), ("@sometimes", "unknown nickname '@sometimes'"),
])
def test_cron_schedule_validation(schedule: str, error: str) -> None:
    assert cron.schedule_error(schedule) == error


@pytest.mark.parametrize(("command", "scripts"), [
    ("/opt/a.sh >> /var/log/a.log 2>&1", ["/opt/a.sh"]),
    ("bash /opt/x.sh --config=/etc/x.conf 2>/dev/null; flock -n /tmp/l /opt/y.sh", ["/opt/x.sh", "/opt/y.sh"]),
    ("PATH=/usr/bin /opt/z.sh % stdin /not/a/script", ["/opt/z.sh"]),
    ("test -e /run/systemd/system || SERVICE_MODE=1 /sbin/e2scrub_all -A -r", ["/sbin/e2scrub_all"]),
])
def test_cron_command_scripts(command: str, scripts: list[str]) -> None:
    assert cron.executed_paths(command) == scripts


def test_system_crontab_has_a_user_column_and_comments_are_inactive() -> None:
    tab = cron.parse("# 0 2 * * * root /old.sh\nMAILTO=root\n17 4 * * * root /opt/guard.sh\n", "/etc/cron.d/pg",
                     system=True)
    assert [(e.lineno, e.user, e.scripts()) for e in tab.entries] == [(3, "root", ["/opt/guard.sh"])]


@pytest.mark.parametrize(("toml", "expected"), [
    ('shellcheck_severity = "loud"', "[host].shellcheck_severity: 'loud' is not one of error, warning, info"),
    ('cron_jobs = ["pg-backup.sh"]', "[host].cron_jobs: 'pg-backup.sh' is not an absolute path on the host"),
    ("free_space_multiple = 0", "[host].free_space_multiple: 0.0 must be greater than 0; use e.g. 2.0"),
    ('process_args = "-D /data"', "[host].process_args: needs [host].process"),
    ('cron_jobz = []', "[host].cron_jobz: unknown key; did you mean 'cron_jobs'?"),
])
def test_host_section_mistakes_are_one_line(tmp_path: Path, toml: str, expected: str) -> None:
    from pgbackup_verify.config import ConfigError, load_target

    f = tmp_path / "t.toml"
    f.write_text(f'[database]\ndsn = "host=x"\ndump_role = "d"\n[backups]\ndirectory = "{tmp_path}"\n[host]\n{toml}\n')
    with pytest.raises(ConfigError) as exc:
        load_target(f)
    assert expected in str(exc.value) and "\n" not in str(exc.value)


def test_unreachable_host_is_one_line(hosts: Hosts) -> None:
    result = hosts["unreachable host"]
    result.assert_outcomes("cron_schedules_every", errors=1)
    result.fnmatch_line("*backup host 'ssh://nobody@127.0.0.1:1': FAILED (cannot run a command: *); "
                        "fix: check [[]target].host and the access to it*")
