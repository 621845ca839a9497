"""One run at a time: overlapping cron/systemd runs are refused with a clear line."""

from __future__ import annotations

import os
from pathlib import Path

from pgbackup_verify.errors import CONFIG_ERROR, LOCK_HELD, UserError
from pgbackup_verify.locks import FileLock, LockBusy, LockError

__all__ = ["FileLock", "LockHeld", "LockUnsafe", "acquire"]


class LockHeld(UserError):
    exit_code = LOCK_HELD


class LockUnsafe(UserError):
    exit_code = CONFIG_ERROR


def acquire(path: Path) -> FileLock:
    """Take the run lock at `path` (refused at once if held); the kernel drops it when we exit or die."""
    if not path.parent.exists():
        os.makedirs(path.parent, mode=0o700, exist_ok=True)
    try:
        return FileLock(path).acquire()
    except LockBusy as e:
        raise LockHeld(f"lock '{path}' is held by another pgbackup-verify run (pid {e.holder}); this run is "
                       "refused: let that run finish (the lock is released when it exits)") from None
    except LockError as e:
        raise LockUnsafe(f"--lock: {e}") from None
