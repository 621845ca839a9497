"""Inline SVG charts of the key figures over the history window: no JS library, no network."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass

from pgbackup_verify.evidence import human_bytes
from pgbackup_verify.facts.history import History
from pgbackup_verify.facts.trends import slope_per_day

W, H = 520, 180
LEFT, RIGHT, TOP, BOTTOM = 72, 14, 14, 30

STYLE = """
#pgbv-trends h3{font-size:16px;margin:16px 0 4px}
#pgbv-trends .pgbv-charts{display:flex;flex-wrap:wrap;gap:18px;margin:4px 0 10px}
#pgbv-trends figure{margin:0;border:1px solid #ddd;border-radius:3px;padding:6px;background:#fff}
#pgbv-trends figcaption{font-size:13px;color:#222;margin:0 0 4px}
#pgbv-trends svg text{font-family:Helvetica,Arial,sans-serif;font-size:11px;fill:#444}
#pgbv-trends table.pgbv-runs{border-collapse:collapse;font-size:12px;margin:4px 0 12px}
#pgbv-trends table.pgbv-runs th,#pgbv-trends table.pgbv-runs td{border:1px solid #ddd;padding:2px 8px;
  text-align:left;color:#222;vertical-align:top}
#pgbv-trends table.pgbv-runs td:first-child{white-space:nowrap}
#pgbv-trends table.pgbv-runs td.pgbv-FAILED{color:#c62828;font-weight:bold}
"""


@dataclass(frozen=True)
class Series:
    title: str
    points: list[tuple[float, float, str]]  # (time, value, status) oldest first
    fmt: Callable[[float], str]
    limit: float | None = None  # drawn as a dashed line (the restore budget)
    limit_label: str = ""
    zero: bool = False  # start the axis at 0 (times: a 2 s wobble must not look like a crisis)


def _date(t: float) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(t))


def svg(s: Series) -> str:
    """One line chart; failed runs are red points, each point has a tooltip."""
    ts = [p[0] for p in s.points]
    vs = [p[1] for p in s.points]
    lo, hi = (0.0 if s.zero else min(vs)), max(vs)
    show_limit = s.limit is not None and s.limit <= 2 * hi
    if show_limit:
        lo, hi = min(lo, s.limit), max(hi, s.limit)  # type: ignore[type-var]
    pad = (hi - lo) * 0.1 or max(abs(hi) * 0.05, 1.0)
    lo, hi = (lo if s.zero else max(lo - pad, 0.0)), hi + pad
    t0, t1 = min(ts), max(ts)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (pw / 2 if t1 == t0 else (t - t0) / (t1 - t0) * pw)

    def y(v: float) -> float:
        return TOP + ph - (v - lo) / (hi - lo) * ph

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}' viewBox='0 0 {W} {H}' "
             f"role='img' aria-label='{html.escape(s.title)}'>",
             f"<rect x='{LEFT}' y='{TOP}' width='{pw}' height='{ph}' fill='#fafafa' stroke='#ccc'/>"]
    for frac in (0.0, 0.5, 1.0):
        v = lo + (hi - lo) * frac
        parts.append(f"<line x1='{LEFT}' x2='{W - RIGHT}' y1='{y(v):.1f}' y2='{y(v):.1f}' stroke='#e5e5e5'/>"
                     f"<text x='{LEFT - 6}' y='{y(v) + 4:.1f}' text-anchor='end'>{html.escape(s.fmt(v))}</text>")
    parts.append(f"<text x='{LEFT}' y='{H - 10}'>{_date(t0)}</text>")
    if t1 != t0:
        parts.append(f"<text x='{W - RIGHT}' y='{H - 10}' text-anchor='end'>{_date(t1)}</text>")
    if show_limit:
        ly = y(s.limit)  # type: ignore[arg-type]
        parts.append(f"<line x1='{LEFT}' x2='{W - RIGHT}' y1='{ly:.1f}' y2='{ly:.1f}' stroke='#c62828' "
                     f"stroke-dasharray='6 4'/><text x='{W - RIGHT - 4}' y='{ly - 4:.1f}' text-anchor='end' "
                     f"style='fill:#c62828'>{html.escape(s.limit_label)}</text>")
    if len(s.points) > 1:
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v, _ in s.points)
        parts.append(f"<polyline points='{coords}' fill='none' stroke='#1565c0' stroke-width='2'/>")
    for t, v, status in s.points:
        color = "#c62828" if status == "FAILED" else "#1565c0"
        parts.append(f"<circle cx='{x(t):.1f}' cy='{y(v):.1f}' r='3.5' fill='{color}'>"
                     f"<title>{_date(t)}: {html.escape(s.fmt(v))} (run {html.escape(status)})</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


def _figure(s: Series, caption: str) -> str:
    return (f"<figure data-chart='{html.escape(s.title)}'><figcaption><b>{html.escape(s.title)}</b> &middot; "
            f"{html.escape(caption)}</figcaption>{svg(s)}</figure>")


def trends_html(history: History, targets: list[str], budgets: dict[str, float], runs: int) -> str:
    """Payload size and drill time of the last `runs` runs per target (the report retention window)."""
    rows = []
    for name in targets:
        figures = []
        payload = history.series(name, "payload_bytes")[-runs:]
        if payload:
            growth = slope_per_day([(t, v) for t, v, _ in payload])
            g = f", growth {human_bytes(growth)}/day" if growth is not None else ""
            figures.append(_figure(Series("payload size", payload, human_bytes),
                                   f"latest {human_bytes(payload[-1][1])} over {len(payload)} runs{g}"))
        drill = history.series(name, "drill_seconds")[-runs:]
        if drill:
            budget = budgets.get(name)
            label = f"budget {budget:g} s" if budget is not None else ""
            series = Series("restore drill time", drill, lambda v: f"{v:.1f} s", budget, label, zero=True)
            figures.append(_figure(series, f"latest {drill[-1][1]:.1f} s over {len(drill)} runs"
                                   + _budget_note(budget, max(v for _, v, _ in drill))))
        if figures:
            rows.append(f"<h3>Trends: {html.escape(name)}</h3><div class='pgbv-charts'>{''.join(figures)}</div>"
                        + recent_runs(history, name))
        else:
            n = len(history.for_target(name))
            rows.append(f"<h3>Trends: {html.escape(name)}</h3><p class='pgbv-unchecked'>no payload or drill "
                        f"figures recorded yet ({n} run(s) in history.jsonl); they appear once the "
                        "dump and drill checks have measured them</p>" + recent_runs(history, name))
    err = f"<p class='pgbv-note'>run history: {html.escape(history.error)}</p>" if history.error else ""
    return f"<div id='pgbv-trends'><style>{STYLE}</style>{err}{''.join(rows)}</div>"


def _budget_note(budget: float | None, highest: float) -> str:
    if budget is None:
        return ""
    return f" (budget {budget:g} s" + (", off the scale)" if budget > 2 * highest else ")")


def recent_runs(history: History, name: str, last: int = 10) -> str:
    """The last runs of a target, newest first: when it turned red, and which checks did."""
    recs = history.for_target(name)[-last:][::-1]
    if not recs:
        return ""
    rows = []
    for r in recs:
        f = r.facts
        payload = human_bytes(f["payload_bytes"]) if "payload_bytes" in f else "-"
        drill = f"{f['drill_seconds']:.1f} s" if "drill_seconds" in f else "-"
        age = f"{f['dump_age_hours']:.1f} h" if "dump_age_hours" in f else "-"
        tables = f"{f['tables_restored']:.0f}" if "tables_restored" in f else "-"
        counts = ", ".join(f"{v} {k}" for k, v in r.outcomes.items() if v)
        rows.append(f"<tr><td>{_date(r.time)}</td><td class='pgbv-{html.escape(r.status)}'>{html.escape(r.status)}"
                    f"</td><td>{html.escape(counts)}</td><td>{payload}</td><td>{age}</td><td>{drill}</td>"
                    f"<td>{tables}</td><td>{html.escape(', '.join(r.failed))}</td></tr>")
    return ("<table class='pgbv-runs'><tr><th>run</th><th>status</th><th>checks</th><th>payload</th>"
            "<th>dump age</th><th>drill</th><th>tables restored</th><th>failed checks</th></tr>"
            f"{''.join(rows)}</table>")
