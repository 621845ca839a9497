"""Telling Kuma: one GET to the push API per monitor, bounded, one retry.

A push counts only when Kuma answers `{"ok":true}`. The token comes from the environment and is
never put in a message, a log line or a report.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import requests

from pgbackup_verify.errors import KUMA_CREDENTIALS_MISSING, KUMA_PUSH_FAILED
from pgbackup_verify.kuma.verdict import Verdict


@dataclass
class PushResult:
    verdict: Verdict
    ok: bool
    detail: str  # what happened, never containing the token
    exit_code: int = 0
    attempts: int = 0


def _explain(e: requests.RequestException, timeout: float) -> str:
    if isinstance(e, requests.Timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(e, requests.ConnectionError):
        return "connection refused or host unreachable"
    return type(e).__name__


def send(v: Verdict, dry_run: bool = False, retries: int = 1) -> PushResult:
    """Push one verdict; the detail names the monitor and Kuma's answer, never the token."""
    m = v.monitor
    token = os.environ.get(m.token_env, "")
    if not token:
        return PushResult(v, False, f"env {m.token_env} is not set; export the monitor's push token",
                          KUMA_CREDENTIALS_MISSING)
    if dry_run:
        return PushResult(v, True, f"dry run: not sent (token from env {m.token_env})")
    params = {"status": v.status, "msg": v.msg, "ping": str(v.ping_ms)}
    detail = ""
    for attempt in range(1, retries + 2):
        try:
            r = requests.get(f"{m.url}/api/push/{token}", params=params, timeout=m.timeout)
            try:
                body = r.json()
            except ValueError:
                body = {}
            if r.status_code == 200 and isinstance(body, dict) and body.get("ok") is True:
                return PushResult(v, True, f"Kuma answered ok (attempt {attempt})", attempts=attempt)
            kuma_msg = body.get("msg", "") if isinstance(body, dict) else ""
            detail = f"Kuma answered HTTP {r.status_code} not ok: {kuma_msg or r.reason}"
            if r.status_code == 404:
                detail += f" (check env {m.token_env} holds this monitor's token and that it is not paused)"
                return PushResult(v, False, detail.replace(token, "***"), KUMA_PUSH_FAILED, attempt)
        except requests.RequestException as e:
            detail = f"{_explain(e, m.timeout)} at {m.url}"
        if attempt <= retries:
            time.sleep(1.0)
    return PushResult(v, False, f"{detail} after {retries + 1} attempts".replace(token, "***"),
                      KUMA_PUSH_FAILED, retries + 1)
