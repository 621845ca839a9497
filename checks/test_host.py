"""The backup host: the nightly jobs are scheduled, their scripts are hardened, the dumps are private,
there is room for the next dump and the database is up. Facts come from testinfra (any hostspec)."""

from __future__ import annotations

import fnmatch
import re
from typing import Any

import pytest

from pgbackup_verify.config import HostSection, Target
from pgbackup_verify.evidence import fail, human_bytes, require, verdict
from pgbackup_verify.facts import host as hostfacts
from pgbackup_verify.facts.cron import CronEntry, Crontab, mentioned_paths

pytestmark = pytest.mark.host


def _sources(tabs: list[Crontab]) -> str:
    return ", ".join(f"{t.source} ({t.error})" if t.error else
                     f"{t.source} ({_n(len(t.entries))}{', ignored by cron' if t.ignored else ''})" for t in tabs)


def _n(count: int) -> str:
    return "1 entry" if count == 1 else f"{count} entries"


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _retired(path: str, section: HostSection) -> bool:
    return ".retired" in path or any(fnmatch.fnmatch(path, g) for g in section.retired_scripts)


def _ignored_fix(tab: Crontab) -> str:
    path, why = tab.source, tab.ignored
    if why.startswith("owned by"):
        return f"chown root {path}"
    if why.startswith("mode"):
        return f"chmod go-w {path}"
    if why.startswith("the name"):
        name = path.rsplit("/", 1)[-1]
        return f"mv {path} {path[:-len(name)]}{re.sub(r'[^A-Za-z0-9_-]+', '-', name).strip('-') or 'backup'}"
    return f"replace {path} by a regular file"


def _line_problem(e: CronEntry, tab: Crontab) -> tuple[str, str] | None:
    """Why cron will not run this line as written, and the fix (None when it will)."""
    if tab.ignored:
        return f"cron will not run this file: {tab.ignored}", _ignored_fix(tab)
    if e.error:
        return f"schedule '{e.schedule}' does not parse: {e.error}", "correct the schedule with `crontab -e`"
    pct = e.percent
    if pct.column:
        return (f"unescaped % at column {pct.column}: cron ends the command there and feeds the rest to its "
                f"stdin, so the shell gets `{pct.command.strip()}`",
                f"write every % as \\%: `{e.line(pct.escaped)}`")
    error = e.parsed().error
    if error:
        return f"the shell cannot read the command ({error})", "correct the quoting with `crontab -e`"
    return None


def _run_problems(e: CronEntry, backup_host: Any) -> list[tuple[str, str]]:
    return [p for p in (hostfacts.run_problem(backup_host, r) for r in e.runs() if r.path.startswith("/")) if p[0]]


def test_cron_schedules_every_backup_job(crontabs: list[Crontab], host_section: HostSection, backup_host: Any,
                                         evidence) -> None:
    if not host_section.cron_jobs:
        pytest.skip("no [host].cron_jobs configured; list the backup scripts cron must run")
    evidence("crontabs read", _sources(crontabs))
    problems, owned = [], []
    for job in host_section.cron_jobs:
        found: list[tuple[CronEntry, tuple[str, str] | None]] = []
        for t in crontabs:
            for e in t.entries:
                if job in e.scripts() or job in e.scripts_as_written():
                    bad = _line_problem(e, t)
                    if bad is None and job not in e.scripts():
                        bad = (f"cron cuts the command at column {e.percent.column} before it runs {job}",
                               f"write every % as \\%: `{e.line(e.percent.escaped)}`")
                    if bad is None and job in e.guarded() and not backup_host.file(job).exists:
                        bad = (f"guarded: does nothing while {job} is absent", f"restore {job}: the job never runs")
                    found.append((e, bad or next(iter(_run_problems(e, backup_host)), None)))
        good = [e for e, bad in found if bad is None]
        if good:
            evidence(f"cron {job}", "; ".join(f"{e.where}: {e.schedule}" for e in good))
        elif found:
            e, bad = found[0]
            assert bad is not None
            line = _owned_by_line_checks(e, crontabs, backup_host)
            if line:  # one fault, one red line: the line's own check says it (ownership.OWNERS)
                owned.append(line)
            else:
                problems.append(f"cron entry for {job}: FAILED ({e.where}: {bad[0]}); fix: {bad[1]}")
        else:
            problems.append(f"cron entry for {job}: FAILED (no active entry runs it in {_sources(crontabs)}); "
                            f"fix: add e.g. `0 2 * * * {job}` to root's crontab with `crontab -e`")
    if owned and not problems:
        pytest.skip(f"not judged: {'; '.join(dict.fromkeys(owned))}")
    verdict(problems)


def _owned_by_line_checks(e: CronEntry, crontabs: list[Crontab], backup_host: Any) -> str:
    """The finding the schedule check or the line check reports for this entry (the job check then says
    "not judged: <it>"), or "" when neither does (a package manager's copy: cron skips it on purpose)."""
    tab = next(t for t in crontabs if e in t.entries)
    if tab.ignored:
        return "" if hostfacts.is_package_leftover(tab.source) else (
            f"cron file {tab.source}: FAILED (cron will not run this file: {tab.ignored})")
    if e.error:
        return f"cron schedule at {e.where}: FAILED ('{e.schedule}': {e.error})"
    bad = _line_problem(e, tab) or next(iter(_run_problems(e, backup_host)), None)
    return f"cron entry at {e.where}: FAILED ({bad[0]})" if bad else ""


def test_every_cron_schedule_parses(crontabs: list[Crontab], evidence) -> None:
    entries = [e for t in crontabs for e in t.entries]
    evidence("crontabs read", _sources(crontabs))
    bad = [f"cron schedule at {e.where}: FAILED ('{e.schedule}': {e.error}); fix: correct the line, cron "
           "skips it silently" for e in entries if e.error]
    verdict(bad)


def test_cron_runs_every_line_as_written(crontabs: list[Crontab], backup_host: Any, evidence) -> None:
    """What cron does with a line before and while running it: files it ignores, `%` cutting the
    command, quoting the shell cannot read, and programs the entry's user may not execute."""
    evidence("crontabs read", _sources(crontabs))
    problems, runs = [], 0
    for t in crontabs:
        if t.ignored:
            if hostfacts.is_package_leftover(t.source):
                evidence(f"skipped by cron: {t.source}", f"{t.ignored} (a package manager's copy)")
            elif t.entries:
                shown = "; ".join(f"line {e.lineno} runs `{_short(e.command)}`" for e in t.entries[:3])
                problems.append(f"cron file {t.source}: FAILED (cron will not run this file: {t.ignored}; "
                                f"{_n(len(t.entries))} never run: {shown}); fix: {_ignored_fix(t)}")
            continue
        for e in t.entries:
            bad = _line_problem(e, t)
            if bad and not e.error:  # a bad schedule is test_every_cron_schedule_parses's finding
                problems.append(f"cron entry at {e.where}: FAILED ({bad[0]}); fix: {bad[1]}")
            for why, fix in _run_problems(e, backup_host):
                problems.append(f"cron entry at {e.where}: FAILED ({why}); fix: {fix}")
            for r in e.runs():
                runs += 1
                if r.via:
                    evidence(f"{e.where} runs", f"{r.path} as {r.user or 'the entry user'} "
                                                f"(through {' > '.join(r.via)})")
    evidence("programs run by cron", f"{runs} in {_sources(crontabs)}")
    verdict(problems)


def test_no_cron_entry_runs_a_missing_or_retired_script(crontabs: list[Crontab], backup_host: Any,
                                                       host_section: HostSection, evidence) -> None:
    problems, checked = [], 0
    for e in (e for t in crontabs if not t.ignored for e in t.entries):
        for path in mentioned_paths(e.command):
            if _retired(path, host_section):
                problems.append(f"cron entry at {e.where}: FAILED (runs retired script {path}); fix: comment the "
                                "line out with `crontab -e` and pause its Kuma monitor")
        guarded = e.guarded()
        for path in e.scripts():
            checked += 1
            if path.startswith("/") and not backup_host.file(path).exists:
                if path in guarded:  # `[ -x P ] && P`: a package removed but not purged, a harmless line
                    evidence(f"cron entry at {e.where}", f"guarded: does nothing while {path} is absent")
                    continue
                problems.append(f"cron entry at {e.where}: FAILED (script {path} does not exist); fix: restore "
                                "the script or remove the line with `crontab -e`")
    evidence("scripts run by cron", f"{checked} checked in {_sources(crontabs)}")
    verdict(problems)


def test_backup_scripts_are_root_owned_and_not_writable_by_others(backup_scripts: list[hostfacts.ScriptFacts],
                                                                 host_section: HostSection, evidence) -> None:
    problems = []
    owner = host_section.script_owner
    for s in backup_scripts:
        if not s.exists:
            problems.append(f"backup script {s.path}: FAILED (does not exist); fix: restore it or fix "
                            "[host].backup_scripts")
            continue
        evidence(f"script {s.path}", f"owner {s.owner}, mode {s.mode:04o}")
        if s.owner != owner:
            problems.append(f"backup script {s.path}: FAILED (owner {s.owner} vs {owner}); "
                            f"fix: chown {owner} {s.path}")
        if s.mode & 0o022:
            problems.append(f"backup script {s.path}: FAILED (mode {s.mode:04o} is group/world-writable); "
                            f"fix: chmod go-w {s.path}")
    verdict(problems)


def test_backup_scripts_use_pipefail(backup_scripts: list[hostfacts.ScriptFacts], evidence) -> None:
    problems = []
    for s in (s for s in backup_scripts if s.exists):
        evidence(f"script {s.path}", f"{s.pipefail_line or 'no pipefail'}; umask {s.umask or 'not set'}")
        if not s.pipefail_line:
            problems.append(f"backup script {s.path}: FAILED (no `set -o pipefail`: a failing pg_dump piped into "
                            "gzip still exits 0); fix: add `set -euo pipefail` after the shebang")
    verdict(problems)


def test_backup_scripts_pass_shellcheck(backup_scripts: list[hostfacts.ScriptFacts], host_section: HostSection,
                                       evidence) -> None:
    if host_section.shellcheck_severity == "off":
        pytest.skip("[host].shellcheck_severity is off")
    if any(s.shellcheck_error for s in backup_scripts):
        fail("; ".join(s.shellcheck_error for s in backup_scripts if s.shellcheck_error))
    if all(s.shellcheck is None for s in backup_scripts if s.exists):
        pytest.skip("shellcheck is not installed on the backup host; install it to audit the scripts")
    problems = []
    for s, findings in ((s, s.shellcheck) for s in backup_scripts if s.shellcheck is not None):
        evidence(f"shellcheck {s.path}", f"{len(findings)} finding(s) at severity >= "
                 f"{host_section.shellcheck_severity}")
        if findings:
            shown = "; ".join(findings[:5]) + (" ..." if len(findings) > 5 else "")
            problems.append(f"shellcheck {s.path}: FAILED ({len(findings)} finding(s): {shown}); "
                            f"fix: run `shellcheck {s.path}` and correct them")
    verdict(problems)


def test_backup_dir_and_dumps_are_not_world_readable(backup_dir_facts: hostfacts.BackupDirFacts, evidence) -> None:
    d = backup_dir_facts
    require(d.exists, f"backup dir {d.path}: FAILED (missing on the host); fix: mkdir -m 700 {d.path}")
    evidence("backup dir", f"{d.shown}, owner {d.owner}, mode {d.mode:04o}, {len(d.dumps)} dump(s)")
    problems = []
    if d.mode & 0o007:
        problems.append(f"backup dir {d.shown}: FAILED (mode {d.mode:04o} gives others access); "
                        f"fix: chmod o-rwx {d.resolved or d.path}")
    open_dumps = [f for f in d.dumps if f.mode & 0o004]
    if open_dumps:
        shown = ", ".join(f"{hostfacts.shown_name(f.path)} {f.mode:04o}" for f in open_dumps[:5])
        problems.append(f"dumps readable by others: FAILED ({len(open_dumps)} file(s): {shown}); fix: chmod o-r "
                        f"them and put `umask 077` at the top of the backup script")
    verdict(problems)


def test_free_space_holds_the_next_dumps(backup_dir_facts: hostfacts.BackupDirFacts, target: Target,
                                         evidence) -> None:
    d = backup_dir_facts
    multiple = (target.host_checks or HostSection()).free_space_multiple
    require(d.exists, f"backup dir {d.path}: FAILED (missing on the host); fix: mkdir -m 700 {d.path}")
    free = d.free_bytes
    if free is None:
        fail(f"free space of {d.path}: FAILED (`df -Pk` gave nothing); fix: check the mount")
    if d.latest is None:
        pytest.skip(f"no dump matching {target.backups.pattern} in {d.path} to size against (the dump checks fail)")
    need = multiple * d.latest.size
    evidence("free space", f"{human_bytes(free)} on {d.filesystem} ({d.shown})")
    evidence("needed", f"{multiple:g} x latest dump {hostfacts.shown_name(d.latest.path)} "
             f"({human_bytes(d.latest.size)}) = {human_bytes(need)}")
    require(free >= need, (
        f"free space for backups: FAILED ({human_bytes(free)} free on {d.filesystem} vs "
        f"{human_bytes(need)} = {multiple:g} x latest dump); fix: free space on that filesystem or prune old dumps"))


def test_database_service_is_running(backup_host: Any, host_section: HostSection, evidence) -> None:
    facts = hostfacts.database_running(backup_host, host_section)
    if not facts:
        pytest.skip("no [host].service, container or process configured; name the database's")
    for f in facts:
        evidence(f.kind, f"{f.name}: {f.detail}")
    down = [f"database {f.kind} {f.name}: FAILED ({f.detail}); fix: start it (the nightly pg_dump needs it)"
            for f in facts if not f.running]
    verdict(down)
