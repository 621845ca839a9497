"""The run's key figures and a concern's evidence as a person reads them: named values in human
units (`payload: 206.7 KiB`, `drill tier: full`), each said once. The history keeps the raw numbers
(facts/history.py); this is only how the console, the HTML and the JSON show them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from pgbackup_verify.evidence import human_bytes
from pgbackup_verify.facts.drill.tiers import TIER_CODE
from pgbackup_verify.facts.history import (
    DRILL_FULL_PASSED,
    DRILL_SECONDS,
    DRILL_TIER,
    DUMP_AGE_HOURS,
    PAYLOAD_BYTES,
    TABLES_RESTORED,
)

TIER_NAME = {code: name for name, code in TIER_CODE.items()}

# Numeric key figure -> (its name, how to show it). A figure not listed shows under its own name.
FIGURES: dict[str, tuple[str, Callable[[float], str]]] = {
    PAYLOAD_BYTES: ("payload", human_bytes),
    DUMP_AGE_HOURS: ("dump age", lambda v: f"{v:.1f} h"),
    DRILL_SECONDS: ("drill time", lambda v: f"{v:.1f} s"),
    TABLES_RESTORED: ("tables restored", lambda v: f"{v:.0f}"),
    DRILL_TIER: ("drill tier", lambda v: TIER_NAME.get(int(v), f"code {v}")),
    DRILL_FULL_PASSED: ("full drill passed", lambda v: "yes" if v else "no"),
}
# Figures a text fact of the same run already says in words ("restore drill: 21 tables in 2 schemas, 3.1 s").
SAID_BY = {DRILL_SECONDS: "restore drill", TABLES_RESTORED: "restore drill", DUMP_AGE_HOURS: "latest dump"}

ROWS_PER_CONCERN = 8  # a healthy concern's evidence table stays short
VALUE_CHARS = 200


def readable_figures(facts: Mapping[str, object]) -> list[tuple[str, str]]:
    """(name, value) per key figure: internal codes named, numbers in human units, nothing said twice."""
    out = []
    for key, value in facts.items():
        if key in SAID_BY and SAID_BY[key] in facts:
            continue
        if key in FIGURES and isinstance(value, (int, float)) and not isinstance(value, bool):
            name, show = FIGURES[key]
            out.append((name, show(value)))
        else:
            out.append((key if " " in key else key.replace("_", " "), str(value)))  # `local pg_dump` stays
    return out


def figures_line(facts: Mapping[str, object]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in readable_figures(facts))


def concern_rows(evidence: Iterable[Iterable[tuple[str, str]]], per_check: int = 3) -> list[tuple[str, str]]:
    """A healthy concern's evidence as a small table: the first items of each check, each (name, value)
    once (the newest dump's path is in every dump check's evidence), long values cut."""
    rows: dict[tuple[str, str], None] = {}
    for items in evidence:
        for name, value in list(items)[:per_check]:
            shown = value if len(value) <= VALUE_CHARS else value[:VALUE_CHARS - 1] + "\u2026"
            rows.setdefault((name, shown), None)
    return list(rows)[:ROWS_PER_CONCERN]
