"""Uptime Kuma: the monitors that tell the team about backups exist, are watched, and are fresh.

The seed's two Kuma failures: a push monitor DOWN "by absence" went unnoticed for ~41 h, and a
retired job's monitor raised false DOWNs daily until someone paused it. Freshness is judged from
heartbeat times, never from Kuma's own timer, which restarts with the server.

Monitors this suite pushes to ([[kuma.push]]) are judged only for what this suite can know: they
exist, are effectively active, and its previous push arrived on schedule. Their UP/DOWN is this
suite's own output: judging it would turn one red night into red forever. Monitors fed by others
([kuma].monitors) are also judged for their latest beat, last UP and staleness.
"""

from __future__ import annotations

import pytest

from pgbackup_verify.evidence import verdict
from pgbackup_verify.facts.kuma import KumaFacts, MonitorFacts, ago

pytestmark = pytest.mark.kuma


def _found(facts: KumaFacts) -> list[MonitorFacts]:
    return [m for m in facts.monitors if m.found]


def _watched(facts: KumaFacts) -> list[MonitorFacts]:
    return [m for m in _found(facts) if m.effectively_active]


def _others(facts: KumaFacts) -> list[MonitorFacts]:
    """Watched monitors fed by other jobs: their beats are an input; this suite's own are not."""
    others = [m for m in _watched(facts) if not m.fed]
    if not others:
        pytest.skip("not applicable: no watched monitor fed by another job ([kuma].monitors); the ones this "
                    "suite feeds are not judged by their own beats")
    return others


def test_every_named_monitor_exists_in_kuma(kuma_facts, evidence):
    problems = []
    for m in kuma_facts.monitors:
        if m.found:
            how = f"by {m.matched_by}" + (f" (named '{m.kuma_name}' in Kuma)" if m.kuma_name != m.wanted else "")
            evidence(m.wanted, f"found {how}")
        else:
            problems.append(f"Kuma monitor '{m.wanted}': FAILED (not found by name or push token in "
                            f"{kuma_facts.source}); fix: create the push monitor in Kuma or correct its name / "
                            "token env var in [kuma]")
    verdict(problems)


def test_every_monitor_is_effectively_active(kuma_facts, evidence):
    problems = []
    for m in _found(kuma_facts):
        evidence(m.wanted, "active" if m.effectively_active else f"paused ({m.paused_by})")
        if not m.effectively_active:
            where = "the monitor" if m.paused_by == "itself" else m.paused_by
            # Kuma refuses a push to a paused monitor (404). Under a paused group (only the group's own
            # `active` changes) it still accepts pushes and its own timer still runs, but the dashboard
            # shows the monitor paused with resume disabled: whoever looks sees nothing to watch.
            effect = ("pushes are refused with 404" if m.paused_by == "itself"
                      else "Kuma accepts its pushes, but its dashboard shows it paused")
            problems.append(f"Kuma monitor '{m.wanted}': FAILED (paused by {where}: {effect}); "
                            f"fix: resume {where} in Kuma, or drop it from [kuma] if retired")
    verdict(problems)


def test_every_monitor_has_an_active_notification(kuma_facts, evidence):
    """The seed's ~37 h DOWN that nobody noticed: a monitor without a notification alerts nobody."""
    problems = []
    for m in _watched(kuma_facts):
        evidence(m.wanted, f"notifies {', '.join(m.notifications)}" if m.notifications else "no active notification")
        if not m.notifications:
            problems.append(f"Kuma monitor '{m.wanted}': FAILED (no active notification attached vs at least one: "
                            "its DOWN reaches nobody); fix: attach a notification in Kuma (Telegram, e-mail, "
                            "webhook...) to this monitor and enable it")
    verdict(problems)


def test_previous_push_of_this_suite_arrived_on_schedule(kuma_facts, target, evidence):
    """The seed's 41 h of silence, for the monitors this suite feeds: a night without a push is
    found on the next run (and pushed DOWN once); whatever the pushes said is not judged."""
    grace = target.kuma.grace_seconds
    fed = [m for m in _watched(kuma_facts) if m.fed]
    if not fed:
        pytest.skip("not applicable: this target has no [[kuma.push]] monitor")
    problems = []
    for m in fed:
        limit = m.interval + grace
        p = m.last_push
        if p is None:
            seen = "" if m.full_history else " in the beats Kuma sent"
            evidence(m.wanted, f"no push yet{seen}: a new monitor, this run's push is its first")
            continue
        age = (kuma_facts.now - p.time).total_seconds()
        evidence(m.wanted, f"previous push {ago(p.time, kuma_facts.now)} ago ({p.state}; limit {limit} s = "
                           f"interval {m.interval} s + grace {grace} s)")
        if age > limit:
            problems.append(f"Kuma monitor '{m.wanted}': FAILED (previous push of this suite "
                            f"{ago(p.time, kuma_facts.now)} ago at {p.time:%Y-%m-%d %H:%M} UTC vs limit {limit} s = "
                            f"interval {m.interval} s + grace {grace} s: a scheduled run did not push); "
                            "fix: check the cron job of this suite and its log, or raise the monitor's interval")
    verdict(problems)


def test_latest_heartbeat_is_up(kuma_facts, evidence):
    problems = []
    for m in _others(kuma_facts):
        b = m.latest
        if b is None:
            evidence(m.wanted, "no heartbeat ever")
            problems.append(f"Kuma monitor '{m.wanted}': FAILED (no heartbeat at all vs latest UP); "
                            "fix: run the job that pushes it and check its token env var")
            continue
        evidence(m.wanted, f"{b.state} {ago(b.time, kuma_facts.now)} ago: {b.msg!r}")
        if b.status != 1:
            problems.append(f"Kuma monitor '{m.wanted}': FAILED (latest heartbeat {b.state} at "
                            f"{b.time:%Y-%m-%d %H:%M} UTC, {b.msg[:120]!r} vs UP); fix: repair what it reports")
    verdict(problems)


def test_last_up_is_younger_than_interval_plus_grace(kuma_facts, target, evidence):
    grace = target.kuma.grace_seconds
    problems = []
    for m in _others(kuma_facts):
        limit = m.interval + grace
        if m.last_up is None:
            seen = "" if m.full_history else f" in the beats Kuma sent (since {m.oldest_seen:%Y-%m-%d %H:%M} UTC)" \
                if m.oldest_seen else ""
            evidence(m.wanted, f"no UP{seen} (limit {limit} s)")
            problems.append(f"Kuma monitor '{m.wanted}': FAILED (no UP heartbeat{seen} vs one every "
                            f"{limit} s); fix: run the job that pushes it")
            continue
        age = (kuma_facts.now - m.last_up).total_seconds()
        evidence(m.wanted, f"last UP {ago(m.last_up, kuma_facts.now)} ago (limit {limit} s = interval "
                           f"{m.interval} s + grace {grace} s)")
        if age > limit:
            problems.append(f"Kuma monitor '{m.wanted}': FAILED (last UP {ago(m.last_up, kuma_facts.now)} ago "
                            f"vs limit {limit} s = interval {m.interval} s + grace {grace} s; Kuma may still "
                            "show it green after a restart); fix: run the job that pushes it and check its cron")
    verdict(problems)


def test_no_active_monitor_is_stale(kuma_facts, target, evidence):
    days = target.kuma.stale_days
    problems = []
    for m in _others(kuma_facts):
        if m.last_up is None and not m.full_history:
            evidence(m.wanted, "no UP in the beats Kuma sent; history beyond them unknown (socket read)")
            continue
        since = m.last_up or m.oldest_seen
        if since is None:
            continue  # never had a heartbeat: reported by test_latest_heartbeat_is_up
        idle = (kuma_facts.now - since).total_seconds() / 86400
        evidence(m.wanted, f"no UP for {idle:.1f} days (stale after {days:g})" if idle > days else "not stale")
        if idle > days:
            last = f"last UP {m.last_up:%Y-%m-%d}" if m.last_up else "never UP"
            problems.append(f"Kuma monitor '{m.wanted}': FAILED (stale: {last}, {idle:.1f} days vs {days:g} days); "
                            "fix: if its job is retired, pause the monitor in Kuma (it raises false DOWNs), "
                            "else repair the job")
    verdict(problems)
