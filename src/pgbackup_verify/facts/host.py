"""Facts about the backup host, gathered through testinfra so any hostspec works.

`local://`, `ssh://`, `docker://` and `ansible://` all go through testinfra's backends; this module
only asks questions (files, commands, processes) and returns dataclass facts. It never changes the host.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import testinfra

from pgbackup_verify.config import HostSection
from pgbackup_verify.facts import childenv, cron, cronline
from pgbackup_verify.facts.dumps.inventory import DumpFile, display_name

ROOT_CRONTAB = "crontab -l -u root"
SYSTEM_CRONTAB = "/etc/crontab"
CRON_D = "/etc/cron.d"
_PIPEFAIL = re.compile(r"^[ \t]*set[ \t]+[^#\n]*\bpipefail\b.*$", re.MULTILINE)
_UMASK = re.compile(r"^[ \t]*umask[ \t]+(\S+)", re.MULTILINE)

Host = Any  # testinfra.host.Host; its type is not exported in a typed way


def _names(res: Any) -> str:
    """A command's output that holds file names: decoded as bytes with `surrogateescape`, because a name
    need not be UTF-8 and testinfra's `stdout` raises on it. Show such names with `display_name`."""
    return res.stdout_bytes.decode("utf-8", "surrogateescape")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def shown_name(name: object) -> str:
    """A file name as one printable line: undecodable bytes as \\xNN (`display_name`), and control
    characters (a newline would split the finding) as \\n, \\t or \\xNN."""
    return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], display_name(str(name)))


def get_host(spec: str) -> Host:
    """The testinfra host for a target's hostspec (`local://` by default)."""
    return childenv.confine_host(testinfra.get_host(spec))


def _is_system_crontab(path: str) -> bool:
    # A file in a directory named cron.d is in cron.d's format (and under its rules) wherever that
    # directory is mounted, e.g. a container's or a chroot's /etc/cron.d read from outside.
    return path == SYSTEM_CRONTAB or posixpath.basename(posixpath.dirname(path)) == "cron.d"


def _spool_user(path: str) -> str:
    """The owner of a user crontab file: its name under a cron spool directory, else root."""
    parent = posixpath.dirname(path)
    return posixpath.basename(path) if parent in SPOOLS else "root"


SPOOLS = ("/var/spool/cron/crontabs", "/var/spool/cron", "/var/spool/cron/tabs")
CRON_D_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # run-parts' names: Debian's cron reads nothing else there
_PACKAGE_LEFTOVER = re.compile(r"(\.dpkg-(old|new|dist|bak|tmp)|\.ucf-(old|new|dist)|\.rpm(save|orig|new)|~)$")


def cron_ignores(path: str, kind: str, mode: int, owner: str, debian: bool) -> str:
    """Why cron will not run this crontab file at all ('' when it reads it): Debian's cron reads
    /etc/cron.d files named like run-parts scripts only, and both cron and cronie skip system
    crontabs that are not regular files, not owned by root, or writable by group or others."""
    name = posixpath.basename(path)
    if kind != "regular file":
        return f"it is a {kind}, not a regular file"
    if owner != "root":
        return f"owned by {owner}, not root"
    if mode & 0o022:
        return f"mode {mode:04o} is writable by group or others"
    if posixpath.basename(posixpath.dirname(path)) == "cron.d":
        if debian and not CRON_D_NAME.match(name):
            return f"the name '{name}' has characters outside [A-Za-z0-9_-] (Debian's cron skips such names)"
        if not debian and (name.startswith(".") or _PACKAGE_LEFTOVER.search(name)):
            return f"the name '{name}' is one cron skips (hidden or a package manager's leftover)"
    return ""


def is_package_leftover(path: str) -> bool:
    """A package manager's backup copy (`x.dpkg-old`, `x~`): meant to be ignored by cron."""
    name = posixpath.basename(path)
    return name.startswith(".") or bool(_PACKAGE_LEFTOVER.search(name))


def _stat(host: Host, path: str) -> tuple[int, str, str] | None:
    """(mode, owner, kind) of what `path` points to, following links; None when it does not exist."""
    res = host.run("stat -L -c '%%a\t%%U\t%%F' -- %s", path)
    if res.rc != 0:
        return None
    mode, owner, kind = res.stdout.strip().split("\t", 2)
    return int(mode, 8), owner, kind


def _homes(host: Host, tab: cron.Crontab) -> cron.Crontab:
    """Entries get their user's home as cron's working directory, unless the crontab set HOME."""
    homes: dict[str, str] = {}
    entries = []
    for e in tab.entries:
        if not e.home and e.user:
            if e.user not in homes:
                res = host.run("getent passwd %s", e.user)
                fields = res.stdout.strip().split(":")
                homes[e.user] = fields[5] if res.rc == 0 and len(fields) > 5 else ""
            e = dataclasses.replace(e, home=homes[e.user])
        entries.append(e)
    return dataclasses.replace(tab, entries=entries)


def _is_debian(host: Host) -> bool:
    return bool(host.file("/etc/debian_version").exists)


def _read_file_crontab(host: Host, path: str, debian: bool) -> cron.Crontab:
    st = _stat(host, path)
    if st is None:
        return cron.Crontab(path, error=f"{path} does not exist")
    try:
        text = host.file(path).content_string
    except Exception as e:  # testinfra raises plain RuntimeError/AssertionError on read failures
        return cron.Crontab(path, error=f"{path} cannot be read ({e})")
    system = _is_system_crontab(path)
    tab = cron.parse(text, path, system=system, user="" if system else _spool_user(path))
    if system:
        tab = dataclasses.replace(tab, ignored=cron_ignores(path, st[2], st[0], st[1], debian))
    return _homes(host, tab)


def read_crontabs(host: Host, section: HostSection) -> list[cron.Crontab]:
    """The configured crontab files, else root's crontab, /etc/crontab and /etc/cron.d/*.
    A file cron ignores is read all the same and marked (`Crontab.ignored`), never left out."""
    debian = _is_debian(host)
    if section.crontabs:
        return [_read_file_crontab(host, p, debian) for p in section.crontabs]
    tabs = []
    res = host.run(ROOT_CRONTAB)
    if res.rc == 0:
        tabs.append(_homes(host, cron.parse(res.stdout, ROOT_CRONTAB, user="root")))
    elif "no crontab" in res.stderr:
        tabs.append(cron.Crontab(ROOT_CRONTAB))
    else:
        tabs.append(cron.Crontab(ROOT_CRONTAB, error=f"`{ROOT_CRONTAB}` failed (exit {res.rc}): "
                                                     f"{(res.stderr or res.stdout).strip()[:200]}"))
    if host.file(SYSTEM_CRONTAB).exists:
        tabs.append(_read_file_crontab(host, SYSTEM_CRONTAB, debian))
    if host.file(CRON_D).is_directory:
        listing = host.run("find -H %s -mindepth 1 -maxdepth 1 ! -type d -printf '%%p\\0'", CRON_D)
        for p in sorted(filter(None, _names(listing).split("\0"))):
            if display_name(p) != p:  # undecodable bytes: testinfra cannot put the name into a command
                tabs.append(cron.Crontab(shown_name(p), error="file name is not valid UTF-8: not read (Debian's "
                                                              "cron skips such names too); rename it"))
            else:
                tabs.append(_read_file_crontab(host, p, debian))
    return tabs


def run_problem(host: Host, run: cronline.Run) -> tuple[str, str]:
    """Why `run.user` cannot run the program `run` names, and the fix (("", "") when it can, or
    when it is missing:
    the missing-script check reports that). Executed directly, it needs an execute bit for that
    user (root: any x bit); handed to an interpreter, it needs a read bit."""
    st = host.run("stat -L -c '%%a\t%%u\t%%g\t%%U\t%%F' -- %s", run.path)
    if st.rc != 0:
        return "", ""
    mode_s, uid_s, gid_s, owner, kind = st.stdout.strip().split("\t", 4)
    mode, uid, gid = int(mode_s, 8), int(uid_s), int(gid_s)
    if kind != "regular file":
        return f"{run.path} is a {kind}, not a program", "point the line at the script itself"
    ids = host.run("id -u -- %s && id -G -- %s", run.user, run.user)
    if ids.rc != 0:
        return f"user {run.user} does not exist on the host", "run it as an existing user"
    lines = ids.stdout.split("\n")
    user_uid, gids = int(lines[0]), {int(g) for g in lines[1].split()}
    if user_uid == 0:
        allowed = 0o7 if not run.direct else (0o1 if mode & 0o111 else 0)
    else:
        shift = 6 if user_uid == uid else 3 if gid in gids else 0
        allowed = (mode >> shift) & 0o7
    need, what = (0o1, "execute") if run.direct else (0o4, "read")
    if allowed & need:
        return "", ""
    return (f"{run.path} (mode {mode:04o}, owner {owner}) has no {what} bit for {run.user}: "
            "cron gets 'Permission denied'",
            f"chmod {'u' if user_uid in (0, uid) else 'a'}+{'x' if run.direct else 'r'} {run.path}")


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
    mode: int = 0  # of the directory itself, a symlinked backup dir followed
    owner: str = ""
    dumps: list[DumpFile] = field(default_factory=list)  # oldest first
    free_bytes: int | None = None
    filesystem: str = ""
    resolved: str = ""  # where a symlinked backup dir really is ("" when it is no link)

    @property
    def latest(self) -> DumpFile | None:
        return self.dumps[-1] if self.dumps else None

    @property
    def shown(self) -> str:
        return shown_name(f"{self.path} -> {self.resolved}" if self.resolved else self.path)


def backup_dir_facts(host: Host, directory: str, pattern: str) -> BackupDirFacts:
    """Mode and owner of the backup dir, its dumps (mode, size, mtime) and the free space there.
    A backup dir that is a symlink (to a volume, say) is followed everywhere, as the dump checks do:
    `stat -L`, `find -H` and `df` on the directory the link names."""
    d = host.file(directory)
    if not d.is_directory:  # `test -d` follows links
        return BackupDirFacts(directory, exists=False)
    st = _stat(host, directory)
    mode, owner = (st[0], st[1]) if st else (d.mode, d.user)
    resolved = ""
    if d.is_symlink:
        res = host.run("readlink -f -- %s", directory)
        resolved = _names(res).strip() if res.rc == 0 else ""
    # NUL-terminated: a file name may hold a newline (and any byte but NUL and "/").
    res = host.run("find -H %s -maxdepth 1 -type f -name %s -printf '%%m\\t%%s\\t%%T@\\t%%p\\0'", directory,
                   pattern)
    dumps = []
    for line in filter(None, _names(res).split("\0")):
        fmode, size, mtime, path = line.split("\t", 3)
        dumps.append(DumpFile(Path(path), int(size), float(mtime), int(fmode, 8)))
    dumps.sort(key=lambda x: x.mtime)
    free, fs = None, ""
    df = host.run("df -Pk -- %s", directory.rstrip("/") + "/.")
    rows = df.stdout.splitlines()
    if df.rc == 0 and len(rows) >= 2:
        cols = rows[-1].split()
        free, fs = int(cols[3]) * 1024, f"{cols[0]} on {cols[5]}"
    return BackupDirFacts(directory, True, mode, owner, dumps, free, fs, resolved)


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
