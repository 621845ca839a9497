"""Host checks: green on a prepared healthy host (real files, testinfra's local backend, a running
throwaway postgres), red on each fault the seeds describe, with a message naming the object and the fix."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from pathlib import Path

import pytest
from pgbackup_verify_demo import scene

from pgbackup_verify.facts import cron
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_host.py"
HOST_CHECKS = 9


@pytest.fixture
def host(tmp_path: Path) -> scene.HostScene:
    return scene.write_host(tmp_path / "host")


@pytest.fixture
def run_host_checks(pytester: pytest.Pytester, write_target, backups: Path, host: scene.HostScene,
                    cluster: ThrowawayCluster) -> Callable[..., pytest.RunResult]:
    def run(data_dir: Path | None = None, **toml: float) -> pytest.RunResult:
        extra = host.toml(data_dir or Path(cluster.executor.datadir), **toml)
        target = write_target(backups, extra=extra)
        return pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", "-rA", str(CHECKS))

    return run


def test_healthy_host_passes_every_check(run_host_checks, host: scene.HostScene) -> None:
    result = run_host_checks()
    result.assert_outcomes(passed=HOST_CHECKS)
    out = result.stdout.str()
    assert "0 2 * * *" in out and "set -euo pipefail" in out and "pid " in out


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


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_host_fault_fails_its_check(fault: str, run_host_checks, host: scene.HostScene, backups: Path) -> None:
    inject, failing, message = FAULTS[fault]
    inject(host, backups)
    result = run_host_checks()
    result.assert_outcomes(passed=HOST_CHECKS - len(failing), failed=len(failing))
    for name in failing:
        result.stdout.fnmatch_lines([f"FAILED *checks/test_host.py::{name}[[]selftest]*"])
    expected = message.format(gd=host.to_gdrive, pg=host.pg_backup, retired=host.retired, crontab=host.crontab,
                              scripts=host.scripts, backups=backups)
    assert expected in result.stdout.str()


def test_too_little_free_space_fails(run_host_checks) -> None:
    result = run_host_checks(free_space_multiple=1e12)
    result.assert_outcomes(passed=HOST_CHECKS - 1, failed=1)
    result.stdout.fnmatch_lines(["*free space for backups: FAILED (* free on * vs * = 1e+12 x latest dump); "
                                 "fix: free space on that filesystem or prune old dumps*"])


def test_stopped_database_fails(pytester: pytest.Pytester, write_target, backups: Path,
                                host: scene.HostScene) -> None:
    db = ThrowawayCluster(tag="hostcheck-").start()
    try:
        target = write_target(backups, extra=host.toml(Path(db.executor.datadir)))
        args = ("--target", str(target), "-p", "no:cacheprovider", str(CHECKS), "-k", "database_service")
        pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)
    finally:
        db.stop()
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*database process postgres with '-D {db.executor.datadir}': FAILED "
                                 "(no such process); fix: start it*"])


def test_host_checks_skip_visibly_without_a_host_section(pytester: pytest.Pytester, write_target,
                                                         backups: Path) -> None:
    result = pytester.runpytest_subprocess("--target", str(write_target(backups)), "-p", "no:cacheprovider",
                                           "-rs", str(CHECKS))
    result.assert_outcomes(passed=2, skipped=HOST_CHECKS - 2)  # dir mode and free space need no [host]
    result.stdout.fnmatch_lines(["SKIPPED*no [[]host] section in *; add one to check cron and scripts"])


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
    ("free_space_multiple = 0", "[host].free_space_multiple: must be greater than 0"),
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


def test_unreachable_host_is_one_line(pytester: pytest.Pytester, write_target, backups: Path) -> None:
    target = write_target(backups, extra='\n[host]\ncron_jobs = ["/x.sh"]\n')
    target.write_text(target.read_text().replace("[target]\n", '[target]\nhost = "ssh://nobody@127.0.0.1:1"\n', 1))
    result = pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", str(CHECKS),
                                           "-k", "cron_schedules_every")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*backup host 'ssh://nobody@127.0.0.1:1': FAILED (cannot run a command: *); "
                                 "fix: check [[]target].host and the access to it*"])
