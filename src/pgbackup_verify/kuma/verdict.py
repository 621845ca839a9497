"""What to tell each Kuma push monitor after a run: up only if every check it covers passed, read
from the run's one outcome fold; a short message in words that says what failed, first cause first:
`FAILED grants: USAGE missing on sandbox_tac for directus (+1 more)`, never a function name (the
words come from pgbackup_verify.report.wording). Only the literal `status=up` is UP to Kuma."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from pgbackup_verify.kuma.routing import PushMonitor, covered_by
from pgbackup_verify.outcome import (
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
from pgbackup_verify.report.wording import in_short, name_of, warnings_of

MSG_LIMIT = 190  # Kuma shows msg in one line; keep it readable (far under Node's ~16 KB header limit)
ELLIPSIS = "…"


@dataclass
class Verdict:
    monitor: PushMonitor
    status: str  # "up" or "down"
    msg: str
    ping_ms: int


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters at a word (mid-word only for one word longer than half the
    room), an ellipsis saying it was cut."""
    if len(text) <= limit:
        return text
    cut = text[:max(0, limit - len(ELLIPSIS))]
    at_word = cut[:cut.rfind(" ")] if " " in cut else ""
    return (at_word if len(at_word) >= len(cut) // 2 else cut).rstrip(" ,;:(") + ELLIPSIS


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


def short_name(c: CheckResult, many_targets: bool = False) -> str:
    """The check's readable name; with many targets, prefixed by its target."""
    return f"{c.target} {name_of(c)}" if many_targets and c.target else name_of(c)


def down_message(covered: list[CheckResult], bad: list[CheckResult], many: bool) -> str:
    """`FAILED grants: USAGE missing on sandbox_tac for directus (+1 more, 6 not judged)`: the first
    cause's finding in a few words, then how many more red lines and not-judged checks the monitor has."""
    ordered = sorted(bad, key=order_key)  # the first reason is the cause: grants before dumps before drill
    first = next((c for c in ordered if c.kind != NOT_JUDGED), ordered[0])
    status = NOT_JUDGED.upper() if first.kind == NOT_JUDGED else first.outcome.upper()
    where = " ".join(x for x in (first.target if many else "", first.concern) if x and x != "other")
    red = sum(c.kind != NOT_JUDGED for c in bad) - (first.kind != NOT_JUDGED)
    unjudged = sum(c.kind == NOT_JUDGED for c in bad) - (first.kind == NOT_JUDGED)
    tail = ", ".join(x for x in (f"+{red} more" if red else "", f"{unjudged} not judged" if unjudged else "") if x)
    suffix = (f" ({tail})" if tail else "") + drill_tier(covered)
    head = f"{status} {where}: " if where else f"{status}: "
    finding = in_short(first) if first.outcome != NOT_RUN else f"{name_of(first)} did not report"
    return clip(head + finding, MSG_LIMIT - len(suffix)) + suffix


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
        return short_name(c, many)

    if not covered:
        return Verdict(m, "down", clip(f"no check covering {', '.join(m.covers)} ran "
                                       f"({len(run.checks)} selected in total)", MSG_LIMIT), ping_ms)
    # A check that skips itself as not applicable (a TOC check on plain dumps) must not raise a false
    # DOWN every night: skips are named, and only a monitor whose checks ALL skipped goes down.
    skipped = [c for c in covered if c.outcome == SKIPPED]
    bad = [c for c in covered if is_bad(c)]  # a "not judged" skip too: its input is known bad
    if len(skipped) == len(covered) and not bad:
        return Verdict(m, "down", _short(f"all {len(covered)} covered checks skipped: ",
                                         [name(c) for c in skipped]), ping_ms)
    if not bad:
        passed = len(covered) - len(skipped)
        kinds = Counter(c.kind if c.kind in (NOT_APPLICABLE, XFAIL) else "skipped" for c in skipped)
        note = "".join(f", {n} {'xfailed' if k == XFAIL else k}" for k, n in kinds.items())
        warned = sum(len(warnings_of(c)) for c in covered)
        warning = f" ({warned} warning{'s' if warned > 1 else ''})" if warned else ""
        return Verdict(m, "up", clip(f"OK: {passed}/{len(covered)} checks passed{note}{warning} "
                                     f"({', '.join(m.covers)}){drill_tier(covered)}", MSG_LIMIT), ping_ms)
    return Verdict(m, "down", down_message(covered, bad, many), ping_ms)


