"""What to tell each Kuma push monitor after a run: up only if every check it covers passed, read
from the run's one outcome fold; a short message that names what failed. Only the literal
`status=up` is UP to Kuma."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from pgbackup_verify.kuma.routing import PushMonitor, covered_by
from pgbackup_verify.outcome import (
    ERROR,
    FAILED,
    NOT_APPLICABLE,
    NOT_JUDGED,
    NOT_RUN,
    SKIPPED,
    XFAIL,
    CheckResult,
    RunFold,
    is_bad,
    order_key,
)

MSG_LIMIT = 190  # Kuma shows msg in one line; keep it readable (far under Node's ~16 KB header limit)
ELLIPSIS = "…"


@dataclass
class Verdict:
    monitor: PushMonitor
    status: str  # "up" or "down"
    msg: str
    ping_ms: int


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, an ellipsis saying it was cut."""
    return text if len(text) <= limit else text[:max(0, limit - len(ELLIPSIS))].rstrip() + ELLIPSIS


def _short(prefix: str, names: list[str], limit: int = MSG_LIMIT) -> str:
    """`prefix` and as many names as fit, then `(+N more)`. Never empty: the first name always
    stays (clipped if it alone is too long), and so does the start of the prefix."""
    if not names:
        return clip(prefix, limit)
    msg = prefix + ", ".join(names)
    if len(msg) <= limit:
        return msg
    shown = [names[0]]
    for n in names[1:]:
        more = f" (+{len(names) - len(shown) - 1} more)" if len(shown) + 1 < len(names) else ""
        if len(prefix + ", ".join([*shown, n]) + more) > limit:
            break
        shown.append(n)
    more = f" (+{len(names) - len(shown)} more)" if len(shown) < len(names) else ""
    prefix = clip(prefix, max(limit // 2, limit - len(shown[0]) - len(more)))
    room = limit - len(prefix) - len(more)
    body = ", ".join(shown)
    return prefix + clip(body, room) + more


def short_name(nodeid: str, single_target: str | None = None) -> str:
    """The check's name; with one target its `[target]` id says nothing and costs msg space."""
    name = nodeid.rsplit("::", 1)[-1]
    return name.removesuffix(f"[{single_target}]") if single_target else name


def drill_tier(covered: Iterable[CheckResult]) -> str:
    """`, drill tier schema (full on sunday)` when a covered drill ran a tier other than the everyday full one."""
    tier = next((v for c in covered for k, v in c.evidence if k == "tier"), "full")
    return "" if tier == "full" else f", drill tier {tier}"


def judge(m: PushMonitor, run: RunFold, ping_ms: int, claimed: Iterable[str] = ()) -> Verdict:
    """up only if the run was not aborted, none of the checks the monitor covers failed, errored or
    did not run, and at least one of them passed; anything else is down, with why."""
    abort = run.abort()
    if abort:
        return Verdict(m, "down", clip(abort, MSG_LIMIT), ping_ms)
    covered = covered_by(m, run, claimed)
    many = len({c.target for c in covered}) > 1

    def name(c: CheckResult) -> str:
        return short_name(c.nodeid, None if many else c.target or None)

    if not covered:
        return Verdict(m, "down", clip(f"no check covering {', '.join(m.covers)} ran "
                                       f"({len(run.checks)} selected in total)", MSG_LIMIT), ping_ms)
    # A check that skips itself as not applicable (a TOC check on plain dumps) must not raise a false
    # DOWN every night: skips are named, and only a monitor whose checks ALL skipped goes down.
    skipped = [c for c in covered if c.outcome == SKIPPED]
    bad = [c for c in covered if is_bad(c)]  # a "not judged" skip too: its input is known bad
    if len(skipped) == len(covered):
        return Verdict(m, "down", _short(f"all {len(covered)} covered checks skipped: ",
                                         [name(c) for c in skipped]), ping_ms)
    if not bad:
        passed = len(covered) - len(skipped)
        kinds = Counter(c.kind if c.kind in (NOT_APPLICABLE, XFAIL) else "skipped" for c in skipped)
        note = "".join(f", {n} {'xfailed' if k == XFAIL else k}" for k, n in kinds.items())
        return Verdict(m, "up", clip(f"OK: {passed}/{len(covered)} checks passed{note} "
                                     f"({', '.join(m.covers)}){drill_tier(covered)}", MSG_LIMIT), ping_ms)
    by_kind: dict[str, list[str]] = {}
    for c in sorted(bad, key=order_key):  # the first reason is the cause: grants before dumps before drill
        by_kind.setdefault(NOT_JUDGED if c.kind == NOT_JUDGED else c.outcome, []).append(name(c))
    kinds_text = ", ".join(f"{len(v)} {k}{'s' if k == ERROR and len(v) > 1 else ''}" for k, v in by_kind.items())
    names = [n for k in (FAILED, ERROR, NOT_RUN, NOT_JUDGED) for n in by_kind.get(k, [])]
    return Verdict(m, "down", _short(f"{kinds_text} of {len(covered)}{drill_tier(covered)}: ", names), ping_ms)


