"""The drill's sandbox: the one place that decides how a process of the restore drill is started.

A dump is untrusted input: any role that owns an object in the source database can make the restore
run its code (a CHECK, a domain CHECK, a generated column, an index expression, a matview query). So
the throwaway server, initdb and the psql that feeds the dump run like this (`Sandbox.wrap`):

- as the drill user: under root a uid that no account of the host has (no passwd entry, no subuid
  range, no process), so it owns nothing but the drill's own directories; otherwise the invoking
  user. Never root, never the host's `postgres`. No capabilities, no new privileges (bwrap sets
  PR_SET_NO_NEW_PRIVS), no supplementary groups.
- in bubblewrap's namespaces: its own network namespace (only a loopback of its own: no route to the
  live server, to TCP anywhere, or to the host's abstract sockets), its own pid, ipc, uts and user
  namespaces, its own session (no TIOCSTI into our terminal), killed when we die (--die-with-parent).
- seeing only: /usr read-only (with Debian's merged-/usr links /bin /lib /lib64 /sbin), a generated
  /etc/passwd and /etc/group naming the drill user alone, /etc/ld.so.cache and /etc/localtime
  read-only, a private /dev, /proc and /tmp, and the directories named per call (the cluster's data
  and socket directory). Not the backup directory, the target file, /var/run/postgresql, /root, /home.
- with an environment we write (ENV_KEEP and what the caller adds): no PGPASSWORD, no Kuma token.

The dump reaches the sandbox as a stream on stdin (plain dumps) or through the socket. One client
runs outside this scheme: pg_restore must open the archive by path (-j reopens it per worker) and the
archive is the host's (root-only, usually), so it runs as root with every capability dropped, in its
own mount, network and pid namespaces, seeing /usr, the socket directory and the archive read-only
(`Sandbox.wrap(..., reader=True)`).

`[drill].sandbox = "none"` keeps only the uid drop (root) and the explicit environment: for hosts
without user namespaces; every report then says the drill ran unsandboxed.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from pgbackup_verify.errors import UserError

# High and unnamed: no account, subuid range or DynamicUser (61184-65519) of a normal host is here.
UID_BASE = 0x6F000000
UID_TRIES = 64
ENV_KEEP = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")
LOCALE = "C.UTF-8"
INSTALL_HINT = ("install bubblewrap (apt-get install bubblewrap) and allow user namespaces "
                "(sysctl kernel.unprivileged_userns_clone=1), or set [drill].sandbox = \"none\" to run the "
                "drill unsandboxed (every report then says so)")


class SandboxUnavailable(UserError):
    """The sandbox cannot be built here; str() names what is missing and how to get it (exit 4)."""


def _subuid_ranges() -> list[tuple[int, int]]:
    out = []
    for name in ("/etc/subuid", "/etc/subgid"):
        try:
            text = Path(name).read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                out.append((int(parts[1]), int(parts[1]) + int(parts[2])))
    return out


def _uid_taken(uid: int, ranges: list[tuple[int, int]]) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        pass
    if any(lo <= uid < hi for lo, hi in ranges):
        return True
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info.get("uids")
        if uids is not None and uid in (uids.real, uids.effective):
            return True
    return False


def pick_uid() -> int:
    """A uid for this drill: unnamed, outside subuid ranges, used by no process right now."""
    ranges = _subuid_ranges()
    for uid in range(UID_BASE + os.getpid() % UID_TRIES, UID_BASE + os.getpid() % UID_TRIES + UID_TRIES):
        if not _uid_taken(uid, ranges):
            return uid
    raise SandboxUnavailable(f"no free drill uid in {UID_BASE}..{UID_BASE + 2 * UID_TRIES}: every one is "
                             "in use; wait for the other drills to end")


@functools.cache
def _probe(bwrap: str, uid: int) -> str | None:
    """None when bwrap can build the namespaces as `uid`; else why not (one line)."""
    kwargs: dict[str, Any] = {"user": uid, "group": uid, "extra_groups": []} if os.geteuid() == 0 else {}
    try:
        r = subprocess.run([bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--ro-bind", "/usr", "/usr",
                            "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64",
                            "/lib64", "true"], capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"}, **kwargs)
    except (OSError, subprocess.SubprocessError) as e:
        return f"bwrap did not run ({e})"
    if r.returncode != 0:
        return f"bwrap cannot create the namespaces here ({r.stderr.decode(errors='replace').strip()[:200]})"
    return None


@dataclass(frozen=True)
class Sandbox:
    """How the drill's processes run (see the module docstring); `resolve()` makes one."""

    mode: str  # "bwrap" or "none"
    uid: int
    gid: int
    bwrap: str = ""
    etc: Path | None = None  # holds the generated passwd and group

    @property
    def drops_uid(self) -> bool:
        return os.geteuid() == 0

    def describe(self) -> str:
        who = f"uid {self.uid} (no host account)" if self.drops_uid else f"uid {self.uid} (the invoking user)"
        if self.mode == "none":
            return f"UNSANDBOXED ([drill].sandbox = \"none\"): the restore runs as {who}, no namespaces"
        return f"bubblewrap sandbox as {who}: no network, read-only /usr, private /tmp, no capabilities"

    def write_identity(self, etc: Path) -> Sandbox:
        """The passwd and group the sandbox sees (initdb and libpq look their user up)."""
        etc.mkdir(mode=0o755, exist_ok=True)
        (etc / "passwd").write_text(f"pgbv-drill:x:{self.uid}:{self.gid}:drill:/nonexistent:/usr/sbin/nologin\n")
        (etc / "group").write_text(f"pgbv-drill:x:{self.gid}:\n")
        for name in ("passwd", "group"):
            os.chmod(etc / name, 0o644)
        return Sandbox(self.mode, self.uid, self.gid, self.bwrap, etc)

    def env(self, **extra: str) -> dict[str, str]:
        """The whole environment of a drill process: nothing inherited but the locale."""
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": LOCALE, "LC_CTYPE": LOCALE, "LANG": LOCALE, "HOME": "/nonexistent"}
        env.update({k: os.environ[k] for k in ("TZ",) if k in os.environ})
        env.update(extra)
        return env

    def popen_kwargs(self, reader: bool = False) -> dict[str, Any]:
        """Who the process runs as outside: the drill uid (root only), or root for the archive reader."""
        if not self.drops_uid or reader:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "umask": 0o077}

    def wrap(self, argv: Sequence[str], rw: Sequence[Path] = (), ro: Sequence[Path] = (),
             reader: bool = False) -> list[str]:
        """argv run inside the sandbox, seeing `rw` read-write and `ro` read-only at the same paths."""
        if self.mode == "none":
            return list(argv)
        cmd = [self.bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
               "--unshare-cgroup-try", "--die-with-parent", "--new-session",
               "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
               "--symlink", "usr/sbin", "/sbin", "--dev", "/dev", "--tmpfs", "/dev/shm", "--proc", "/proc",
               "--tmpfs", "/tmp"]
        if Path("/usr/lib64").exists():
            cmd += ["--symlink", "usr/lib64", "/lib64"]
        for name in ("/etc/ld.so.cache", "/etc/localtime"):
            if os.path.exists(name):
                cmd += ["--ro-bind", name, name]
        if reader and self.drops_uid:
            # Root outside, for the archive's sake; without a single capability inside.
            cmd += ["--cap-drop", "ALL"]
        else:
            cmd += ["--unshare-user", "--uid", str(self.uid), "--gid", str(self.gid)]
            if self.etc is not None:
                cmd += ["--ro-bind", str(self.etc / "passwd"), "/etc/passwd",
                        "--ro-bind", str(self.etc / "group"), "/etc/group"]
        for path in rw:
            cmd += ["--bind", str(path), str(path)]
        for path in ro:
            cmd += ["--ro-bind", str(path), str(path)]
        return [*cmd, "--", *argv]


def tool_env() -> dict[str, str]:
    """The environment of a tool that only reads a dump (pg_restore -l): the host's PATH and a locale."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": LOCALE, "LANG": LOCALE}


def resolve(mode: str) -> Sandbox:
    """The sandbox of `[drill].sandbox`; raises SandboxUnavailable (fail closed) when bwrap cannot run."""
    uid = pick_uid() if os.geteuid() == 0 else os.geteuid()
    gid = uid if os.geteuid() == 0 else os.getegid()
    if mode == "none":
        return Sandbox("none", uid, gid)
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(f"restore drill sandbox: bwrap is not installed; {INSTALL_HINT}")
    why = _probe(bwrap, uid)
    if why:
        raise SandboxUnavailable(f"restore drill sandbox: {why}; {INSTALL_HINT}")
    return Sandbox("bwrap", uid, gid, bwrap)
