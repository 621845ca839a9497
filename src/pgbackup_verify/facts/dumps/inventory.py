"""Inventory of the backup directory: which dumps exist, which are good, which nights are covered.

Listing is a stat() per file. Goodness needs a full read (gzip to the end, header, footer,
payload), which costs ~0.4 s per 100 MB compressed here, so a scan is done at most once per
file per session (`ScanCache`, keyed on path + size + mtime) and only where a check needs it:
the newest dump, the previous good one (shrink), and per night newest-first until a good one
is found (retention coverage, min good dumps). With one good dump per night and a 7-day
window that is ~7 scans per run: e.g. 7 x 118 MB in ~3.3 s. A night whose newest file is bad
costs one more scan per older file of that night. A custom-format dump is read in full by
`pg_restore -f -` (customfmt.verify_archive), which costs more than a gunzip of the same data.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pgbackup_verify.config import BackupsSection
from pgbackup_verify.facts.dumps import customfmt
from pgbackup_verify.facts.dumps.gzipscan import CUSTOM_MAGIC, DumpScan, scan_file

# Names that only interrupted or half-finished writers leave behind.
STRAY_GLOBS = ("*.raw", "*.tmp", "*.part", "*.partial", "*.incomplete", "*.inprogress", "*.swp")


@dataclass(frozen=True)
class DumpFile:
    """A dump file: in the local inventory, or listed on the backup host (then its mode is known too)."""

    path: Path
    size: int
    mtime: float
    mode: int = 0

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def night(self) -> dt.date:
        """The night a dump belongs to: the local calendar day of its mtime."""
        return dt.datetime.fromtimestamp(self.mtime).date()

    def age_hours(self, now: float) -> float:
        return (now - self.mtime) / 3600


@dataclass(frozen=True)
class LatestDump:
    """The newest dump, read once: what the dump checks judge."""

    file: DumpFile
    scan: DumpScan
    age_hours: float


@dataclass(frozen=True)
class Stray:
    path: Path
    size: int
    reason: str


@dataclass(frozen=True)
class Inventory:
    directory: Path
    pattern: str
    dumps: tuple[DumpFile, ...]  # files matching the pattern, newest mtime first
    strays: tuple[Stray, ...]
    taken_at: float

    @property
    def newest(self) -> DumpFile | None:
        return self.dumps[0] if self.dumps else None

    @property
    def largest(self) -> DumpFile | None:
        return max(self.dumps, key=lambda d: d.size, default=None)


@dataclass
class ScanCache:
    """One scan per file per session; a file rewritten in between gets a new key."""

    scans: dict[tuple[str, int, int], DumpScan] = field(default_factory=dict)
    hits: int = 0

    def scan(self, dump: DumpFile) -> DumpScan:
        try:
            st = dump.path.stat()
            key = (str(dump.path), st.st_size, st.st_mtime_ns)
        except OSError:
            key = (str(dump.path), -1, -1)
        if key in self.scans:
            self.hits += 1
            return self.scans[key]
        result = scan_dump(dump.path)
        self.scans[key] = result
        return result


def is_custom_format(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(len(CUSTOM_MAGIC)) == CUSTOM_MAGIC
    except OSError:
        return False


def scan_dump(path: Path) -> DumpScan:
    """Full verification of one dump, whatever its format."""
    if is_custom_format(path):
        return customfmt.verify_archive(path)
    # A name ending in .gz must be gzip; anything else is taken for what its bytes say.
    return scan_file(path, compressed=True if path.name.endswith((".gz", ".gzip")) else None)


def take_inventory(backups: BackupsSection, now: float | None = None) -> Inventory:
    """Stat every file of the backup directory once; read none of them."""
    now = time.time() if now is None else now
    dumps, strays = [], []
    with os.scandir(backups.directory) as entries:
        for entry in entries:
            if not entry.is_file(follow_symlinks=True):
                continue
            st = entry.stat()
            path = Path(entry.path)
            is_dump = fnmatch.fnmatch(entry.name, backups.pattern)
            if is_dump:
                dumps.append(DumpFile(path, st.st_size, st.st_mtime))
            reason = _stray_reason(entry.name, st.st_size, is_dump, backups.stray_max_bytes)
            if reason:
                strays.append(Stray(path, st.st_size, reason))
    dumps.sort(key=lambda d: (d.mtime, d.name), reverse=True)
    strays.sort(key=lambda s: s.path.name)
    return Inventory(backups.directory, backups.pattern, tuple(dumps), tuple(strays), now)


def _stray_reason(name: str, size: int, is_dump: bool, stray_max: int) -> str | None:
    if size == 0:
        return "zero-byte file"
    for glob in STRAY_GLOBS:
        if fnmatch.fnmatch(name, glob):
            return f"leftover {glob} file"
    if is_dump and size < stray_max:
        return f"dump file smaller than {stray_max} bytes"
    return None


def previous_good(inv: Inventory, cache: ScanCache, min_payload: int) -> tuple[DumpFile, DumpScan] | None:
    """The newest good dump older than the newest file: the baseline for shrink."""
    for dump, scan in _scanned(inv.dumps[1:], cache):
        if scan.is_good(min_payload):
            return dump, scan
    return None


def _scanned(dumps: tuple[DumpFile, ...], cache: ScanCache) -> Iterator[tuple[DumpFile, DumpScan]]:
    for d in dumps:
        yield d, cache.scan(d)


@dataclass(frozen=True)
class Night:
    date: dt.date
    good: str | None  # name of the newest good dump of that night
    bad: tuple[str, ...]  # "name (why)" of newer dumps of that night that are not good


@dataclass(frozen=True)
class Coverage:
    nights: tuple[Night, ...]  # the retention window, newest night first

    @property
    def missing(self) -> tuple[Night, ...]:
        return tuple(n for n in self.nights if n.good is None)


def window(inv: Inventory, retention_days: int) -> list[dt.date]:
    """The nights that must each hold a good dump, newest first.

    Today counts only once a dump for it exists (the job may not have run yet);
    a missing today is the max-age check's business.
    """
    today = dt.datetime.fromtimestamp(inv.taken_at).date()
    last = today if any(d.night == today for d in inv.dumps) else today - dt.timedelta(days=1)
    return [last - dt.timedelta(days=i) for i in range(retention_days)]


def coverage(inv: Inventory, cache: ScanCache, retention_days: int, min_payload: int) -> Coverage:
    by_night: dict[dt.date, list[DumpFile]] = {}
    for d in inv.dumps:
        by_night.setdefault(d.night, []).append(d)
    nights = []
    for date in window(inv, retention_days):
        good, bad = None, []
        for d, scan in _scanned(tuple(by_night.get(date, ())), cache):
            if scan.is_good(min_payload):
                good = d.name
                break
            bad.append(f"{d.name} ({'; '.join(scan.problems(min_payload))})")
        nights.append(Night(date, good, tuple(bad)))
    return Coverage(tuple(nights))


def good_dumps(inv: Inventory, cache: ScanCache, min_payload: int, enough: int) -> list[DumpFile]:
    """Good dumps newest first, scanning only until `enough` are found."""
    found = []
    for d, scan in _scanned(inv.dumps, cache):
        if scan.is_good(min_payload):
            found.append(d)
            if len(found) >= enough:
                break
    return found


CUSTOM_SUFFIXES = (".dump", ".backup", ".pgdump", ".custom", ".fc")


def custom_format_configured(backups: BackupsSection, inv: Inventory) -> bool:
    """Custom-format checks apply when the pattern names such files or the newest dump is one."""
    if backups.pattern.lower().rstrip("*").endswith(CUSTOM_SUFFIXES):
        return True
    return inv.newest is not None and is_custom_format(inv.newest.path)
