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
HOST_CHECKS = 10


def _cron_d(h: scene.HostScene, name: str, body: str, mode: int = 0o644, owner: str = "root") -> Path:
    """A file in the scene's own cron.d (read through [host].crontabs, under cron.d's rules)."""
    d = h.root / "cron.d"
    d.mkdir(exist_ok=True)
    f = d / name
    f.write_text(body)
    f.chmod(mode)
    os.chown(f, pwd.getpwnam(owner).pw_uid, -1)
    return f


def _move_pg_line_to_cron_d(name: str, mode: int = 0o644, owner: str = "root") -> Callable[[scene.HostScene, Path],
                                                                                           None]:
    def inject(h: scene.HostScene, b: Path) -> None:
        _drop_line(h.crontab, str(h.pg_backup))
        _cron_d(h, name, f"SHELL=/bin/bash\n0 2 * * * root {h.pg_backup} >> {h.root}/pg-backup.log 2>&1\n", mode,
                owner)
    return inject


def _symlinked(b: Path) -> None:
    """The backup dir becomes a symlink to a volume holding the dumps."""
    volume = b.parent / "volume"
    b.rename(volume)
    b.symlink_to(volume)


def every_wrapper(h: scene.HostScene, b: Path) -> None:
    """Root's crontab written the ways administrators write it: all green."""
    pg, gd, root = h.pg_backup, h.to_gdrive, h.root
    h.crontab.write_text(f"""SHELL=/bin/bash
MAILTO=""
0 2 * * * flock -w 600 {root}/run/pg-backup.lock {pg} >> {root}/pg-backup.log 2>&1
5 2 * * * /usr/bin/flock -xn -E 75 {root}/run/pg.lock timeout -s KILL -k 5m 2h nice -n 19 ionice -c3 chronic {pg}
10 2 * * * bash -c '{pg} >> {root}/pg-backup.log 2>&1'
15 2 * * * cd {h.scripts} && ./pg-backup.sh > /dev/null 2>&1
20 2 * * * env -i PATH=/usr/bin:/bin HOME=/root /usr/bin/env bash {gd}
25 2 * * * sudo -u root -H {pg}
30 2 * * * runitor -uuid 2f9b4e0c -every 1h -- {gd} && curl -fsS -m 10 -o /dev/null https://hc-ping.com/2f9b4e0c
35 2 * * * {pg} > {root}/pg-$(date +\\%F).log 2>&1
""")
    _cron_d(h, "pg-offsite", f"0 20 * * * root nice -n 10 {gd} >> {root}/gd.log 2>&1\n")
    # A package removed but not purged: Debian's guarded lines run nothing while their program is absent.
    gone = f"{root}/removed/bin"
    _cron_d(h, "php", "".join(f"{m} * * * * root {line}\n" for m, line in enumerate((
        f"[ -x {gone}/sessionclean ] && if [ ! -d /run/systemd/system ]; then {gone}/sessionclean; fi",
        f"test -x {gone}/a && {gone}/a", f"/usr/bin/test -x {gone}/b && {gone}/b", f"[[ -x {gone}/c ]] && {gone}/c",
        f"if [ -x {gone}/d ]; then {gone}/d; fi", f"command -v {gone}/e >/dev/null && {gone}/e"))))
    # A package manager's leftover copy: cron skips it on purpose, and so do the checks.
    _cron_d(h, "pg-offsite.dpkg-old", f"0 21 * * * root {h.scripts}/gone.sh\n")


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
    "guard on another file": (
        lambda h, b: _append(h.crontab, f"30 3 * * * [ -x /usr/bin/env ] && {h.scripts}/gone.sh\n"),
        ["test_no_cron_entry_runs_a_missing_or_retired_script"],
        "cron entry at {crontab}:7: FAILED (script {scripts}/gone.sh does not exist); fix: restore the script"),
    "backup job guarded and absent": (
        lambda h, b: (h.crontab.write_text(h.crontab.read_text().replace(
            f"0 2 * * * {h.pg_backup}", f"0 2 * * * [ -x {h.pg_backup} ] && {h.pg_backup}")), h.pg_backup.unlink())
        and None,
        ["test_cron_schedules_every_backup_job", "test_backup_scripts_are_root_owned_and_not_writable_by_others"],
        "cron entry for {pg}: FAILED ({crontab}:5: guarded: does nothing while {pg} is absent); fix: restore {pg}: "
        "the job never runs"),
    "entry runs a missing script": (
        lambda h, b: _append(h.crontab, f"30 3 * * * bash {h.scripts}/gone.sh\n"),
        ["test_no_cron_entry_runs_a_missing_or_retired_script"],
        "cron entry at {crontab}:7: FAILED (script {scripts}/gone.sh does not exist); fix: restore the script"),
    "schedule does not parse": (
        lambda h, b: h.crontab.write_text(h.crontab.read_text().replace("0 2 * * *", "0 25 * * *")),
        ["test_every_cron_schedule_parses"],
        "cron schedule at {crontab}:5: FAILED ('0 25 * * *': hour 25 is outside 0-23); fix: correct the line, cron "
        "skips it silently"),
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
    "world-readable dump behind a symlinked backup dir": (
        lambda h, b: (_symlinked(b), sorted(b.iterdir())[-1].chmod(0o644)) and None,
        ["test_backup_dir_and_dumps_are_not_world_readable"],
        "dumps readable by others: FAILED (1 file(s): {backups}/"),
    "unescaped percent": (
        lambda h, b: _append(h.crontab, f"0 4 * * * {h.pg_backup} > {h.root}/pg-$(date +%F).log 2>&1\n"),
        ["test_cron_runs_every_line_as_written"],
        "cron entry at {crontab}:7: FAILED (unescaped % at column {pct}: cron ends the command there and feeds the "
        "rest to its stdin, so the shell gets `{pg} > {root}/pg-$(date +`); fix: write every % as \\%: "
        "`0 4 * * * {pg} > {root}/pg-$(date +\\%F).log 2>&1`"),
    "cron.d file with a dot in its name": (
        _move_pg_line_to_cron_d("pg.backup"),
        ["test_cron_runs_every_line_as_written"],
        "cron file {root}/cron.d/pg.backup: FAILED (cron will not run this file: the name 'pg.backup' has "
        "characters outside [A-Za-z0-9_-] (Debian's cron skips such names); 1 entry never run: line 2 runs "
        "`{pg} >>\n); fix: mv {root}/cron.d/pg.backup {root}/cron.d/pg-backup"),
    "group-writable cron.d file": (
        _move_pg_line_to_cron_d("pg-backup", mode=0o664),
        ["test_cron_runs_every_line_as_written"],
        "cron file {root}/cron.d/pg-backup: FAILED (cron will not run this file: mode 0664 is writable by group or "
        "others; 1 entry never run: line 2 runs `{pg} >>\n); fix: chmod go-w {root}/cron.d/pg-backup"),
    "cron.d file not owned by root": (
        _move_pg_line_to_cron_d("pg-backup", owner="postgres"),
        ["test_cron_runs_every_line_as_written"],
        "cron file {root}/cron.d/pg-backup: FAILED (cron will not run this file: owned by postgres, not root; "
        "1 entry never run"),
    "script without its execute bit": (
        lambda h, b: h.pg_backup.chmod(0o644),
        ["test_cron_runs_every_line_as_written"],
        "cron entry at {crontab}:5: FAILED ({pg} (mode 0644, owner root) has no execute bit for root: "
        "cron gets 'Permission denied'); fix: chmod u+x {pg}"),
}
# One fault, one red line: a backup job whose only line cron will not run is the line's finding (its check
# owns it, ownership.OWNERS); the job check is not judged, naming it.
NOT_JUDGED = {fault: ["test_cron_schedules_every_backup_job"] for fault in (
    "schedule does not parse", "cron.d file with a dot in its name", "group-writable cron.d file",
    "cron.d file not owned by root", "script without its execute bit")}


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
        "healthy": (None, {}), "every wrapper": (every_wrapper, {}),
        "symlinked backup dir": (lambda h, b: _symlinked(b), {}), "free space": (None, {"free_space_multiple": 1e12}),
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
            if (h.root / "cron.d").is_dir():
                tabs = [h.crontab, *sorted((h.root / "cron.d").iterdir())]
                extra = extra.replace(f'crontabs = ["{h.crontab}"]', f"crontabs = {[str(t) for t in tabs]!r}")
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


def test_every_wrapper_administrators_write_is_green(hosts: Hosts) -> None:
    """flock with its lock file absent, bash -c, cd && ./x, env, sudo, runitor, an escaped %, a cron.d file."""
    result, h = hosts["every wrapper"], hosts.scenes["every wrapper"]
    result.assert_outcomes(passed=HOST_CHECKS)
    assert f"cron {h.pg_backup}: {h.crontab}:3: 0 2 * * *; {h.crontab}:4: 5 2 * * *; {h.crontab}:5: 10 2" in result.text
    assert f"{h.root}/cron.d/pg-offsite:1: 0 20 * * *" in result.text
    assert (f"{h.crontab}:4 runs: {h.pg_backup} as root (through flock > timeout > nice > ionice > chronic)"
            in result.text)
    assert f"skipped by cron: {h.root}/cron.d/pg-offsite.dpkg-old" in result.text
    for line, prog in enumerate(("sessionclean", "a", "b", "c", "d", "e"), 1):
        assert (f"cron entry at {h.root}/cron.d/php:{line}: guarded: does nothing while {h.root}/removed/bin/{prog} "
                "is absent") in result.text


def test_a_symlinked_backup_dir_is_followed(hosts: Hosts) -> None:
    result, b = hosts["symlinked backup dir"], hosts.backups["symlinked backup dir"]
    result.assert_outcomes(passed=HOST_CHECKS)
    assert b.is_symlink()
    volume = b.resolve()
    assert f"backup dir: {b} -> {volume}, owner root, mode 0700, 7 dump(s)" in result.text
    assert f"({b} -> {volume})" in result.text  # free space measured where the dumps are


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_host_fault_fails_its_check(fault: str, hosts: Hosts) -> None:
    _, failing, message = FAULTS[fault]
    result, host, backups = hosts[fault], hosts.scenes[fault], hosts.backups[fault]
    unjudged = NOT_JUDGED.get(fault, [])
    result.assert_outcomes(passed=HOST_CHECKS - len(failing) - len(unjudged), failed=len(failing),
                           skipped=len(unjudged))
    assert result.failed() == set(failing)
    assert {c["name"] for c in result.checks if c["kind"] == "not judged"} == set(unjudged)
    assert all(c["message"].startswith(("not judged: cron schedule at", "not judged: cron file",
                                        "not judged: cron entry at"))
               for c in result.checks if c["name"] in unjudged), result.text
    pct = len(f"0 4 * * * {host.pg_backup} > {host.root}/pg-$(date +%") - len("0 4 * * * ")
    expected = message.format(gd=host.to_gdrive, pg=host.pg_backup, retired=host.retired, crontab=host.crontab,
                              scripts=host.scripts, backups=backups, root=host.root, pct=pct)
    for part in expected.split("\n"):  # "\n": the text between the parts may be cut short in the message
        assert part in result.text


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
    result.fnmatch_line("not configured: target * has no [[]host] section (*); add one to check cron, scripts "
                        "and the database service")


@pytest.mark.parametrize(("schedule", "error"), [
    ("0 2 * * *", ""), ("*/15 1-5 * jan-jun mon-fri", ""), ("@daily", ""), ("0 0 1,15 * 7", ""),
    ("60 * * * *", "minute 60 is outside 0-59"), ("* * * *", "expected 5 schedule fields, got 4"),
    ("5-2 * * * *", "minute range '5-2' runs backwards"), ("*/0 * * * *", "minute step '0' is not a positive number"),
    ("0 2 * * funday", "day of week 'funday' is not a number"), ("@sometimes", "unknown nickname '@sometimes'"),
])
def test_cron_schedule_validation(schedule: str, error: str) -> None:
    assert cron.schedule_error(schedule) == error


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
    result.fnmatch_line("HostUnreachable: backup host 'ssh://nobody@127.0.0.1:1': FAILED (unreachable: *Connection "
                        "refused); fix: check the host name and port in [[]target].host, and that sshd runs there")
