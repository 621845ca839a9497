"""A blocking read of untrusted input, bounded by a wall-clock deadline and stoppable by SIGTERM.

A C call that never returns to Python (SQLite running an endless recursive view, a socket that
trickles) cannot be interrupted by a Python signal handler: the handler runs only between bytecodes of
the main thread. So the read runs in a daemon thread, and the calling (main) thread waits for it in
short slices: a SIGTERM handler runs within ~0.1 s and its exception (KeyboardInterrupt) propagates
from here as usual. On the deadline, or on that exception, `stop` is called (e.g. sqlite3's
`Connection.interrupt`, which is safe from another thread) and the thread is abandoned; a daemon thread
never keeps the process alive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
SLICE = 0.1  # how long the waiting thread is deaf to signals, at most


class DeadlineExceeded(Exception):
    """The read did not end within `seconds`; str() says so (the caller names the source)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no end within {seconds:g} s")
        self.seconds = seconds


def within(seconds: float, read: Callable[[], T], stop: Callable[[], None] | None = None,
           name: str = "bounded-read") -> T:
    """`read()`'s result, or its exception, if it ends within `seconds`; else DeadlineExceeded."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = read()
        except BaseException as e:  # handed to the waiting thread below, which decides
            box["error"] = e

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    end = time.monotonic() + seconds
    try:
        while worker.is_alive() and (left := end - time.monotonic()) > 0:
            worker.join(min(SLICE, left))
    except BaseException:  # SIGTERM's KeyboardInterrupt, Ctrl-C: stop the read, then let it propagate
        if stop is not None:
            stop()
        raise
    if worker.is_alive():
        if stop is not None:
            stop()
        raise DeadlineExceeded(seconds)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
