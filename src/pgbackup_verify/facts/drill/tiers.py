"""Tiered drills, for databases too large to restore every night.

- full: everything (the default, and every day named in [drill].full_on whatever `tier` says).
- schema: pre- and post-data only. A plain dump is still read and scanned to its end with the same
  safety (every meta-command refused, COPY rows counted), but no COPY data is loaded; a custom-format
  dump is restored through a restore list (`pg_restore -L`) without its TABLE DATA entries. Sequence
  values and large objects are restored in both (they are not table data and cost little).
- sample: the schema plus the data of [drill].sample_tables tables, the largest of the live database or
  a different set each day ("rotate"), together with every table their foreign keys reference (else
  the post-data foreign keys could not be validated against empty tables).

The tier that ran goes into the run history as a number (`DRILL_TIER`), so the age of the last passing
full drill can be judged from the history.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import psycopg

from pgbackup_verify.config import DrillSection, Target
from pgbackup_verify.config.sections import WEEKDAYS
from pgbackup_verify.facts.db import connect_readonly
from pgbackup_verify.facts.drill.cluster import mark_owner
from pgbackup_verify.facts.drill.safety import SPOOL_PREFIX, Janitor
from pgbackup_verify.facts.drill.sandbox import tool_env
from pgbackup_verify.facts.dumps.customfmt import ArchiveFormatError, read_archive_toc
from pgbackup_verify.facts.dumps.plainscan import split_name
from pgbackup_verify.facts.dumps.source import DumpSource
from pgbackup_verify.facts.history import DRILL_FULL_PASSED, History

FULL, SCHEMA, SAMPLE = "full", "schema", "sample"
TIER_CODE = {SCHEMA: 0, SAMPLE: 1, FULL: 2}  # the history holds numbers only

NO_DATA = "schema tier: no data restored"

Table = tuple[str, str]  # (schema, name), unquoted


def full_days(d: DrillSection) -> tuple[str, ...]:
    days = (d.full_on,) if isinstance(d.full_on, str) else d.full_on
    return tuple(sorted({x.lower() for x in days}, key=WEEKDAYS.index))


def tier_on(d: DrillSection, today: date) -> str:
    """The tier that runs on `today`: full on a day of [drill].full_on, else [drill].tier."""
    return FULL if WEEKDAYS[today.weekday()] in full_days(d) else d.tier


def next_full_day(d: DrillSection, today: date) -> str:
    """The next weekday of [drill].full_on (today included), or "" when none is scheduled."""
    days = full_days(d)
    for ahead in range(7):
        name = WEEKDAYS[(today.weekday() + ahead) % 7]
        if name in days:
            return name
    return ""


def schedule_note(d: DrillSection, tier: str) -> str:
    """`schema (full on sunday)`; `full (scheduled on sunday; schema on other days)`; `full`."""
    days = " and ".join(full_days(d))
    if tier == FULL and d.tier != FULL:
        return f"full (scheduled on {days}; {d.tier} on other days)"
    if tier == FULL:
        return FULL
    return f"{tier} (full on {days})" if days else f"{tier} (no full drill scheduled: [drill].full_on is empty)"


@dataclass
class TierPlan:
    tier: str
    note: str  # the evidence text: "schema (full on sunday)"
    picked: tuple[str, ...] = ()  # sample tier: the tables chosen, "schema.table"
    referenced: tuple[str, ...] = ()  # sample tier: added because a picked table's foreign key needs them
    data: frozenset[Table] = field(default_factory=frozenset)  # tables whose data is restored (sample)

    def wants(self, copy_target: str) -> bool:
        """Whether the data of a COPY target (as written in the dump) is loaded."""
        return self.tier == FULL or (self.tier == SAMPLE and split_name(copy_target) in self.data)

    @property
    def copy_filter(self) -> Callable[[str], bool] | None:
        return None if self.tier == FULL else self.wants

    def describe(self) -> str:
        """The tier evidence: `schema (full on sunday)`."""
        return self.note

    def sampled(self) -> str:
        """Sample tier: the tables whose data was restored."""
        shown = ", ".join(self.picked[:10]) + (" ..." if len(self.picked) > 10 else "")
        refs = ", ".join(self.referenced[:10]) + (" ..." if len(self.referenced) > 10 else "")
        return f"{len(self.picked)} tables ({shown or 'none'})" + (
            f" + {len(self.referenced)} their foreign keys reference ({refs})" if self.referenced else "")

    def pg_restore_args(self, source: DumpSource, janitor: Janitor, work_dir: Path) -> list[str]:
        """Arguments that make pg_restore restore this tier (none for full)."""
        if self.tier == FULL:
            return []
        # A restore list rather than --section: sequences are still set and large objects restored,
        # as the plain-dump tiers do (they load no COPY data, everything else runs).
        listing = restore_list(toc_lines(source), self.data, _exact_table_data(source))
        d = Path(tempfile.mkdtemp(prefix=SPOOL_PREFIX, dir=work_dir))
        janitor.add(f"restore list {d}", lambda: shutil.rmtree(d, ignore_errors=True))
        mark_owner(d)
        path = d / "restore.list"
        path.write_text("".join(listing), encoding="utf-8")
        return ["-L", str(path)]


def toc_lines(source: DumpSource) -> list[str]:
    """`pg_restore -l` of the dump: from its file, or from the stream (only the header is read)."""
    if source.path is not None:
        out = subprocess.run(["pg_restore", "-l", str(source.path)], capture_output=True, check=False,
                             env=tool_env())
    else:
        proc = subprocess.Popen(["pg_restore", "-l"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=tool_env())
        assert proc.stdin is not None

        def feed() -> None:
            try:
                with source.open() as src:
                    while chunk := src.read(1 << 20):
                        proc.stdin.write(chunk)  # type: ignore[union-attr]
            except (BrokenPipeError, OSError):
                pass  # pg_restore read the table of contents and stopped reading: all it needs
            finally:
                try:
                    proc.stdin.close()  # type: ignore[union-attr]
                except BrokenPipeError:
                    pass

        errors: list[bytes] = []
        feeder = threading.Thread(target=feed, daemon=True)
        reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()),  # type: ignore[union-attr]
                                  daemon=True)
        feeder.start()
        reader.start()
        assert proc.stdout is not None
        stdout = proc.stdout.read()  # not communicate(): the feeder owns stdin and closes it
        code = proc.wait()
        feeder.join(10)
        reader.join(10)
        out = subprocess.CompletedProcess(proc.args, code, stdout, b"".join(errors))
    if out.returncode != 0:
        raise FileNotFoundError(f"pg_restore -l could not list {source.description}: "
                                f"{out.stderr.decode(errors='replace').strip()[:300]}")
    return out.stdout.decode(errors="replace").splitlines(keepends=True)


def _exact_table_data(source: DumpSource) -> dict[int, Table]:
    """TABLE DATA entries by dump id, names exactly as in the archive's own TOC (empty: no file to read).

    `pg_restore -l` prints a newline in a name as a space, and a space separates schema and name
    there, so the text alone cannot say which table a line is; pg_restore -L reads only the id."""
    if source.path is None:
        return {}
    try:
        toc = read_archive_toc(source.path)
    except (OSError, ArchiveFormatError):
        return {}
    return {e.dump_id: (e.namespace or "", e.tag) for e in toc.entries if e.desc == "TABLE DATA"}


def restore_list(lines: Sequence[str], data: frozenset[Table], exact: dict[int, Table] | None = None) -> list[str]:
    """The restore list with the data of every table outside `data` commented out."""
    out = []
    for line in lines:
        head, sep, rest = line.partition("; ")
        fields = rest.split(" ", 2) if sep and head.strip().isdigit() else []
        body = fields[2] if len(fields) == 3 else ""
        skip = False
        if fields and exact and int(head) in exact:
            skip = exact[int(head)] not in data
        elif body.startswith("TABLE DATA "):
            names = body.removeprefix("TABLE DATA ")
            skip = not any(names.startswith(f"{s} {t} ") for s, t in data)
        out.append(";" + line if skip else line)
    return out


_TABLES = """
SELECT c.oid, n.nspname, c.relname, pg_table_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_%%'
  AND n.nspname <> 'information_schema'
"""
# A foreign key to a partitioned table needs the rows of its partitions.
_REFS = """
SELECT conrelid, confrelid FROM pg_constraint WHERE contype = 'f'
UNION
SELECT con.conrelid, leaf.relid
FROM pg_constraint con, LATERAL pg_partition_tree(con.confrelid) leaf
WHERE con.contype = 'f' AND leaf.isleaf
"""


def pick_sample(conn: psycopg.Connection, d: DrillSection, exclude: Sequence[str], today: date
                ) -> tuple[list[Table], list[Table]]:
    """(picked, referenced): the sample tables and the tables their foreign keys need, transitively."""
    rows = conn.execute(_TABLES, (list(exclude),)).fetchall()
    names = {oid: (s, t) for oid, s, t, _ in rows}
    if d.sample_pick == "largest":
        ordered = [(s, t) for _, s, t, _ in sorted(rows, key=lambda r: (-r[3], r[1], r[2]))]
        picked = ordered[:d.sample_tables]
    else:
        ordered = sorted(names.values())
        k = d.sample_tables
        turn = today.toordinal() % max(1, math.ceil(len(ordered) / k))
        picked = ordered[turn * k:(turn + 1) * k]
    refs: dict[int, set[int]] = {}
    for src, dst in conn.execute(_REFS).fetchall():
        refs.setdefault(src, set()).add(dst)
    oid_of = {v: k for k, v in names.items()}
    todo = [oid_of[t] for t in picked]
    seen = set(todo)
    while todo:
        for dst in refs.get(todo.pop(), ()):
            if dst not in seen and dst in names:
                seen.add(dst)
                todo.append(dst)
    referenced = sorted(names[o] for o in seen if names[o] not in picked)
    return picked, referenced


def _qualified(t: Table) -> str:
    return f"{t[0]}.{t[1]}"


def plan(target: Target, d: DrillSection, today: date | None = None) -> TierPlan:
    """What today's drill restores; the sample tier reads table sizes and foreign keys from the live database."""
    today = today or date.today()
    tier = tier_on(d, today)
    note = schedule_note(d, tier)
    if tier != SAMPLE:
        return TierPlan(tier, note)
    with connect_readonly(target) as live:
        picked, referenced = pick_sample(live, d, target.database.exclude_schemas, today)
    pick_note = f"{note}, {d.sample_pick}"
    return TierPlan(tier, pick_note, tuple(map(_qualified, picked)), tuple(map(_qualified, referenced)),
                    frozenset(picked) | frozenset(referenced))


def tier_code(tier: str) -> int:
    return TIER_CODE[tier]


__all__ = ["FULL", "NO_DATA", "SAMPLE", "SCHEMA", "TierPlan", "next_full_day", "plan", "schedule_note",
           "tier_on"]


def restore_passed(aborted: str | None, problems: Sequence[str], rows: dict[str, tuple[int, int | None]]) -> bool:
    """A drill that ran to the end, restored without an error line and lost no row."""
    return not aborted and not problems and all(n == got for n, got in rows.values())


@dataclass(frozen=True)
class FullAge:
    """How old the last passing full drill is, for the max_full_age_days check."""

    days: float | None  # None: no full drill has ever passed
    when: str  # "today", or the local time of the run, for the evidence
    first_run: bool  # the history holds no earlier run of this target

    def problem(self, max_days: int, ran_full_today: bool) -> str | None:
        if self.days is None:
            if self.first_run and ran_full_today:
                return None  # the first run: today's full drill is judged by the other drill checks
            return "no full drill has ever passed"
        if self.days > max_days:
            return f"last passing full drill {self.days:.1f} days ago ({self.when}) vs max {max_days}"
        return None


def full_age(history: History, target: str, today_passed: bool, now: float) -> FullAge:
    """From the run history (facts/history.py) and today's drill: the age of the last passing full drill."""
    if today_passed:
        return FullAge(0.0, "today", False)
    last = history.last_with(target, DRILL_FULL_PASSED)
    first = not history.for_target(target)
    if last is None:
        return FullAge(None, "", first)
    return FullAge((now - last.time) / 86400, time.strftime("%Y-%m-%d %H:%M", time.localtime(last.time)), first)
