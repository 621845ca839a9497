"""The fleet page: one self-contained HTML file (report/templates/fleet.html.j2, autoescaped, no network),
a row per host worst first, written atomically."""

from __future__ import annotations

import time
from pathlib import Path

from pgbackup_verify.fleet.reports import HostRow, concern_columns, relative_link
from pgbackup_verify.outcome import OK_STATUS
from pgbackup_verify.report.render import render_text
from pgbackup_verify.safefs import atomic_write


def _hours(h: float | None) -> str:
    if h is None:
        return ""
    return f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} d"


def render(rows: list[HostRow], page: Path) -> str:
    columns = concern_columns(rows)
    shown = [{
        "host": r.host, "status": r.status, "why": r.why, "ok": r.status == OK_STATUS,
        "concerns": [r.concerns.get(c, "") for c in columns],
        "dump": _hours(r.dump_age_hours) + ("" if r.dump_good or r.dump_age_hours is None else " (dumps failing)"),
        "drill": r.drill, "report_age": _hours(r.report_age_hours), "link": relative_link(r.link, page),
    } for r in rows]
    bad = sum(r.status != OK_STATUS for r in rows)
    return render_text("fleet.html.j2", rows=shown, columns=columns, total=len(rows), bad=bad,
                       when=time.strftime("%Y-%m-%d %H:%M %Z"))


def write(rows: list[HostRow], page: Path) -> None:
    atomic_write(page, render(rows, page), mode=0o644)
