"""Facts about the backup host, gathered through testinfra so any hostspec works.

`local://`, `ssh://`, `docker://` and `ansible://` all go through testinfra's backends; this module
only asks questions (files, commands, processes) and returns dataclass facts. It never changes the host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import testinfra

from pgbackup_verify.config import HostSection
from pgbackup_verify.facts import cron
from pgbackup_verify.facts.dumps.inventory import DumpFile

ROOT_CRONTAB = "crontab -l -u root"
SYSTEM_CRONTAB = "/etc/crontab"
CRON_D = "/etc/cron.d"
_PIPEFAIL = re.compile(r"^[ \t]*set[ \t]+[^#\n]*\bpipefail\b.*$", re.MULTILINE)
_UMASK = re.compile(r"^[ \t]*umask[ \t]+(\S+)", re.MULTILINE)

Host = Any  # testinfra.host.Host; its type is not exported in a typed way


def get_host(spec: str) -> Host:
    """The testinfra host for a target's hostspec (`local://` by default)."""
    return testinfra.get_host(spec)


def _is_system_crontab(path: str) -> bool:
    return path == SYSTEM_CRONTAB or path.startswith(CRON_D + "/")


def _read_file_crontab(host: Host, path: str) -> cron.Crontab:
    f = host.file(path)
    if not f.exists:
        return cron.Crontab(path, error=f"{path} does not exist")
    try:
        text = f.content_string
    except Exception as e:  # testinfra raises plain RuntimeError/AssertionError on read failures
        return cron.Crontab(path, error=f"{path} cannot be read ({e})")
    return cron.parse(text, path, system=_is_system_crontab(path))


def read_crontabs(host: Host, section: HostSection) -> list[cron.Crontab]:
    """The configured crontab files, else root's crontab, /etc/crontab and /etc/cron.d/*."""
    if section.crontabs:
        return [_read_file_crontab(host, p) for p in section.crontabs]
    tabs = []
    res = host.run(ROOT_CRONTAB)
    if res.rc == 0:
        tabs.append(cron.parse(res.stdout, ROOT_CRONTAB))
    elif "no crontab" in res.stderr:
        tabs.append(cron.Crontab(ROOT_CRONTAB))
    else:
        tabs.append(cron.Crontab(ROOT_CRONTAB, error=f"`{ROOT_CRONTAB}` failed (exit {res.rc}): "
                                                     f"{(res.stderr or res.stdout).strip()[:200]}"))
    if host.file(SYSTEM_CRONTAB).exists:
        tabs.append(_read_file_crontab(host, SYSTEM_CRONTAB))
    if host.file(CRON_D).is_directory:
        listing = host.run("find %s -maxdepth 1 -type f ! -name '.*'", CRON_D)
        tabs += [_read_file_crontab(host, p) for p in sorted(listing.stdout.split())]
    return tabs


@dataclass(frozen=True)
class ScriptFacts:
    path: str
    exists: bool
    owner: str = ""
    mode: int = 0
    pipefail_line: str = ""  # the `set ... pipefail` line, "" when absent
    umask: str = ""
    shellcheck: list[str] | None = None  # findings; None when shellcheck is not installed on the host
    shellcheck_error: str = ""


def script_facts(host: Host, path: str, severity: str = "warning") -> ScriptFacts:
    f = host.file(path)
    if not f.exists or not f.is_file:
        return ScriptFacts(path, exists=False)
    text = f.content_string
    pipefail = _PIPEFAIL.search(text)
    umask = _UMASK.search(text)
    findings: list[str] | None = None
    sc_error = ""
    if severity != "off" and host.exists("shellcheck"):
        res = host.run("shellcheck -f gcc -S %s %s", severity, path)
        if res.rc in (0, 1):
            findings = [ln.removeprefix(path + ":") for ln in res.stdout.splitlines() if ln.strip()]
        else:
            sc_error = f"shellcheck failed (exit {res.rc}): {res.stderr.strip()[:200]}"
    return ScriptFacts(path, True, f.user, f.mode, pipefail.group(0).strip() if pipefail else "",
                       umask.group(1) if umask else "", findings, sc_error)


@dataclass(frozen=True)
class BackupDirFacts:
    path: str
    exists: bool
    mode: int = 0
    owner: str = ""
    dumps: list[DumpFile] = field(default_factory=list)  # oldest first
    free_bytes: int | None = None
    filesystem: str = ""

    @property
    def latest(self) -> DumpFile | None:
        return self.dumps[-1] if self.dumps else None


def backup_dir_facts(host: Host, directory: str, pattern: str) -> BackupDirFacts:
    """Mode and owner of the backup dir, its dumps (mode, size, mtime) and the free space there."""
    d = host.file(directory)
    if not d.is_directory:
        return BackupDirFacts(directory, exists=False)
    res = host.run("find %s -maxdepth 1 -type f -name %s -printf '%%m\\t%%s\\t%%T@\\t%%p\\n'", directory, pattern)
    dumps = []
    for line in res.stdout.splitlines():
        mode, size, mtime, path = line.split("\t", 3)
        dumps.append(DumpFile(Path(path), int(size), float(mtime), int(mode, 8)))
    dumps.sort(key=lambda x: x.mtime)
    free, fs = None, ""
    df = host.run("df -Pk %s", directory)
    rows = df.stdout.splitlines()
    if df.rc == 0 and len(rows) >= 2:
        cols = rows[-1].split()
        free, fs = int(cols[3]) * 1024, f"{cols[0]} on {cols[5]}"
    return BackupDirFacts(directory, True, d.mode, d.user, dumps, free, fs)


@dataclass(frozen=True)
class ServiceFacts:
    kind: str  # "systemd service", "docker container", "process"
    name: str
    running: bool
    detail: str


def database_running(host: Host, section: HostSection) -> list[ServiceFacts]:
    """Every configured way the database must be seen running: service, container, process."""
    facts = []
    if section.service:
        svc = host.service(section.service)
        facts.append(ServiceFacts("systemd service", section.service, svc.is_running,
                                  "running" if svc.is_running else "not running"))
    if section.container:
        res = host.run("docker inspect -f '{{.State.Status}}' %s", section.container)
        status = res.stdout.strip() if res.rc == 0 else (res.stderr.strip()[:200] or f"exit {res.rc}")
        facts.append(ServiceFacts("docker container", section.container, status == "running", status))
    if section.process:
        procs = [p for p in host.process.filter(comm=section.process) if section.process_args in p.args]
        shown = f"{section.process} with '{section.process_args}'" if section.process_args else section.process
        detail = f"pid {procs[0].pid}: {procs[0].args[:120]}" if procs else "no such process"
        facts.append(ServiceFacts("process", shown, bool(procs), detail))
    return facts
