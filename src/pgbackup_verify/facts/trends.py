"""Judge this run's key figures against the configured budget and the target's own history.

The checks in checks/test_trends.py assert on these facts; the history store is history.py.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from pgbackup_verify.config import Target, TrendsSection
from pgbackup_verify.facts.history import DRILL_SECONDS, PAYLOAD_BYTES, History, RunFacts, RunRecord

DAY = 86400.0


def settings_for(target: Target) -> TrendsSection:
    return target.trends or TrendsSection()


@dataclass(frozen=True)
class DrillBudget:
    seconds: float | None  # this run's drill time; None when no drill ran
    budget: float
    earlier: list[float]  # drill times of earlier runs, oldest first

    @property
    def within(self) -> bool:
        return self.seconds is None or self.seconds <= self.budget

    @property
    def earlier_median(self) -> float | None:
        return statistics.median(self.earlier) if self.earlier else None


@dataclass(frozen=True)
class PayloadTrend:
    payload: float | None  # this run's payload bytes; None when not measured
    window: list[float]  # the earlier payloads the trend is taken from (newest `payload_window`)
    min_history: int
    factor: float
    growth_per_day: float | None  # least-squares slope over the window, bytes per day

    @property
    def median(self) -> float | None:
        return statistics.median(self.window) if len(self.window) >= self.min_history else None

    @property
    def bounds(self) -> tuple[float, float] | None:
        m = self.median
        return None if m is None else (m / self.factor, m * self.factor)

    @property
    def within(self) -> bool:
        b = self.bounds
        return self.payload is None or b is None or b[0] <= self.payload <= b[1]


def drill_budget(target: Target, facts: RunFacts, earlier: list[RunRecord]) -> DrillBudget:
    s = settings_for(target)
    now = facts.get(DRILL_SECONDS)
    return DrillBudget(seconds=float(now) if isinstance(now, int | float) else None,
                       budget=s.restore_budget_seconds,
                       earlier=[float(r.facts[DRILL_SECONDS]) for r in earlier if DRILL_SECONDS in r.facts])


def payload_trend(target: Target, facts: RunFacts, earlier: list[RunRecord]) -> PayloadTrend:
    s = settings_for(target)
    now = facts.get(PAYLOAD_BYTES)
    points = [(r.time, float(r.facts[PAYLOAD_BYTES])) for r in earlier if PAYLOAD_BYTES in r.facts]
    points = points[-s.payload_window:]
    return PayloadTrend(payload=float(now) if isinstance(now, int | float) else None,
                        window=[v for _, v in points], min_history=s.min_history, factor=s.payload_factor,
                        growth_per_day=slope_per_day(points))


def slope_per_day(points: list[tuple[float, float]]) -> float | None:
    """Least-squares growth in units per day (the seed's "~400-500 KB per day", computed)."""
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in points) / var * DAY


def earlier_runs(history: History, target: Target) -> list[RunRecord]:
    return history.for_target(target.name)
