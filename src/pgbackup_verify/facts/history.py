"""The run history: one JSON line per target per run in `<reports dir>/history.jsonl`.

Contract with the fixtures: a fixture that measures a key figure puts it as a NUMBER into
`run_facts` (the per-target dict), under one of these names; every numeric fact present at
the end of the run is recorded, so a new figure needs no change here.

- `payload_bytes`    decompressed size of the newest dump (dumps)
- `dump_age_hours`   age of the newest dump (dumps)
- `good_dump_age_hours` age of the newest good dump (complete, payload over the minimum) (dumps)
- `drill_seconds`    wall time of the restore drill (drill)
- `tables_restored`  tables the restore drill produced (drill)
- `drill_tier`       the drill's tier: 0 schema, 1 sample, 2 full (drill; facts/drill/tiers.py)
- `drill_rows_restored` rows the drill loaded, summed over the tables it counted (drill)
- `grant_findings`   objects the dump role lacks a privilege on that pg_dump needs, role problems included (grants)
- `drill_full_passed` 1 when a full drill ran and restored without an error (drill): the age of the last
                     passing full drill is read from these

Text facts (server version, "restore drill: 21 tables ...") stay in the report header only.
The file is append-only between trims; it keeps the newest `MAX_RUNS_PER_TARGET` lines per target.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

from pgbackup_verify.safefs import atomic_write, open_append

HISTORY_FILE = "history.jsonl"
MAX_RUNS_PER_TARGET = 400  # over a year of nightly runs, ~150 KB per target
# The key figures, named once: fixtures store them, trends judge them, charts draw them.
PAYLOAD_BYTES, DUMP_AGE_HOURS, DRILL_SECONDS, TABLES_RESTORED = (
    "payload_bytes", "dump_age_hours", "drill_seconds", "tables_restored")
DRILL_TIER, DRILL_FULL_PASSED = "drill_tier", "drill_full_passed"
DRILL_ROWS, GRANT_FINDINGS = "drill_rows_restored", "grant_findings"
GOOD_DUMP_AGE_HOURS = "good_dump_age_hours"

# One target's `run_facts`: fact name -> value; text for the report header, numbers also for the history.
RunFacts = dict[str, object]


@dataclass(frozen=True)
class RunRecord:
    """One target's key figures in one run."""

    time: float  # epoch seconds of the run's start
    target: str
    status: str  # OK or FAILED (this target's checks only)
    outcomes: dict[str, int]  # passed/failed/error/skipped counts
    failed: list[str]  # labels of the checks that failed or errored (skips are only counted)
    facts: dict[str, float] = field(default_factory=dict)

    def to_line(self) -> str:
        doc = {"time": round(self.time, 3),
               "when": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.time)),
               "target": self.target, "status": self.status, "outcomes": self.outcomes,
               "failed": self.failed, "facts": self.facts}
        return json.dumps(doc, separators=(",", ":")) + "\n"

    @classmethod
    def from_line(cls, line: str) -> RunRecord:
        d = json.loads(line)
        facts = {k: v for k, v in (d.get("facts") or {}).items() if _is_number(v)}
        return cls(time=float(d["time"]), target=str(d["target"]), status=str(d.get("status", "")),
                   outcomes=dict(d.get("outcomes") or {}), failed=list(d.get("failed") or []), facts=facts)


@dataclass(frozen=True)
class History:
    records: list[RunRecord]  # oldest first
    unreadable: int = 0  # lines that did not parse (a crash mid-write, a hand edit)
    error: str | None = None  # the file itself could not be read

    def for_target(self, name: str) -> list[RunRecord]:
        return [r for r in self.records if r.target == name]

    def last_with(self, name: str, fact: str) -> RunRecord | None:
        """The newest run of target `name` that recorded `fact` as 1 (a flag such as DRILL_FULL_PASSED)."""
        return next((r for r in reversed(self.for_target(name)) if r.facts.get(fact) == 1), None)

    def series(self, name: str, fact: str) -> list[tuple[float, float, str]]:
        """(time, value, status) of one fact of one target, oldest first."""
        return [(r.time, float(r.facts[fact]), r.status) for r in self.for_target(name) if fact in r.facts]


def _is_number(v: object) -> TypeGuard[float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


def numeric_facts(facts: Mapping[str, object]) -> dict[str, float]:
    """The facts a fixture stored as numbers: these are the run's key figures."""
    return {k: v for k, v in facts.items() if _is_number(v)}


def read(path: Path) -> History:
    """Every readable record, oldest first; a missing file is an empty history."""
    records: list[RunRecord] = []
    bad = 0
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:  # stream: the file is small, but never assume it
                if not line.strip():
                    continue
                try:
                    records.append(RunRecord.from_line(line))
                except (ValueError, KeyError, TypeError):
                    bad += 1
    except FileNotFoundError:
        pass
    except OSError as e:
        return History([], 0, f"{path} cannot be read ({e.strerror})")
    records.sort(key=lambda r: r.time)
    return History(records, bad)


def append(path: Path, records: Iterable[RunRecord], max_per_target: int = MAX_RUNS_PER_TARGET) -> None:
    """Append this run's lines; trim to the newest `max_per_target` lines per target when over."""
    lines = [r.to_line() for r in records]
    if not lines:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write() of whole lines in append mode: a crash cannot interleave a half line into an old one.
    fd = open_append(path)  # never through a planted link
    try:
        size = os.fstat(fd).st_size
        if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
            lines.insert(0, "\n")  # a torn last line (run killed mid-write) stays on a line of its own
        os.write(fd, "".join(lines).encode("utf-8"))
    finally:
        os.close(fd)
    _trim(path, max_per_target)


def _trim(path: Path, max_per_target: int) -> None:
    counts: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        raw = f.readlines()
    for line in raw:
        t = _target_of(line)
        counts[t] = counts.get(t, 0) + 1
    if all(n <= max_per_target for n in counts.values()):
        return
    keep: list[str] = []
    for line in raw:  # oldest first: drop a target's oldest lines until N remain
        t = _target_of(line)
        if counts[t] > max_per_target:
            counts[t] -= 1
            continue
        keep.append(line)
    atomic_write(path, "".join(keep))


def _target_of(line: str) -> str:
    try:
        return str(json.loads(line)["target"])
    except (ValueError, KeyError, TypeError):
        return ""  # unreadable lines count as one group and are trimmed like the others
