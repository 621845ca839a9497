"""Root's own inputs, checked the way sshd and cron check theirs.

The suite runs as root. A target file, a [database].password_file, an --env-file or the rclone
binary that another user can change would let that user steer root: point the checks elsewhere,
read the password, set PATH or a token, run code. Each is refused with one line (exit 4) unless it
is owned by root or by the user running the checks and writable by no group and no other user; a
file holding a secret must not be readable by others either. Only the file itself is judged (as
cron judges /etc/cron.d files): its directory is the administrator's.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from pgbackup_verify.errors import ConfigError


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def problem(st: os.stat_result, shown: str, *, secret: bool = False) -> str | None:
    """Why the file `st` describes cannot be trusted by this run, with the command that fixes it."""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (0, os.geteuid()):
        me = "" if os.geteuid() == 0 else f" or {_owner(os.geteuid())}"
        return f"is owned by {_owner(st.st_uid)}, not root{me}; run: chown root '{shown}'"
    if mode & 0o022:
        who = " and ".join(w for w, bit in (("its group", 0o020), ("others", 0o002)) if mode & bit)
        return f"is writable by {who} (mode {mode:04o}); run: chmod go-w '{shown}'"
    if secret and mode & 0o004:
        return f"holds a secret and is readable by others (mode {mode:04o}); run: chmod o-rwx '{shown}'"
    return None


def check(st: os.stat_result, what: str, shown: str, *, secret: bool = False) -> None:
    """Raise ConfigError (one line naming `what`) when the file cannot be trusted."""
    why = problem(st, shown, secret=secret)
    if why:
        raise ConfigError(f"{what} '{shown}' {why}")


def check_path(path: Path, what: str, *, secret: bool = False) -> None:
    """`check` of the file `path` names (links followed: the file is what gets read)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(f"{what} '{path}' cannot be read ({e.strerror}); fix the path") from None
    check(st, what, str(path), secret=secret)


def read_trusted(path: Path, what: str, *, secret: bool = False, limit: int = 1 << 16) -> str:
    """The text of `path`, judged on the file actually opened (no swap between check and read)."""
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"{what} '{path}' is not a regular file; fix the path")
            check(st, what, str(path), secret=secret)
            data = f.read(limit + 1)
    except OSError as e:
        raise ConfigError(f"{what} '{path}' cannot be read ({e.strerror}); fix its permissions") from None
    if len(data) > limit:
        raise ConfigError(f"{what} '{path}' is larger than {limit // 1024} KiB; pass the right file")
    return data.decode("utf-8", "replace")
