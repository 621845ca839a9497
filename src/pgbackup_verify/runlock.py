"""One run at a time: overlapping cron/systemd runs are refused with a clear line."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pgbackup_verify.errors import LOCK_HELD, UserError


class LockHeld(UserError):
    exit_code = LOCK_HELD


def acquire(path: Path) -> int:
    """Take an exclusive flock on `path` and return the fd; the kernel drops it when we exit or die."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise LockHeld(f"lock '{path}' is held by another pgbackup-verify run (pid {holder}); this run is "
                       "refused: let that run finish (the lock is released when it exits)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
