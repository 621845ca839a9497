"""Trends: the restore drill fits its time budget, and the dump payload follows its own recent
history (the seed computed "~400-500 KB per day" growth by hand; a sudden drop means lost data).

The figures come from this run's `run_facts` (filled by the dump and drill fixtures, which run
earlier: this module sorts last) and from `<reports dir>/history.jsonl` of earlier runs.
"""

from __future__ import annotations

from typing import NoReturn

import pytest

from pgbackup_verify.config import Target
from pgbackup_verify.evidence import Evidence, human_bytes, require
from pgbackup_verify.facts.history import DRILL_SECONDS, PAYLOAD_BYTES, History, RunFacts
from pgbackup_verify.facts.trends import drill_budget, earlier_runs, payload_trend


def _not_measured(fact: str, concern: str) -> NoReturn:
    pytest.skip(f"no {fact} measured in this run (the {concern} checks did not run or could not measure); "
                "nothing to compare")


@pytest.mark.drill
def test_restore_drill_fits_the_time_budget(target: Target, run_facts: RunFacts, run_history: History,
                                            evidence: Evidence) -> None:
    d = drill_budget(target, run_facts, earlier_runs(run_history, target))
    if d.seconds is None:
        _not_measured(DRILL_SECONDS, "restore drill")
    evidence("drill seconds", f"{d.seconds:.1f}")
    evidence("restore budget", f"{d.budget:g} s ([trends].restore_budget_seconds)")
    med = d.earlier_median
    evidence("earlier drills", f"{len(d.earlier)} runs, median {med:.1f} s" if med is not None
             else "none in the history yet")
    require(d.within, (
        f"restore time budget: FAILED (drill took {d.seconds:.1f} s vs budget {d.budget:g} s); fix: make the "
        "restore faster (custom-format dumps restored with pg_restore -j N, faster scratch disk) or, if this "
        "restore time is acceptable, raise [trends].restore_budget_seconds"))


@pytest.mark.dumps
def test_payload_follows_its_recent_trend(target: Target, run_facts: RunFacts, run_history: History,
                                          evidence: Evidence) -> None:
    p = payload_trend(target, run_facts, earlier_runs(run_history, target))
    if p.payload is None:
        _not_measured(PAYLOAD_BYTES, "dump")
    evidence("payload", f"{human_bytes(p.payload)} ({p.payload:.0f} bytes)")
    if run_history.error:
        evidence("history", f"{run_history.error}: judged as if there were none")
    if run_history.unreadable:
        evidence("history", f"{run_history.unreadable} unreadable line(s) in history.jsonl skipped")
    bounds = p.bounds
    if p.median is None or bounds is None:
        evidence("trend", f"not judged yet: {len(p.window)} earlier run(s) with a payload in the history, "
                          f"{p.min_history} needed; the trend starts with this run")
        return
    lo, hi = bounds
    evidence("trend", f"median {human_bytes(p.median)} of the last {len(p.window)} runs, allowed "
                      f"{human_bytes(lo)} .. {human_bytes(hi)} (factor {p.factor:g})")
    if p.growth_per_day is not None:
        evidence("growth", f"{human_bytes(p.growth_per_day)}/day over the window")
    require(p.within, (
        f"payload trend: FAILED ({human_bytes(p.payload)} vs median {human_bytes(p.median)} of the last "
        f"{len(p.window)} runs, allowed {human_bytes(lo)} .. {human_bytes(hi)}); fix: compare the newest dump's "
        "tables with the previous one (zcat NEW.sql.gz | grep -c '^COPY ' vs the same on the previous dump) "
        "and check the dump job's log; if the new size is expected, raise [trends].payload_factor for a run"))
