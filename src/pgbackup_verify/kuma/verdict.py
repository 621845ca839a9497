"""What to tell each Kuma push monitor after a run, and telling it (GET push API, bounded, one retry).

Only the literal `status=up` is UP to Kuma and a push counts only when Kuma answers `{"ok":true}`.
Tokens come from the environment and are never put in a message, a log line or a report.
"""

from __future__ import annotations

import os
import re
import time
import tomllib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import requests

from pgbackup_verify.config import KumaSection, Target
from pgbackup_verify.errors import KUMA_CREDENTIALS_MISSING, KUMA_PUSH_FAILED
from pgbackup_verify.outcome import (
    BAD,
    ERROR,
    FAILED,
    NOT_APPLICABLE,
    NOT_RUN,
    RANK,
    SKIPPED,
    XFAIL,
    CheckResult,
    RunFold,
)

MSG_LIMIT = 190  # Kuma shows msg in one line; keep it readable (issue: < ~200 chars)


@dataclass(frozen=True)
class PushMonitor:
    """One push destination: the checks it covers, for one target (None: every check)."""

    name: str
    token_env: str
    covers: tuple[str, ...]
    url: str
    timeout: float
    targets: tuple[str, ...] | None = None  # None: checks of every target count


@dataclass
class Verdict:
    monitor: PushMonitor
    status: str  # "up" or "down"
    msg: str
    ping_ms: int


@dataclass
class PushResult:
    verdict: Verdict
    ok: bool
    detail: str  # what happened, never containing the token
    exit_code: int = 0
    attempts: int = 0


def covered_by(m: PushMonitor, run: RunFold, claimed: Iterable[str] = ()) -> list[CheckResult]:
    """The checks this monitor answers for. A check no monitor covers counts for every monitor:
    nothing may fail unseen because the target file forgot to route it (never silent).

    `claimed`: every marker/module some monitor covers."""
    claimed = set(claimed)
    return [c for c in run.checks.values()
            if (c.groups & set(m.covers) or (claimed and not c.groups & claimed))
            and (m.targets is None or c.target in ("", *m.targets))]


def monitors_of(section: KumaSection, target: str | None) -> list[PushMonitor]:
    return [PushMonitor(p.monitor, p.token_env, p.covers, section.url.rstrip("/"), section.push_timeout,
                        (target,) if target else None) for p in section.push]


def monitors_for(targets: tuple[Target, ...] | list[Target]) -> list[PushMonitor]:
    """One push per Kuma monitor: target files sharing a monitor (same url and token env) are merged,
    else the last host's push would overwrite a failed host's DOWN."""
    multi = len(targets) > 1
    merged: dict[tuple[str, str], PushMonitor] = {}
    for t in targets:
        for m in monitors_of(t.kuma, t.name if multi else None) if t.kuma else []:
            key = (m.url, m.token_env)
            if key in merged:
                old = merged[key]
                covers = tuple(dict.fromkeys(old.covers + m.covers))
                both = None if old.targets is None or m.targets is None else old.targets + m.targets
                m = PushMonitor(old.name, old.token_env, covers, old.url, min(old.timeout, m.timeout), both)
            merged[key] = m
    return list(merged.values())


_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\s\"-]+?)\s*\]\]?\s*(#.*)?$")


def tolerant_monitors(path: Path) -> list[PushMonitor]:
    """Push monitors of a target file that failed validation: parse only its [kuma] tables.

    A broken [database] or a TOML syntax error elsewhere must not hide the monitors that
    have to hear about it. Returns [] when even the [kuma] part is unusable.
    """
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    keep, inside = [], False
    for line in lines:
        m = _HEADER.match(line)
        if m:
            inside = m.group(1).replace(" ", "").split(".")[0] == "kuma"
        if inside:
            keep.append(line)
    try:
        kuma = tomllib.loads("\n".join(keep)).get("kuma", {})
        url = str(kuma["url"]).rstrip("/")
        timeout = float(kuma.get("push_timeout", 5.0))
        return [PushMonitor(str(p["monitor"]), str(p["token_env"]), tuple(p.get("covers", ())), url, timeout)
                for p in kuma.get("push", [])]
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return []


def _short(prefix: str, names: list[str]) -> str:
    msg = prefix + ", ".join(names)
    if len(msg) <= MSG_LIMIT:
        return msg
    shown: list[str] = []
    for i, n in enumerate(names):
        more = f" (+{len(names) - i} more)"
        if len(prefix + ", ".join([*shown, n]) + more) > MSG_LIMIT:
            return (prefix + ", ".join(shown) + f" (+{len(names) - len(shown)} more)")[:MSG_LIMIT]
        shown.append(n)
    return msg[:MSG_LIMIT]


def short_name(nodeid: str, single_target: str | None = None) -> str:
    """The check's name; with one target its `[target]` id says nothing and costs msg space."""
    name = nodeid.rsplit("::", 1)[-1]
    return name.removesuffix(f"[{single_target}]") if single_target else name


def judge(m: PushMonitor, run: RunFold, ping_ms: int, claimed: Iterable[str] = ()) -> Verdict:
    """up only if the run was not aborted, none of the checks the monitor covers failed, errored or
    did not run, and at least one of them passed; anything else is down, with why."""
    abort = run.abort()
    if abort:
        return Verdict(m, "down", _short("", [abort])[:MSG_LIMIT], ping_ms)
    covered = covered_by(m, run, claimed)
    many = len({c.target for c in covered}) > 1

    def name(c: CheckResult) -> str:
        return short_name(c.nodeid, None if many else c.target or None)

    if not covered:
        return Verdict(m, "down", f"no check covering {', '.join(m.covers)} ran "
                                  f"({len(run.checks)} selected in total)"[:MSG_LIMIT], ping_ms)
    # A check that skips itself as not applicable (a TOC check on plain dumps) must not raise a false
    # DOWN every night: skips are named, and only a monitor whose checks ALL skipped goes down.
    skipped = [c for c in covered if c.outcome == SKIPPED]
    bad = [c for c in covered if c.outcome in BAD]
    if len(skipped) == len(covered):
        return Verdict(m, "down", _short(f"all {len(covered)} covered checks skipped: ",
                                         [name(c) for c in skipped]), ping_ms)
    if not bad:
        passed = len(covered) - len(skipped)
        kinds = Counter(c.kind if c.kind in (NOT_APPLICABLE, XFAIL) else "skipped" for c in skipped)
        note = "".join(f", {n} {'xfailed' if k == XFAIL else k}" for k, n in kinds.items())
        return Verdict(m, "up", f"OK: {passed}/{len(covered)} checks passed{note} "
                                f"({', '.join(m.covers)})"[:MSG_LIMIT], ping_ms)
    by_kind: dict[str, list[str]] = {}
    for c in sorted(bad, key=lambda c: RANK[c.outcome]):
        by_kind.setdefault(c.outcome, []).append(name(c))
    kinds_text = ", ".join(f"{len(v)} {k}{'s' if k == ERROR and len(v) > 1 else ''}" for k, v in by_kind.items())
    names = [n for k in (FAILED, ERROR, NOT_RUN) for n in by_kind.get(k, [])]
    return Verdict(m, "down", _short(f"{kinds_text} of {len(covered)}: ", names), ping_ms)


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
