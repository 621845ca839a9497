"""Who made a leftover (a cluster or spool dir, a demo dir, a scratch database) and whether it still runs.

A pid alone names a process only while that process lives: afterwards the kernel hands the
number to another one, and "does pid N exist?" then answers for a stranger and keeps a crashed
run's cluster forever. So a mark records the pid AND that process's start time (psutil's
create_time), and the owner counts as running only while a process with that pid exists and
started at that time. This module is the one place that decides it, for every sweep.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import psutil

# create_time is boot time + start ticks; boot time is read in whole seconds and follows clock
# steps, so one process's start time can read a second apart across calls.
START_TOLERANCE = 2.0


@dataclass(frozen=True)
class Mark:
    pid: int
    host: str | None  # None in the bare-pid files of older versions
    proc_start: float | None  # the owner's create_time; None in marks of older versions
    made: float | None  # when the mark was written (epoch seconds): the age of what it marks


def owner_mark() -> str:
    """This process's mark; the `started` field is now (the marked object's age)."""
    me = psutil.Process()
    return (f"pgbackup-verify pid={me.pid} proc_start={me.create_time():.2f} host={socket.gethostname()} "
            f"started={int(time.time())}")


def parse_mark(text: str | None) -> Mark | None:
    """A mark written by owner_mark(), an older one without proc_start, or a bare pid; else None."""
    text = (text or "").strip()
    if text.isdigit():
        return Mark(int(text), None, None, None)
    fields = dict(p.split("=", 1) for p in text.split() if "=" in p)
    try:
        pid = int(fields["pid"])
        proc_start = float(fields["proc_start"]) if "proc_start" in fields else None
        made = float(fields["started"]) if "started" in fields else None
    except (KeyError, ValueError):
        return None
    return Mark(pid, fields.get("host"), proc_start, made)


def on_this_host(mark: Mark) -> bool:
    """Only a mark made here names a process this host can look at (a bare pid is local by design)."""
    return mark.host is None or mark.host == socket.gethostname()


def alive(mark: Mark, made: float | None = None) -> bool:
    """True while the process that wrote `mark` runs: its pid exists and started when the mark says.

    A mark of an older version has no start time: its owner must then have started no later than
    the mark was made (`mark.made`, else `made`, e.g. the marked directory's mtime), since a process
    born afterwards cannot have written it. With neither, the pid is all there is to go on.
    """
    try:
        proc = psutil.Process(mark.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False  # exited; only its parent has not reaped it yet
        created = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it exists but its start time is hidden (hidepid): never sweep on a guess
    if mark.proc_start is not None:
        return abs(created - mark.proc_start) <= START_TOLERANCE
    bound = mark.made if mark.made is not None else made
    return bound is None or created <= bound + START_TOLERANCE

