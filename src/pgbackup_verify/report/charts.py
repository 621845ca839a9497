"""Inline SVG charts of the key figures over the history window: no JS library, no network.

This module computes what to draw (scales, points, labels, the rows of the recent-runs table);
templates/trends.html.j2 and the macros of templates/charts.html.j2 draw it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from markupsafe import Markup

from pgbackup_verify.evidence import human_bytes
from pgbackup_verify.facts.history import DRILL_SECONDS, DUMP_AGE_HOURS, PAYLOAD_BYTES, TABLES_RESTORED, History
from pgbackup_verify.facts.trends import slope_per_day
from pgbackup_verify.report.render import render

W, H = 520, 180
LEFT, RIGHT, TOP, BOTTOM = 72, 14, 14, 30
FAILED_COLOR, LINE_COLOR = "#c62828", "#1565c0"


@dataclass(frozen=True)
class Series:
    title: str
    points: list[tuple[float, float, str]]  # (time, value, status) oldest first
    fmt: Callable[[float], str]
    limit: float | None = None  # drawn as a dashed line (the restore budget)
    limit_label: str = ""
    zero: bool = False  # start the axis at 0 (times: a 2 s wobble must not look like a crisis)


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    color: str
    tooltip: str


@dataclass(frozen=True)
class Chart:
    """One line chart in SVG user units: failed runs are red points, each point has a tooltip."""

    title: str
    ticks: list[Tick]  # horizontal grid lines with their value
    first: str  # date under the left end
    last: str  # date under the right end; empty for a single run
    limit: Tick | None  # the dashed budget line, when it is within twice the highest value
    line: list[tuple[float, float]]  # the polyline; empty for a single point
    points: list[Point]
    width: int = W
    height: int = H
    left: int = LEFT
    right: int = W - RIGHT
    top: int = TOP
    plot_width: int = W - LEFT - RIGHT
    plot_height: int = H - TOP - BOTTOM


@dataclass(frozen=True)
class Figure:
    chart: Chart
    caption: str


@dataclass(frozen=True)
class RunRow:
    """One run of a target in the recent-runs table; "-" for a figure the run did not measure."""

    when: str
    status: str
    checks: str
    payload: str
    dump_age: str
    drill: str
    tables: str
    failed: str


@dataclass(frozen=True)
class TargetTrends:
    name: str
    figures: list[Figure]
    runs_in_history: int
    recent: list[RunRow]  # newest first


def _date(t: float) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(t))


def chart(s: Series) -> Chart:
    """Scale a series into the plot area."""
    ts = [p[0] for p in s.points]
    vs = [p[1] for p in s.points]
    lo, hi = (0.0 if s.zero else min(vs)), max(vs)
    limit = s.limit if s.limit is not None and s.limit <= 2 * hi else None
    if limit is not None:
        lo, hi = min(lo, limit), max(hi, limit)
    pad = (hi - lo) * 0.1 or max(abs(hi) * 0.05, 1.0)
    lo, hi = (lo if s.zero else max(lo - pad, 0.0)), hi + pad
    t0, t1 = min(ts), max(ts)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (pw / 2 if t1 == t0 else (t - t0) / (t1 - t0) * pw)

    def y(v: float) -> float:
        return TOP + ph - (v - lo) / (hi - lo) * ph

    ticks = [Tick(y(v), s.fmt(v)) for v in (lo + (hi - lo) * frac for frac in (0.0, 0.5, 1.0))]
    points = [Point(x(t), y(v), FAILED_COLOR if status == "FAILED" else LINE_COLOR,
                    f"{_date(t)}: {s.fmt(v)} (run {status})") for t, v, status in s.points]
    return Chart(title=s.title, ticks=ticks, first=_date(t0), last=_date(t1) if t1 != t0 else "",
                 limit=Tick(y(limit), s.limit_label) if limit is not None else None,
                 line=[(p.x, p.y) for p in points] if len(points) > 1 else [], points=points)


def _budget_note(budget: float | None, highest: float) -> str:
    if budget is None:
        return ""
    return f" (budget {budget:g} s" + (", off the scale)" if budget > 2 * highest else ")")


def figures(history: History, name: str, budget: float | None, runs: int) -> list[Figure]:
    """Payload size and drill time of the last `runs` runs of a target, each with a caption."""
    out = []
    payload = history.series(name, PAYLOAD_BYTES)[-runs:]
    if payload:
        growth = slope_per_day([(t, v) for t, v, _ in payload])
        g = f", growth {human_bytes(growth)}/day" if growth is not None else ""
        out.append(Figure(chart(Series("payload size", payload, human_bytes)),
                          f"latest {human_bytes(payload[-1][1])} over {len(payload)} runs{g}"))
    drill = history.series(name, DRILL_SECONDS)[-runs:]
    if drill:
        label = f"budget {budget:g} s" if budget is not None else ""
        series = Series("restore drill time", drill, lambda v: f"{v:.1f} s", budget, label, zero=True)
        out.append(Figure(chart(series), f"latest {drill[-1][1]:.1f} s over {len(drill)} runs"
                          + _budget_note(budget, max(v for _, v, _ in drill))))
    return out


def recent_runs(history: History, name: str, last: int = 10) -> list[RunRow]:
    """The last runs of a target, newest first: when it turned red, and which checks did."""
    rows = []
    for r in history.for_target(name)[-last:][::-1]:
        f = r.facts
        rows.append(RunRow(
            when=_date(r.time), status=r.status, checks=", ".join(f"{v} {k}" for k, v in r.outcomes.items() if v),
            payload=human_bytes(f[PAYLOAD_BYTES]) if PAYLOAD_BYTES in f else "-",
            dump_age=f"{f[DUMP_AGE_HOURS]:.1f} h" if DUMP_AGE_HOURS in f else "-",
            drill=f"{f[DRILL_SECONDS]:.1f} s" if DRILL_SECONDS in f else "-",
            tables=f"{f[TABLES_RESTORED]:.0f}" if TABLES_RESTORED in f else "-",
            failed=", ".join(r.failed)))
    return rows


def trends(history: History, targets: list[str], budgets: dict[str, float], runs: int) -> list[TargetTrends]:
    return [TargetTrends(name=name, figures=figures(history, name, budgets.get(name), runs),
                         runs_in_history=len(history.for_target(name)), recent=recent_runs(history, name))
            for name in targets]


def trends_html(history: History, targets: list[str], budgets: dict[str, float], runs: int) -> Markup:
    """Payload size and drill time of the last `runs` runs per target (the report retention window)."""
    return render("trends.html.j2", targets=trends(history, targets, budgets, runs), error=history.error)
