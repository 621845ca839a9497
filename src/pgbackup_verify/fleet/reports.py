"""Many hosts' JSON reports, read as untrusted input into one row per host (a target of a report).

Nothing is re-judged here: a row's status is the one its report's fold wrote (`targets[].status`, the
concerns' statuses, `abort`); the page only adds how old the report is. A file that cannot be read is a
row of its own (UNREADABLE), never left out, and a report older than the run interval is STALE.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pgbackup_verify.facts import history
from pgbackup_verify.facts.drill.tiers import TIER_CODE
from pgbackup_verify.outcome import FAILED_STATUS, OK_STATUS, cause_rank

MAX_REPORT_BYTES = 64 * 1024 * 1024  # a JSON report of thousands of checks is a few MB; more is not ours
NOT_CHECKED, STALE, UNREADABLE = "NOT CHECKED", "STALE", "UNREADABLE"
# Worst first: what needs a person now, then what went quiet, then what is fine.
ORDER = {UNREADABLE: 0, NOT_CHECKED: 0, FAILED_STATUS: 0, STALE: 1, OK_STATUS: 2}


@dataclass(frozen=True)
class HostRow:
    host: str
    status: str  # OK, FAILED, NOT CHECKED, STALE, UNREADABLE
    why: str  # the report's abort reason or first failing check, "" when OK
    concerns: Mapping[str, str]  # concern -> status as the report wrote it
    report_age_hours: float | None
    dump_age_hours: float | None  # the newest good dump's age now (the report's age added)
    dump_good: bool  # the dumps concern was OK in that run
    drill: str  # "7.9 s, full, OK" or ""
    link: Path  # the host's HTML report (or the JSON when there is none)
    source: Path

    @property
    def rank(self) -> tuple[int, str]:
        return ORDER.get(self.status, 0), self.host


def find(paths: Iterable[Path]) -> list[Path]:
    """The JSON reports under each path: a file itself; a reports directory's latest.json; else every
    `*/latest.json` below it (one directory per host) and its own `*.json` files (copied in flat)."""
    out: list[Path] = []
    for p in paths:
        if p.is_file():
            out.append(p)
        elif (p / "latest.json").is_file():
            out.append(p / "latest.json")
        elif p.is_dir():
            found = sorted(p.glob("*/latest.json")) or sorted(p.glob("*/reports/latest.json"))
            out += found or sorted(f for f in p.glob("*.json") if f.is_file())
    return list(dict.fromkeys(x.resolve() for x in out))


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _list(v: object) -> list[dict[str, Any]]:
    """The dicts of a JSON list (anything else in it is dropped)."""
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def _dict(v: object) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _str(v: object, limit: int = 300) -> str:
    text = str(v) if isinstance(v, str | int | float) else ""
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def _started(doc: Mapping[str, object]) -> float | None:
    try:
        return datetime.strptime(str(doc.get("started")), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def host_of(path: Path) -> str:
    """The host a report without targets stands for: its directory (above `reports/`), or the file's name."""
    if path.name != "latest.json" and not path.name.startswith("pgbackup-verify-"):
        return path.stem  # hosts' reports copied in flat: db1.json
    where = path.parent.parent if path.parent.name == "reports" else path.parent
    return where.name or path.stem


def _html_of(path: Path) -> Path:
    html = path.with_suffix(".html")
    return html if html.is_file() else path


def _load(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        raw = f.read(MAX_REPORT_BYTES + 1)
    if len(raw) > MAX_REPORT_BYTES:
        raise ValueError(f"larger than {MAX_REPORT_BYTES // (1024 * 1024)} MiB")
    doc = json.loads(raw)
    if not isinstance(doc, dict) or "status" not in doc or not isinstance(doc.get("checks"), list):
        raise ValueError("not a pgbackup-verify JSON report")
    return doc


def _tier(code: float | None) -> str:
    return next((name for name, c in TIER_CODE.items() if c == code), "")


def rows_of(path: Path, now: float, stale_hours: float) -> list[HostRow]:
    """One row per target of the report at `path` (one for a run that checked no target)."""
    try:
        doc = _load(path)
    except (OSError, ValueError, RecursionError) as e:
        why = f"report '{path}' cannot be read ({getattr(e, 'strerror', None) or e}); fix or remove it"
        return [HostRow(host_of(path), UNREADABLE, why, {}, None, None, False, "", path, path)]
    started = _started(doc)
    age = (now - started) / 3600 if started is not None else None
    abort = _str(doc.get("abort"))
    concerns: dict[str, dict[str, str]] = {}
    for c in _list(doc.get("concerns")):
        concerns.setdefault(_str(c.get("target")), {})[_str(c.get("concern"))] = _str(c.get("status"))
    first_bad: dict[str, str] = {}
    for c in _list(doc.get("checks")):
        if c.get("outcome") in ("failed", "error", "not run"):
            first_bad.setdefault(_str(c.get("target")), f"{_str(c.get('label') or c.get('name'))}: "
                                                        f"{_str(c.get('message'))}")
    statuses = {_str(t.get("name")): _str(t.get("status")) for t in _list(doc.get("targets"))}
    facts = _dict(doc.get("facts"))
    names = list(statuses) or [t for t in concerns if t] or [host_of(path)]
    rows = []
    for name in names:
        status = statuses.get(name) or (FAILED_STATUS if abort or doc.get("status") != OK_STATUS else OK_STATUS)
        why = abort or (first_bad.get(name, "") if status != OK_STATUS else "")
        if not statuses and not concerns:
            status = NOT_CHECKED
        elif status == OK_STATUS and (age is None or age > stale_hours):
            status, why = STALE, f"last report {age:.0f} h old, over {stale_hours:g} h" if age else "no run time"
        f = _dict(facts.get(name))
        dump_age = _num(f.get(history.GOOD_DUMP_AGE_HOURS))
        drill_s = _num(f.get(history.DRILL_SECONDS))
        drill_status = concerns.get(name, {}).get("drill", "")
        drill = ", ".join(x for x in (f"{drill_s:g} s" if drill_s is not None else "",
                                      _tier(_num(f.get(history.DRILL_TIER))), drill_status) if x)
        rows.append(HostRow(
            host=name, status=status, why=why, concerns=concerns.get(name, {}), report_age_hours=age,
            dump_age_hours=dump_age + age if dump_age is not None and age is not None else None,
            dump_good=concerns.get(name, {}).get("dumps") == OK_STATUS, drill=drill, link=_html_of(path),
            source=path))
    return rows


def fleet(paths: Iterable[Path], stale_hours: float = 26.0, now: float | None = None) -> list[HostRow]:
    """Every host's row, worst first."""
    now = time.time() if now is None else now
    return sorted((r for p in find(paths) for r in rows_of(p, now, stale_hours)), key=lambda r: r.rank)


def concern_columns(rows: Iterable[HostRow]) -> list[str]:
    """The concerns any host reported, in the order of cause (grants, dumps, drill...)."""
    return sorted({c for r in rows for c in r.concerns if c}, key=lambda c: (cause_rank(c), c))


def relative_link(target: Path, page: Path) -> str:
    return Path(os.path.relpath(target, page.parent)).as_posix()
