"""The one rule for "which night does a dump belong to", shared by the dump and offsite checks.

A night is a 24-hour window of local wall-clock time from one boundary time of day to the next.
The boundary is [backups].night_boundary ("HH:MM"), or, by default ("auto"), the middle of the
longest stretch of the day in which none of the dumps present was written: for a job that runs
23:45-00:07 every night that is around noon, so the window never cuts through the job's run and
a dump finishing after midnight belongs to the same night as one finishing before it.

A night is named after the calendar day on which the middle of its window falls, i.e. the day the
job usually writes its dump: a 02:00 job's night is the calendar day of its dump, exactly as the
old calendar-day rule said; only jobs near midnight see a difference.

Wall-clock arithmetic (naive local datetimes) on purpose: a boundary is a time of day, and on a
daylight-saving change the night is 23 or 25 hours long rather than shifting by an hour.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

DAY_MINUTES = 24 * 60
AUTO = "auto"
BOUNDARY_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# With no dump to learn from, nights split at noon: nightly jobs run at night.
DEFAULT_BOUNDARY = dt.time(12, 0)


class HasMtime(Protocol):
    @property
    def mtime(self) -> float: ...


D = TypeVar("D", bound=HasMtime)


def parse_boundary(value: str) -> dt.time | None:
    """The configured boundary; None for "auto". ValueError names the expected form."""
    if value == AUTO:
        return None
    m = BOUNDARY_RE.match(value)
    if not m:
        raise ValueError(f"'{value}' is neither \"auto\" nor a time of day HH:MM (e.g. \"12:00\")")
    return dt.time(int(m.group(1)), int(m.group(2)))


def _minute_of_day(ts: float) -> int:
    t = dt.datetime.fromtimestamp(ts)
    return t.hour * 60 + t.minute


def derive_boundary(mtimes: Iterable[float]) -> dt.time | None:
    """The middle of the longest gap between the times of day the dumps were written; None if none.

    Robust where a mean is not: a manual dump in the afternoon moves the boundary within the quiet
    stretch but never into the job's own run around midnight.
    """
    minutes = sorted({_minute_of_day(ts) for ts in mtimes})
    if not minutes:
        return None
    best_gap, best_start = -1, 0
    for i, m in enumerate(minutes):
        nxt = minutes[(i + 1) % len(minutes)] + (DAY_MINUTES if i + 1 == len(minutes) else 0)
        if nxt - m > best_gap:
            best_gap, best_start = nxt - m, m
    middle = (best_start + best_gap // 2) % DAY_MINUTES
    return dt.time(middle // 60, middle % 60)


@dataclass(frozen=True)
class NightRule:
    boundary: dt.time  # local time of day at which one night ends and the next begins
    source: str  # how the boundary was chosen, for the evidence

    def _offset(self) -> dt.timedelta:
        return dt.timedelta(hours=self.boundary.hour, minutes=self.boundary.minute)

    def night_of(self, ts: float) -> dt.date:
        """The night a moment belongs to, named after the day the middle of its window falls on."""
        start_day = (dt.datetime.fromtimestamp(ts) - self._offset()).date()
        # A window starting at or after noon has its middle on the next calendar day.
        return start_day + dt.timedelta(days=1) if self.boundary >= dt.time(12, 0) else start_day

    def same_night(self, a: float, b: float) -> bool:
        return self.night_of(a) == self.night_of(b)

    def describe(self) -> str:
        b = self.boundary.strftime("%H:%M")
        return f"a night runs from {b} to {b} the next day, local time ({self.source})"


def night_rule(setting: str, mtimes: Iterable[float]) -> NightRule:
    """The rule for [backups].night_boundary `setting` ("auto" or "HH:MM") and the dumps' mtimes.

    The offsite checks call this with the same setting and the same files' mtimes as the dump
    checks (or reuse `Inventory.night_rule`), so both agree on what "the same night" is.
    """
    fixed = parse_boundary(setting)
    if fixed is not None:
        return NightRule(fixed, "[backups].night_boundary")
    stamps = list(mtimes)
    derived = derive_boundary(stamps)
    if derived is None:
        return NightRule(DEFAULT_BOUNDARY, "no dump to learn the job's time from: noon")
    return NightRule(derived, f"derived: the middle of the longest quiet stretch of the day in {len(stamps)} dumps")


def nearest_same_night(rule: NightRule, dumps: Sequence[D], when: float) -> D | None:
    """The dump of the same night as `when` closest in time to it, or None (for the offsite match)."""
    same = [d for d in dumps if rule.same_night(d.mtime, when)]
    return min(same, key=lambda d: abs(d.mtime - when)) if same else None


UPLOAD_WINDOW_S = 24 * 3600


def nearest_to_upload(dumps: Sequence[D], uploaded: float) -> D | None:
    """The dump closest to an upload's own time, within 24 h, or None.

    For archives that carry no member time (they re-dumped): the upload runs hours after the dump,
    maybe across the night boundary, so the night rule would pick the wrong night there."""
    near = [d for d in dumps if abs(d.mtime - uploaded) <= UPLOAD_WINDOW_S]
    return min(near, key=lambda d: abs(d.mtime - uploaded)) if near else None
