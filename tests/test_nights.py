"""Nights that cross midnight: one rule (facts/dumps/nights.py) for the dump and the offsite checks.

A job scheduled at 23:45 finishes some nights at 23:58 and some at 00:07. Under the old rule (a
night = the calendar day of the mtime) such a week has two dumps on one calendar day and none on
another: a "missing night" on a healthy week. Real `pg_dump | gzip` files, their mtimes set to
such a week, checked end to end by the shipped checks.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from pathlib import Path

import pytest
from checkrun import ChecksRun, run_checks
from pgbackup_verify_demo import demo

from pgbackup_verify.config import ConfigError, load_target
from pgbackup_verify.facts.dumps import inventory as dumps
from pgbackup_verify.facts.dumps.nights import derive_boundary, nearest_same_night, night_rule

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_dumps.py"
NIGHTS_CHECK = "test_no_night_missing_in_retention_window"
# Finish times around midnight, minutes from local midnight: before, after, before...
OFFSETS = (-2, 7, -12, 5, -1, 3, -7)


def midnight_week(now: float) -> list[float]:
    """Seven nightly finish times of a 23:45 job, newest first; the newest night ended >= 2 h ago."""
    last = dt.datetime.fromtimestamp(now - 2 * 3600).replace(hour=0, minute=0, second=0, microsecond=0)
    return [(last - dt.timedelta(days=k) + dt.timedelta(minutes=OFFSETS[k])).timestamp() for k in range(7)]


def set_mtimes(d: Path, stamps: list[float]) -> list[Path]:
    files = sorted(d.glob("directus_*.sql.gz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for p, ts in zip(files, stamps, strict=True):
        os.utime(p, (ts, ts))
    return files


def calendar_gap(stamps: list[float]) -> bool:
    """The old rule's false alarm: some calendar day between the first and last dump holds none."""
    days = {dt.date.fromtimestamp(ts) for ts in stamps}
    span = (max(days) - min(days)).days + 1
    return len(days) < span


@pytest.fixture(scope="module")
def nights_run(seed_cluster, healthy_backups: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[ChecksRun, dict]:
    root = tmp_path_factory.mktemp("nights")
    dsn = seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
    stamps = midnight_week(time.time())
    facts: dict = {"stamps": stamps}
    targets = []
    for case, extra in (("auto", ""), ("noon", 'night_boundary = "12:00"'), ("gone", ""),
                        ("calendar", 'night_boundary = "00:00"')):
        d = root / case
        shutil.copytree(healthy_backups, d)
        files = set_mtimes(d, stamps)
        if case == "gone":
            victim = files[3]
            facts["gone"] = dumps.take_inventory(
                load_target(demo.write_target_file(root / "probe.toml", dsn, d)).backups
            ).night_rule.night_of(victim.stat().st_mtime)
            victim.unlink()
        t = demo.write_target_file(root / f"{case}.toml", dsn, d, name=case)
        if extra:
            t.write_text(t.read_text().replace("expected_schemas = ", f"{extra}\nexpected_schemas = ", 1))
        targets.append(t)
    return run_checks(root / "run", targets, [CHECKS], "-k", NIGHTS_CHECK), facts


def test_a_job_crossing_midnight_leaves_no_missing_night(nights_run: tuple[ChecksRun, dict]) -> None:
    run, facts = nights_run
    # The week really is one the calendar-day rule called broken...
    assert calendar_gap(facts["stamps"]), [time.ctime(ts) for ts in facts["stamps"]]
    run["calendar"].assert_outcomes(failed=1)  # ...as a boundary at midnight (the old rule) still shows
    run["calendar"].fnmatch_line("retention coverage: FAILED (* nights without a good dump: *no dump*")
    # Derived from the dumps, or set by hand: every night has its dump.
    for case in ("auto", "noon"):
        run[case].assert_outcomes(passed=1)
    run["auto"].fnmatch_line("night rule: a night runs from 1?:?? to 1?:?? the next day, local time (derived*")
    run["noon"].fnmatch_line("night rule: a night runs from 12:00 to 12:00 the next day*([[]backups].night_boundary)")


def test_a_missing_night_around_midnight_is_still_caught(nights_run: tuple[ChecksRun, dict]) -> None:
    run, facts = nights_run
    run["gone"].assert_outcomes(failed=1)
    run["gone"].fnmatch_line(f"retention coverage: FAILED (1 of 7 nights without a good dump: {facts['gone']} "
                             "(no dump); window 7 days); fix: read the backup job log of those nights*")


def test_the_boundary_stays_out_of_the_jobs_run() -> None:
    at = [dt.datetime(2024, 5, d, 23, 50).timestamp() for d in range(1, 8)]
    at += [dt.datetime(2024, 5, d, 0, 7).timestamp() for d in range(2, 9)]
    manual = dt.datetime(2024, 5, 4, 15, 30).timestamp()  # someone ran the job by hand one afternoon
    boundary = derive_boundary([*at, manual])
    assert boundary is not None and not (dt.time(23, 0) <= boundary or boundary <= dt.time(1, 0)), boundary
    rule = night_rule("auto", [*at, manual])
    assert rule.night_of(dt.datetime(2024, 5, 2, 23, 50).timestamp()) == rule.night_of(
        dt.datetime(2024, 5, 3, 0, 7).timestamp()) == dt.date(2024, 5, 2)
    # A 02:00 job keeps the calendar day of its dump as the night's name, as before.
    two = night_rule("auto", [dt.datetime(2024, 5, d, 2, 5).timestamp() for d in range(1, 8)])
    assert two.night_of(dt.datetime(2024, 5, 3, 2, 5).timestamp()) == dt.date(2024, 5, 3)
    assert night_rule("auto", []).boundary == dt.time(12, 0)


def test_the_offsite_match_uses_the_same_rule(tmp_path: Path) -> None:
    """An archive member stamped 00:03 belongs to the local dump of 23:58 the evening before, not to
    the one 24 h later; the offsite checks call `nearest_same_night` with the inventory's rule."""
    stamps = [dt.datetime(2024, 5, d, 23, 58).timestamp() for d in range(1, 8)]
    files = []
    for i, ts in enumerate(stamps):
        p = tmp_path / f"directus_{i}.sql.gz"
        p.write_bytes(b"x" * 2048)
        os.utime(p, (ts, ts))
        files.append(p)
    t = demo.write_target_file(tmp_path / "t.toml", "host=127.0.0.1 dbname=x user=x", tmp_path)
    inv = dumps.take_inventory(load_target(t).backups, now=stamps[-1] + 86400, growth_wait=0)
    member = dt.datetime(2024, 5, 4, 0, 3).timestamp()
    match = nearest_same_night(inv.night_rule, inv.dumps, member)
    assert match is not None and match.path == files[2]
    assert nearest_same_night(inv.night_rule, inv.dumps, dt.datetime(2024, 5, 9, 0, 3).timestamp()) is None


@pytest.mark.parametrize("value", ["25:00", "noon", "7:30", ""])
def test_a_bad_night_boundary_is_one_line(tmp_path: Path, value: str) -> None:
    t = demo.write_target_file(tmp_path / "t.toml", "host=127.0.0.1 dbname=x user=x", tmp_path)
    t.write_text(t.read_text().replace("expected_schemas = ", f'night_boundary = "{value}"\nexpected_schemas = ', 1))
    with pytest.raises(ConfigError, match=r"t\.toml': \[backups\]\.night_boundary: '.*' is neither \"auto\" nor a time "
                                          r"of day HH:MM"):
        load_target(t)
