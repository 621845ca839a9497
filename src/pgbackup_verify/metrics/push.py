"""The Pushgateway: each target's series pushed to the gateway its [prometheus] section names, as the group
{job, target} (replaced whole by every run: PUT), all targets at once under one deadline (deadline.py), one
retry, like the Kuma push. A push counts only when the gateway accepts it (2xx).

The text is prometheus-client's (`push_to_gateway`); only the error is ours: the gateway's URL and HTTP
status, never a body or a header.
"""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, push_to_gateway

from pgbackup_verify.facts.deadline import attempts, run_all

RETRIES = 1
RETRY_PAUSE = 1.0


@dataclass(frozen=True)
class Group:
    gateway: str
    job: str
    target: str
    timeout: float
    registry: CollectorRegistry


@dataclass(frozen=True)
class Pushed:
    group: Group
    ok: bool
    detail: str


def deadline_for(groups: Sequence[Group]) -> float:
    """Seconds the whole push may take: the slowest group's attempts plus the pause between them."""
    return max((g.timeout * (RETRIES + 1) + RETRY_PAUSE * RETRIES for g in groups), default=0.0)


def _explain(e: Exception, timeout: float) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"the Pushgateway answered HTTP {e.code}"
    if isinstance(e, TimeoutError) or "timed out" in str(getattr(e, "reason", "")):
        return f"no answer within {round(timeout, 1):g} s"
    if isinstance(e, urllib.error.URLError | ConnectionError):
        return "connection refused or host unreachable"
    return type(e).__name__


def send(g: Group, deadline: float) -> Pushed:
    """Push one group; no attempt starts after `deadline` and none is given longer than what is left."""
    detail, attempt = "not sent: no time left before the push deadline", 0
    for attempt, timeout in attempts(deadline, g.timeout, RETRIES, RETRY_PAUSE):
        try:
            push_to_gateway(g.gateway, job=g.job, registry=g.registry, grouping_key={"target": g.target},
                            timeout=timeout)
            return Pushed(g, True, f"pushed to {g.gateway} (attempt {attempt})")
        except (OSError, ValueError) as e:  # urllib's errors are OSErrors; a malformed answer a ValueError
            detail = f"{_explain(e, timeout)} at {g.gateway}"
    return Pushed(g, False, f"{detail} after {attempt} attempt{'s' if attempt != 1 else ''}")


def push_all(groups: Sequence[Group], seconds: float | None = None) -> list[Pushed]:
    """Every group pushed at once; back within `seconds` (default: deadline_for) whatever the gateway does."""
    budget = deadline_for(groups) if seconds is None else seconds
    deadline = time.monotonic() + budget

    def job(g: Group) -> Callable[[], Pushed]:
        return lambda: send(g, deadline)

    done = run_all([job(g) for g in groups], deadline, "pushgateway")
    return [r if r is not None else
            Pushed(g, False, f"abandoned: no complete answer within the push deadline of {budget:g} s at {g.gateway}")
            for r, g in zip(done, groups, strict=True)]
