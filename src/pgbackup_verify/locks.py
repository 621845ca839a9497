"""The one file-lock helper: every flock the suite takes (run lock, drill lock, Kuma install) goes here.

The suite runs as root from cron. A lock file opened the naive way (`open(path, "w")` in a
world-writable directory) lets any local user plant a symlink there and make a root run truncate
and overwrite the file it points to. So:

- default locks live in a private directory (`private_dir()`): `/run/pgbackup-verify` for root
  (only root can create in /run), `$XDG_RUNTIME_DIR/pgbackup-verify` or `<tmp>/pgbackup-verify-<uid>`
  otherwise; the directory must be ours, a real directory, and mode 0700, or we refuse;
- a lock file is opened with O_NOFOLLOW (a planted symlink is refused, never followed), must be a
  regular file with one link, owned by this user; a file someone else created is refused, not
  waited on and not written;
- the holder's pid is written only into a file that passed those checks.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
import time
from pathlib import Path

APP = "pgbackup-verify"


class LockError(Exception):
    """A lock file or its directory is unsafe or unusable; str() names the path and what to do."""


class LockBusy(LockError):
    """Another process holds the lock (past the wait, if any); `holder` is what it wrote, or '?'."""

    def __init__(self, path: Path, holder: str, waited: float) -> None:
        super().__init__(f"lock '{path}' is held by another process (pid {holder})")
        self.path, self.holder, self.waited = path, holder, waited


def _check_private(path: Path, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise LockError(f"'{path}' is not a directory (a link or a file is there); remove it so "
                        f"{APP} can create its private directory")
    if st.st_uid != os.geteuid():
        raise LockError(f"'{path}' belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()}); "
                        "remove it, or point the lock elsewhere")
    if st.st_mode & 0o077:
        raise LockError(f"'{path}' is open to other users (mode {stat.S_IMODE(st.st_mode):o}); "
                        f"run: chmod 700 '{path}'")


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) if missing; refuse a link, a foreign owner or a group/other mode."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise LockError(f"cannot create '{path}': its parent directory does not exist") from None
    except PermissionError:
        raise LockError(f"cannot create '{path}': permission denied; choose a writable place") from None
    _check_private(path, os.lstat(path))
    return path


def private_dir() -> Path:
    """This user's private runtime directory for lock files (see the module docstring)."""
    if os.geteuid() == 0 and os.access("/run", os.W_OK):
        return ensure_private_dir(Path("/run") / APP)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        st = os.lstat(runtime)
        if st.st_uid == os.geteuid() and not st.st_mode & 0o077 and not stat.S_ISLNK(st.st_mode):
            return ensure_private_dir(Path(runtime) / APP)
    return ensure_private_dir(Path(tempfile.gettempdir()) / f"{APP}-{os.geteuid()}")


def open_lock_file(path: Path) -> int:
    """Open (or create, 0600) a lock file safely and return its fd; raise LockError if it is unsafe."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            return fd  # we created it: nothing else can be at the end of this path
        except FileExistsError:
            fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LockError(f"lock '{path}' is a symbolic link; refusing to follow it: remove it, or keep "
                            "lock files in a directory only this user can write") from None
        if e.errno == errno.ENOENT:
            raise LockError(f"lock '{path}': its directory does not exist; create it or fix the path") from None
        raise LockError(f"lock '{path}' cannot be opened ({e.strerror}); fix its permissions or the path") from None
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file"
    elif st.st_nlink != 1:
        problem = f"has {st.st_nlink} hard links (it may be another file's alias)"
    elif st.st_uid != os.geteuid():
        problem = f"belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})"
    if problem:
        os.close(fd)
        raise LockError(f"lock '{path}' {problem}; refusing to use it: remove it, or keep lock files in a "
                        "directory only this user can write")
    return fd


class FileLock:
    """An exclusive flock(2) on a safely opened file; the kernel drops it when the process dies.

    `timeout` 0 refuses at once when held; otherwise it polls until `timeout` seconds have passed.
    """

    def __init__(self, path: Path, timeout: float = 0.0, poll: float = 0.5) -> None:
        self.path, self.timeout, self.poll = Path(path), timeout, poll
        self.fd: int | None = None
        self.waited = 0.0

    def acquire(self) -> FileLock:
        fd = open_lock_file(self.path)
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= self.timeout:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise LockBusy(self.path, holder, waited) from None
                time.sleep(min(self.poll, max(self.timeout - waited, 0.01)))
        self.waited = time.monotonic() - start
        # Safe to write: open_lock_file proved this is our own regular file with a single link.
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
