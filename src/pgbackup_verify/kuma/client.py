"""Telling Kuma: one GET to the push API per monitor, all monitors at once, under one deadline.

A push counts only when Kuma answers `{"ok":true}`. The token comes from the environment, is held
as a `Secret` and is never put in a message, a log line, a report or a traceback local.

`requests`' timeout bounds each socket read, not the request: a server that trickles one header
line every 0.25 s would hold a push for minutes. So every push runs in a daemon thread and the
caller waits for the threads only until one wall-clock deadline for the whole push (all monitors,
the retry included; pgbackup_verify.facts.deadline); a push still waiting then is abandoned and reported as failed.

Kuma's answer is untrusted too: at most MAX_ANSWER bytes of it are read, a redirect is not followed
(the token is in the URL), and nothing of the environment steers the request (`trust_env = False`:
no proxy variables, no ~/.netrc credentials sent to whoever answers).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import requests
import urllib3

from pgbackup_verify.errors import KUMA_CREDENTIALS_MISSING, KUMA_PUSH_FAILED
from pgbackup_verify.facts.deadline import attempts, run_all
from pgbackup_verify.kuma.routing import PushMonitor
from pgbackup_verify.kuma.secret import Secret
from pgbackup_verify.kuma.verdict import Verdict

MAX_ANSWER = 64 * 1024  # Kuma answers {"ok":true} or one short msg; more is not Kuma
RETRIES = 1
RETRY_PAUSE = 1.0


@dataclass
class PushResult:
    verdict: Verdict
    ok: bool
    detail: str  # what happened, never containing the token
    exit_code: int = 0
    attempts: int = 0


def deadline_for(monitors: Sequence[PushMonitor], retries: int = RETRIES) -> float:
    """Seconds the whole push may take: every attempt's timeout plus the pauses between them
    (the monitors are pushed in parallel, so the slowest one's budget)."""
    return max((m.timeout * (retries + 1) + RETRY_PAUSE * retries for m in monitors), default=0.0)


def _explain(e: requests.RequestException, timeout: float) -> str:
    if isinstance(e, requests.Timeout):
        return f"no answer within {round(timeout, 1):g} s"
    if isinstance(e, requests.ConnectionError):
        return "connection refused or host unreachable"
    return type(e).__name__


def _get(url: str, params: dict[str, str], timeout: float) -> tuple[int, str, object]:
    """(status, reason, JSON body or {}) of one GET, reading at most MAX_ANSWER bytes of the answer."""
    with requests.Session() as session:
        session.trust_env = False
        with session.get(url, params=params, timeout=timeout, allow_redirects=False, stream=True) as r:
            try:
                raw = r.raw.read(MAX_ANSWER + 1, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError:  # read through urllib3: map to what requests raises
                raise requests.Timeout() from None
            except urllib3.exceptions.HTTPError as e:
                raise requests.ConnectionError(type(e).__name__) from None
            if len(raw) > MAX_ANSWER:
                return r.status_code, f"an answer larger than {MAX_ANSWER // 1024} KiB, not Kuma's", {}
            if r.is_redirect:
                return r.status_code, "a redirect, not followed", {}
            try:
                body = json.loads(raw)
            except ValueError:
                body = {}
            return r.status_code, str(r.reason)[:100], body


def send(v: Verdict, dry_run: bool = False, retries: int = RETRIES, deadline: float | None = None) -> PushResult:
    """Push one verdict; the detail names the monitor and Kuma's answer, never the token.

    `deadline` (time.monotonic()): no attempt starts after it and none is given longer than what is left."""
    m = v.monitor
    token = Secret.from_env(m.token_env)
    if token is None:
        return PushResult(v, False, f"env {m.token_env} is not set; export the monitor's push token",
                          KUMA_CREDENTIALS_MISSING)
    if dry_run:
        return PushResult(v, True, f"dry run: not sent (token from env {m.token_env})")
    deadline = deadline if deadline is not None else time.monotonic() + deadline_for([m], retries)
    params = {"status": v.status, "msg": v.msg, "ping": str(max(1, v.ping_ms))}
    detail = "not sent: no time left before the push deadline"
    attempt = 0
    for attempt, timeout in attempts(deadline, m.timeout, retries, RETRY_PAUSE):
        try:
            status, reason, body = _get(f"{m.url}/api/push/{token.reveal()}", params, timeout)
            if status == 200 and isinstance(body, dict) and body.get("ok") is True:
                return PushResult(v, True, f"Kuma answered ok (attempt {attempt})", attempts=attempt)
            kuma_msg = str(body.get("msg", ""))[:300] if isinstance(body, dict) else ""
            detail = token.redact(f"Kuma answered HTTP {status} not ok: {kuma_msg or reason}")
            if status == 404:
                detail += f" (check env {m.token_env} holds this monitor's token and that it is not paused)"
                return PushResult(v, False, detail, KUMA_PUSH_FAILED, attempt)
        except requests.RequestException as e:
            detail = f"{_explain(e, timeout)} at {m.url}"
    return PushResult(v, False, f"{detail} after {attempt} attempt{'s' if attempt != 1 else ''}",
                      KUMA_PUSH_FAILED, attempt)


def push_all(verdicts: Sequence[Verdict], dry_run: bool = False, seconds: float | None = None) -> list[PushResult]:
    """Every verdict pushed at once; back within `seconds` (default: `deadline_for`) whatever Kuma does."""
    if dry_run or not verdicts:
        return [send(v, dry_run=dry_run) for v in verdicts]
    budget = seconds if seconds is not None else deadline_for([v.monitor for v in verdicts])
    deadline = time.monotonic() + budget

    def job(v: Verdict) -> Callable[[], PushResult]:
        return lambda: send(v, deadline=deadline)

    done = run_all([job(v) for v in verdicts], deadline, "kuma-push")
    # None: still waiting at the deadline, or the push crashed (a bug must not hide the other pushes).
    return [r if r is not None else
            PushResult(v, False, f"abandoned: no complete answer within the push deadline of {budget:g} s "
                                 f"at {v.monitor.url}", KUMA_PUSH_FAILED)
            for r, v in zip(done, verdicts, strict=True)]
