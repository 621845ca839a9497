"""Cron lines read the way cron and the shell read them (facts.cronline, facts.cron), and what cron
ignores or cannot execute on a real host (facts.host through testinfra's local backend).

The end-to-end cases (a prepared host, the shipped checks, the messages) are in test_host.py; these
pin the reader on the lines administrators really write."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from pgbackup_verify.facts import cron, cronline
from pgbackup_verify.facts import host as hostfacts

S = "/opt/incomex/scripts/pg-backup.sh"


def runs(command: str, home: str | None = "/root") -> list[tuple[str, bool, str]]:
    return [(r.path, r.direct, r.user) for r in cronline.parse_command(command, home).runs if r.is_path]


@pytest.mark.parametrize(("command", "expected"), [
    # flock: every option form; the lock file is never the script (it is absent after a reboot).
    (f"flock -w 600 /run/lock/pg.lock {S}", [(S, True, "")]),
    (f"flock -n /run/lock/pg.lock {S} >> /var/log/pg.log 2>&1", [(S, True, "")]),
    (f"/usr/bin/flock -xn -E 75 /run/lock/pg.lock {S}", [(S, True, "")]),
    (f"flock --timeout=600 --conflict-exit-code 3 -o /run/lock/pg.lock {S}", [(S, True, "")]),
    (f"flock -s -w600 /run/lock/pg.lock -c '{S} --full'", [(S, True, "")]),
    ("flock 9", []),
    # timeout, nice, ionice, chronic, env, sudo, nohup, setsid, time
    (f"timeout -s KILL -k 5m 2h {S}", [(S, True, "")]),
    (f"timeout --preserve-status 7200 {S}", [(S, True, "")]),
    (f"nice -n 19 ionice -c2 -n7 {S}", [(S, True, "")]),
    (f"nice -19 ionice -c 3 chronic -e {S}", [(S, True, "")]),
    (f"env -i PATH=/usr/bin:/bin HOME=/root {S}", [(S, True, "")]),
    ("env --chdir=/opt/incomex ./scripts/pg-backup.sh", [(S, True, "")]),
    (f"sudo -u postgres -H {S}", [(S, True, "postgres")]),
    (f"sudo --user=postgres PGHOST=/run/postgresql {S}", [(S, True, "postgres")]),
    (f"su - postgres -s /bin/bash -c '{S}'", [(S, True, "postgres")]),
    (f"runuser -u postgres -- {S}", [(S, True, "postgres")]),
    (f"nohup setsid -f {S} &", [(S, True, "")]),
    # shells: -c strings are read again; a script handed to a shell needs no execute bit
    (f"bash -c '{S} >> /var/log/pg-backup.log 2>&1'", [(S, True, "")]),
    ("/bin/sh -ec \"cd /opt/incomex/scripts && ./pg-backup.sh\"", [(S, True, "")]),
    (f"bash -euo pipefail -c 'sh -c \"{S}\"'", [(S, True, "")]),
    (f"bash {S} --full", [(S, False, "")]),
    (f"/usr/bin/env bash {S}", [(S, False, "")]),
    (f"/usr/bin/env -S bash -e {S}", [(S, False, "")]),
    ("python3 -u /opt/x/report.py", [("/opt/x/report.py", False, "")]),
    ("python3 -m pgbackup_verify", []),
    # healthchecks-style wrappers
    (f"runitor -uuid 2f9b-44 -every 1h -- {S}", [(S, True, "")]),
    (f"runitor -slug pg-backup -no-start-ping {S}", [(S, True, "")]),
    (f"{S} && curl -fsS -m 10 --retry 5 -o /dev/null https://hc-ping.com/2f9b", [(S, True, "")]),
    (f"cronitor exec d3x0 '{S} --full'", [(S, True, "")]),
    (f"sentry-cli monitors run pg-nightly -- {S}", [(S, True, "")]),
    # cd before a relative path, subshells, HOME, lists and pipes
    ("cd /opt/incomex/scripts && ./pg-backup.sh", [(S, True, "")]),
    ("cd /opt/incomex; scripts/pg-backup.sh 2>&1 | logger -t pg", [(S, True, "")]),
    ("(cd /opt/incomex/scripts && ./pg-backup.sh); ./after.sh", [(S, True, ""), ("/root/after.sh", True, "")]),
    ("./bin/pg.sh", [("/root/bin/pg.sh", True, "")]),
    ("~/bin/pg.sh; $HOME/bin/b.sh", [("/root/bin/pg.sh", True, ""), ("/root/bin/b.sh", True, "")]),
    ("test -e /run/systemd/system || SERVICE_MODE=1 /sbin/e2scrub_all -A -r", [("/sbin/e2scrub_all", True, "")]),
    ("[ -x /usr/lib/php/sessionclean ] && if [ ! -d /run/systemd/system ]; then /usr/lib/php/sessionclean; fi",
     [("/usr/lib/php/sessionclean", True, "")]),
    ("bash /opt/x.sh --config=/etc/x.conf 2>/dev/null; flock -n /tmp/l /opt/y.sh",
     [("/opt/x.sh", False, ""), ("/opt/y.sh", True, "")]),
    # redirections are never run; quoted words keep their spaces
    ("/opt/a.sh >/var/log/a.log 2>&1 </dev/null", [("/opt/a.sh", True, "")]),
    ("'/opt/my scripts/a.sh' &>> /var/log/a.log", [("/opt/my scripts/a.sh", True, "")]),
])
def test_what_a_cron_command_finally_runs(command: str, expected: list[tuple[str, bool, str]]) -> None:
    assert runs(command) == expected


G = "/usr/lib/php/sessionclean"


@pytest.mark.parametrize(("command", "guarded"), [
    # Debian's cron.d lines: a test of the program's own file before it runs it
    (f"[ -x {G} ] && {G}", True),
    (f"test -x {G} && {G} --full", True),
    (f"/usr/bin/test -x {G} && {G}", True),
    (f"[[ -x {G} ]] && {G}", True),
    (f"if [ -x {G} ]; then {G}; fi", True),
    (f"command -v {G} >/dev/null && {G}", True),
    (f"command -v {G} > /dev/null 2>&1 && flock -n /run/lock/s {G}", True),
    (f"[ -x {G} ] && if [ ! -d /run/systemd/system ]; then {G}; fi", True),
    (f"if [ -x {G} ] && [ -d /run ]; then bash -c '{G} > /dev/null'; fi", True),
    (f"test -f {G} && {{ {G}; }}", True),
    (f"while [ -x {G} ]; do {G}; done", True),
    ("cd /usr/lib/php && [ -x ./sessionclean ] && ./sessionclean", True),
    # not guarded: another file tested, the test negated or not in force where it runs
    (f"[ -x /usr/bin/php ] && {G}", False),
    (f"[ -x {G} ]; {G}", False),
    (f"[ -x {G} ] || {G}", False),
    (f"true || [ -x {G} ] && {G}", False),  # (true || test) && G: G runs after `true` alone
    (f"[ -x {G} ] && {G} || logger failed", True),
    (f"! [ -x {G} ] && {G}", False),
    (f"[ ! -x {G} ] && {G}", False),
    (f"if [ -x {G} ]; then :; else {G}; fi", False),
    (f"if [ -x {G} ] || [ -d /run ]; then {G}; fi", False),
    (f"until [ -x {G} ]; do {G}; done", False),
    (f"[ -x {G} ] && ( {G} ); {G}", False),  # run once unguarded: the missing script is real
    (f"[ -d {G} ] && {G}", False),  # -d is no test of a program file
])
def test_a_guarded_program_is_known_to_run_only_when_present(command: str, guarded: bool) -> None:
    e = cron.parse(f"0 2 * * * root {command}\n", "/etc/cron.d/php", system=True).entries[0]
    assert G in e.scripts()
    assert (G in e.guarded()) == guarded


def test_command_v_only_looks_the_name_up() -> None:
    assert runs(f"command -v {S} >/dev/null") == []
    assert runs(f"command {S}") == [(S, True, "")]


def test_a_relative_path_without_a_known_home_stays_relative() -> None:
    assert runs("./pg.sh", home=None) == [("./pg.sh", True, "")]


def test_wrappers_are_named_outermost_first() -> None:
    [run] = cronline.parse_command(f"runitor -uuid x -- timeout 2h nice -n 5 flock -n /l {S}").runs
    assert run.via == ("runitor", "timeout", "nice", "flock")


@pytest.mark.parametrize(("command", "column", "cut", "escaped"), [
    (f"{S} > /var/log/pg-$(date +%F).log 2>&1", len(S) + 24,
     f"{S} > /var/log/pg-$(date +", f"{S} > /var/log/pg-$(date +\\%F).log 2>&1"),
    (r"/opt/a.sh $(date +\%F)", 0, "/opt/a.sh $(date +%F)", r"/opt/a.sh $(date +\%F)"),
    ("/opt/a.sh % line one % line two", 11, "/opt/a.sh ", r"/opt/a.sh \% line one \% line two"),
    (r"/opt/a.sh \\%x", 13, "/opt/a.sh \\\\", r"/opt/a.sh \\\%x"),  # a backslash escapes one % only
])
def test_an_unescaped_percent_cuts_the_command_like_cron(command: str, column: int, cut: str, escaped: str) -> None:
    p = cronline.cron_percent(command)
    assert (p.column, p.command, p.escaped) == (column, cut, escaped)
    assert cronline.cron_percent(p.escaped).column == 0  # the fix is a line cron runs whole


def test_a_command_cut_at_percent_no_longer_parses_and_says_where() -> None:
    e = cron.parse(f"0 2 * * * {S} > /var/log/pg-$(date +%F).log\n", "crontab").entries[0]
    assert e.parsed().error.startswith("unterminated '$(' at column")
    assert e.scripts() == [S] and e.scripts_as_written() == [S]
    assert e.line(e.percent.escaped) == f"0 2 * * * {S} > /var/log/pg-$(date +\\%F).log"


def test_cron_entries_take_home_and_user_from_the_crontab() -> None:
    tab = cron.parse("HOME=/opt/incomex\n0 2 * * * postgres cd scripts && ./pg-backup.sh\n", "/etc/cron.d/pg",
                     system=True)
    [e] = tab.entries
    assert (e.user, e.home, e.scripts()) == ("postgres", "/opt/incomex", [S])
    assert [r.user for r in e.runs()] == ["postgres"]
    assert e.line() == "0 2 * * * postgres cd scripts && ./pg-backup.sh"


def test_system_crontab_has_a_user_column_and_comments_are_inactive() -> None:
    tab = cron.parse("# 0 2 * * * root /old.sh\nMAILTO=root\n17 4 * * * root /opt/guard.sh\n", "/etc/cron.d/pg",
                     system=True)
    assert [(e.lineno, e.user, e.scripts()) for e in tab.entries] == [(3, "root", ["/opt/guard.sh"])]


def test_mentioned_paths_reach_into_shell_strings_but_not_redirect_targets() -> None:
    assert cron.mentioned_paths("bash -c '/opt/b.sh.retired.1 --x=/etc/x.conf >> /var/log/x.log'") == [
        "/opt/b.sh.retired.1", "/etc/x.conf"]


@pytest.mark.parametrize(("name", "mode", "owner", "why"), [
    ("pg-backup", 0o644, "root", ""),
    ("pg_backup2", 0o600, "root", ""),
    ("pg.backup", 0o644, "root", "the name 'pg.backup' has characters outside [A-Za-z0-9_-]"),
    ("pg-backup.cron", 0o644, "root", "the name 'pg-backup.cron' has characters outside"),
    ("pg-backup", 0o664, "root", "mode 0664 is writable by group or others"),
    ("pg-backup", 0o646, "root", "mode 0646 is writable by group or others"),
    ("pg-backup", 0o644, "postgres", "owned by postgres, not root"),
])
def test_what_debians_cron_ignores_in_cron_d(name: str, mode: int, owner: str, why: str) -> None:
    got = hostfacts.cron_ignores(f"/etc/cron.d/{name}", "regular file", mode, owner, debian=True)
    assert got.startswith(why) and bool(got) == bool(why)


def test_other_crons_read_dotted_names_but_not_package_leftovers() -> None:
    assert hostfacts.cron_ignores("/etc/cron.d/pg.backup", "regular file", 0o644, "root", debian=False) == ""
    assert "leftover" in hostfacts.cron_ignores("/etc/cron.d/pg.rpmsave", "regular file", 0o644, "root", False)
    assert hostfacts.is_package_leftover("/etc/cron.d/pg.dpkg-old")


@pytest.fixture(scope="module")
def local() -> hostfacts.Host:
    return hostfacts.get_host("local://")


@pytest.mark.parametrize(("mode", "user", "direct", "problem"), [
    (0o755, "root", True, ""),
    (0o700, "root", True, ""),
    (0o744, "postgres", True, "has no execute bit for postgres"),
    (0o644, "root", True, "(mode 0644, owner root) has no execute bit for root: cron gets 'Permission denied'"),
    (0o644, "root", False, ""),  # `bash script`: read is enough
    (0o640, "postgres", False, "has no read bit for postgres"),
])
def test_a_script_must_be_executable_by_the_entrys_user(local: hostfacts.Host, tmp_path: Path, mode: int,
                                                         user: str, direct: bool, problem: str) -> None:
    script = tmp_path / "pg-backup.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(mode)
    why, fix = hostfacts.run_problem(local, cronline.Run(str(script), str(script), direct, user))
    assert (problem in why) and bool(why) == bool(problem)
    if problem:
        who = "u" if user == "root" else "a"
        assert fix == f"chmod {who}+{'x' if direct else 'r'} {script}"


def test_a_missing_script_is_left_to_the_missing_script_check(local: hostfacts.Host, tmp_path: Path) -> None:
    assert hostfacts.run_problem(local, cronline.Run(str(tmp_path / "gone.sh"), "gone.sh", True, "root")) == ("", "")


def test_files_a_configured_cron_d_reads_are_judged_like_etc_cron_d(local: hostfacts.Host, tmp_path: Path) -> None:
    """A directory named cron.d is read in cron.d's format and under its rules, with its file's
    real mode and owner (a link followed) and the user's home as the working directory."""
    d = tmp_path / "cron.d"
    d.mkdir()
    good, dotted, shared = d / "pg-backup", d / "pg.backup", d / "shared"
    for f in (good, dotted, shared):
        f.write_text("0 2 * * * postgres cd scripts && ./pg-backup.sh\n")
    shared.chmod(0o666)
    (d / "linked").symlink_to(good)
    section = hostfacts.HostSection(crontabs=tuple(str(p) for p in (good, dotted, shared, d / "linked")))
    tabs = {Path(t.source).name: t for t in hostfacts.read_crontabs(local, section)}
    debian = Path("/etc/debian_version").exists()
    assert tabs["pg-backup"].ignored == "" and tabs["linked"].ignored == ""
    assert ("characters outside" in tabs["pg.backup"].ignored) == debian
    assert tabs["shared"].ignored.startswith("mode 0666")
    [e] = tabs["pg-backup"].entries
    assert (e.user, e.home) == ("postgres", pwd.getpwnam("postgres").pw_dir)
    os.chown(good, pwd.getpwnam("postgres").pw_uid, -1)
    [tab] = hostfacts.read_crontabs(local, hostfacts.HostSection(crontabs=(str(good),)))
    assert tab.ignored == "owned by postgres, not root"
