"""A check's result in words, for a person reading at 7 a.m.: its readable name, its finding in a few
words (what Kuma shows), its warnings. Reads the outcome fold's CheckResult only; every output that
speaks of a check (console, Kuma, HTML) takes its words from here, never from a function name."""

from __future__ import annotations

import re

from pgbackup_verify.outcome import CheckResult

IN_SHORT = "in short"  # the evidence item a check records with evidence.Evidence.in_short
WARNING = "warning"  # evidence items named `warning...`: true, not failing, worth a line
LIKELY_CAUSE = "; likely cause: "  # a finding another concern's finding explains (evidence.Evidence.explained)


def name_of(r: CheckResult) -> str:
    """The check as a phrase (`dump role has usage on every schema`), never `test_...`."""
    return r.label or r.name.removeprefix("test_").replace("_", " ")


def in_short(r: CheckResult) -> str:
    """The finding in a few words: the check's own (`USAGE missing on sandbox_tac for directus`), else its
    first line without the fix, `name: FAILED (measured vs limit)` read as `name: measured vs limit`."""
    own = next((v for k, v in r.evidence if k == IN_SHORT), "")
    if own:
        return own
    text = r.message.removeprefix("not judged: ").split("; fix", 1)[0].strip()
    m = re.match(r"(?s)(.*?): FAILED \((.*)\)$", text)
    if m:
        return f"{m[1]}: {m[2]}"
    return text or name_of(r)


def warnings_of(r: CheckResult) -> list[str]:
    """The check's warnings (`warning: ...` evidence, a drill's restore `warnings`), one line each."""
    out = []
    for k, v in r.evidence:
        if not (k.startswith(WARNING) and v.strip()):
            continue
        what = k.split(":", 1)[1].strip() if ":" in k else ""
        lines = [ln for ln in v.splitlines() if ln.strip() and not ln.startswith("fix:")]
        more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
        out.append(f"{what}: {lines[0]}{more}" if what else f"{lines[0]}{more}")
    return out
