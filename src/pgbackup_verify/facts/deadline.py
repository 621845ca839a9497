"""Run a few blocking jobs at once and wait for them only until one wall-clock deadline.

The Kuma push and the Pushgateway push share this: a socket timeout bounds each read, not a request, so a
server that trickles bytes would hold a push for minutes. Each job runs in a daemon thread (one still stuck
must not keep the process alive); a job not done by the deadline is reported as None and its late answer
is ignored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

R = TypeVar("R")

JOIN_GRACE = 0.2  # how long after the deadline a job may still report (one that gave up at the deadline says why)


def run_all(jobs: Sequence[Callable[[], R]], deadline: float, name: str = "job") -> list[R | None]:
    """Each job's result, or None for a job not done by `deadline` (time.monotonic()) or one that raised."""
    results: list[R | None] = [None] * len(jobs)

    def run(i: int, job: Callable[[], R]) -> None:
        try:
            results[i] = job()
        except Exception:  # the caller names a job that gave no result; nothing of its text can leak
            results[i] = None

    threads = [threading.Thread(target=run, args=(i, job), name=f"{name}-{i}", daemon=True)
               for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline + JOIN_GRACE - time.monotonic()))
    return list(results)  # a copy: a late answer after this point changes nothing


def attempts(deadline: float, timeout: float, retries: int, pause: float) -> Iterator[tuple[int, float]]:
    """(attempt number, its timeout) for each attempt that still starts before `deadline`, none given longer
    than what is left; between attempts, `pause` (cut short by the deadline). The caller stops on success."""
    for attempt in range(1, retries + 2):
        left = deadline - time.monotonic()
        if left <= 0.05:
            return
        yield attempt, min(timeout, left)
        if attempt <= retries:
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
