"""Is a dump file still being written? Then it is neither judged nor called truncated.

Two signs, the first decisive where it can be seen:
- a process holds the file open for writing (psutil reads /proc/<pid>/fd and fdinfo). Only the
  processes of the checking user are visible to a non-root run, so
- a file written to within the last GROWTH_WINDOW_S is stat()ed again after a short pause; if its
  size or mtime moved, it is still growing. A job whose writer is idle for longer than the pause
  (gzip buffers its output) is caught by the first sign only: run the checks as root or as the
  backup job's user to see it.

Cost: one pass over the process table (a few ms per hundred processes) and, only when a dump was
written in the last two minutes, one pause of GROWTH_WAIT_S.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil

GROWTH_WINDOW_S = 120.0
GROWTH_WAIT_S = 1.0
WRITE_MODES = frozenset({"w", "a", "r+", "a+", "w+"})


class FileLike(Protocol):
    @property
    def path(self) -> Path: ...

    @property
    def size(self) -> int: ...

    @property
    def mtime(self) -> float: ...


@dataclass(frozen=True)
class InProgress:
    path: Path
    size: int
    mtime: float
    why: str  # "open for writing by pid 123 (gzip)" / "grew from 10 to 20 bytes in 1.0 s"

    @property
    def name(self) -> str:
        return self.path.name

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.mtime))
        return f"{self.name} ({self.size} bytes so far, last written {since}; {self.why})"


def open_for_writing(paths: Iterable[Path]) -> dict[Path, str]:
    """path -> which process holds it open for writing, among the processes this user may see."""
    wanted = {os.path.realpath(p): p for p in paths}
    found: dict[Path, str] = {}
    if not wanted:
        return found
    for proc in psutil.process_iter(["name"]):
        try:
            files = proc.open_files()
        except (psutil.Error, OSError):  # gone, a zombie, or another user's process
            continue
        for f in files:
            p = wanted.get(f.path)
            if p is not None and f.mode in WRITE_MODES:
                found.setdefault(p, f"open for writing by pid {proc.pid} ({proc.info['name']})")
    return found


def still_growing(files: Sequence[FileLike], wait: float) -> dict[Path, str]:
    """path -> how it changed across one pause of `wait` seconds."""
    if not files:
        return {}
    time.sleep(wait)
    found = {}
    for f in files:
        try:
            st = f.path.stat()
        except OSError:
            continue  # removed meanwhile (rotation): the next run sees the directory as it is then
        if st.st_size != f.size or st.st_mtime != f.mtime:
            found[f.path] = f"grew from {f.size} to {st.st_size} bytes in {wait:g} s"
    return found


def find_in_progress(files: Sequence[FileLike], now: float, growth_wait: float | None = None
                     ) -> tuple[InProgress, ...]:
    """The files among `files` still being written, in the order given."""
    busy = open_for_writing(f.path for f in files)
    recent = [f for f in files if f.path not in busy and now - f.mtime < GROWTH_WINDOW_S]
    busy.update(still_growing(recent, GROWTH_WAIT_S if growth_wait is None else growth_wait))
    return tuple(InProgress(f.path, f.size, f.mtime, busy[f.path]) for f in files if f.path in busy)
