"""Inventory of the backup directory: which dumps exist, which are good, which nights are covered.

Listing is a stat() per file. Goodness needs a full read (gzip to the end, header, footer,
payload), which costs ~0.4 s per 100 MB compressed here, so a scan is done at most once per
file per session (`ScanCache`, keyed on path + size + mtime) and only where a check needs it:
the newest dump, the previous good one (shrink), and per night newest-first until a good one
is found (retention coverage, min good dumps). With one good dump per night and a 7-day
window that is ~7 scans per run: e.g. 7 x 118 MB in ~3.3 s. A night whose newest file is bad
costs one more scan per older file of that night. A custom-format dump is read in full by
`pg_restore -f -` (customfmt.verify_archive), which costs more than a gunzip of the same data.
Across runs, the scan record (scanrecord.py, the cache's `record`) keeps each file's verdict while
the file is unchanged: a run reads the newest dump and the ones whose rescan is due, not the window.

Nights follow `nights.NightRule` (24-hour windows anchored away from the job's usual time), never
the calendar day. A dump still being written (open for writing by a process, or still growing) is
set aside as in progress and the newest complete one is judged. Entries the checks cannot judge
(non-regular files, symlink loops, links out of the backup directory, names that are not UTF-8)
named like dumps are findings, and are never opened: a FIFO would block the read.
"""

from __future__ import annotations

import datetime as dt
import errno
import fnmatch
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pgbackup_verify.config import BackupsSection
from pgbackup_verify.facts.dumps import customfmt, pgarchive
from pgbackup_verify.facts.dumps.compression import named_compression
from pgbackup_verify.facts.dumps.gzipscan import CUSTOM_MAGIC, DumpScan, scan_file
from pgbackup_verify.facts.dumps.nights import NightRule, night_rule
from pgbackup_verify.facts.dumps.progress import InProgress, find_in_progress
from pgbackup_verify.facts.dumps.scanrecord import ScanRecord
from pgbackup_verify.safefs import open_regular

# Names that only interrupted or half-finished writers leave behind.
STRAY_GLOBS = ("*.raw", "*.tmp", "*.part", "*.partial", "*.incomplete", "*.inprogress", "*.swp")


@dataclass(frozen=True)
class DumpFile:
    """A dump file: in the local inventory, or listed on the backup host (then its mode is known too)."""

    path: Path
    size: int
    mtime: float
    mode: int = 0
    link: bool = False  # listed as a symlink (to a dump); a plain file is never read through a link

    @property
    def name(self) -> str:
        return self.path.name

    def age_hours(self, now: float) -> float:
        return (now - self.mtime) / 3600


@dataclass(frozen=True)
class LatestDump:
    """The newest dump, read once: what the dump checks judge."""

    file: DumpFile
    scan: DumpScan
    age_hours: float
    in_progress: tuple[InProgress, ...] = ()  # newer files still being written, not judged


def display_name(name: str) -> str:
    """A name safe to print and to write into UTF-8 reports: undecodable bytes shown as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


LEFTOVER = "leftover"
UNJUDGED = "unjudged"


@dataclass(frozen=True)
class Stray:
    """A file the checks flag: a leftover of a failed run, or an entry named like a dump they cannot judge."""

    path: Path
    size: int
    reason: str
    kind: str = LEFTOVER

    @property
    def name(self) -> str:
        return display_name(self.path.name)

    def describe(self) -> str:
        if self.kind == UNJUDGED:
            return f"{self.name} ({self.reason})"
        return f"{self.name} ({self.reason}, {self.size} bytes)"


@dataclass(frozen=True)
class Inventory:
    directory: Path
    pattern: str
    dumps: tuple[DumpFile, ...]  # complete files matching the pattern, newest mtime first
    strays: tuple[Stray, ...]
    taken_at: float
    night_rule: NightRule
    in_progress: tuple[InProgress, ...] = ()  # matching files still being written, newest first

    @property
    def newest(self) -> DumpFile | None:
        return self.dumps[0] if self.dumps else None

    @property
    def largest(self) -> DumpFile | None:
        return max(self.dumps, key=lambda d: d.size, default=None)


@dataclass
class ScanCache:
    """One scan per file per session; a file rewritten in between gets a new key. With a `record`,
    one read per file in its life (scanrecord.py): unchanged older dumps keep their verdict across runs."""

    scans: dict[tuple[str, int, int], DumpScan] = field(default_factory=dict)
    hits: int = 0
    record: ScanRecord | None = None
    seconds: float | None = None  # [backups].read_timeout_seconds: wall-clock limit of one file's read

    def scan(self, dump: DumpFile) -> DumpScan:
        try:
            st = dump.path.stat()
            key = (str(dump.path), st.st_size, st.st_mtime_ns)
        except OSError:
            key = (str(dump.path), -1, -1)
        if key in self.scans:
            self.hits += 1
            return self.scans[key]

        def read(path: Path) -> DumpScan:
            return scan_dump(path, follow=dump.link, seconds=self.seconds)

        result = self.record.scan(dump.path, read) if self.record else read(dump.path)
        self.scans[key] = result
        return result


def is_custom_format(path: Path, follow: bool = True) -> bool:
    try:
        with open_regular(path, follow) as f:
            return f.read(len(CUSTOM_MAGIC)) == CUSTOM_MAGIC
    except OSError:
        return False


# The verdicts of the scanners below, as kept in the scan record: bump on any change to what a scan
# of the same bytes says (a new check, a fixed parser), so no record of the older scanner is reused.
SCANNER_VERSION = 3  # 2: zstd, xz, lz4, bzip2, directory and tar formats; cluster dump headers; 3: no line or
# byte of a file that is not pg_dump's is kept (an older record may hold one)


def scan_dump(path: Path, follow: bool = True, seconds: float | None = None) -> DumpScan:
    """Full verification of one dump, whatever its format, within `seconds` of wall clock; `follow=False`
    for a name listed as a plain file."""
    if pgarchive.is_directory(path):
        return pgarchive.verify(path, "directory")
    if is_custom_format(path, follow):
        return customfmt.verify_archive(path, follow, seconds)
    if pgarchive.is_tar_dump(path):
        return pgarchive.verify(path, "tar")
    # A name ending in .gz, .zst, .xz, .lz4 or .bz2 must be compressed (by whichever compressor its
    # bytes say); anything else is taken for what its bytes say.
    return scan_file(path, compressed=True if named_compression(path.name) else None, follow=follow,
                     seconds=seconds)


def take_inventory(backups: BackupsSection, now: float | None = None,
                   growth_wait: float | None = None) -> Inventory:
    """Stat every entry of the backup directory once; read none of them.

    `growth_wait` is the pause of the re-stat that catches a dump still growing (see progress.py).
    """
    now = time.time() if now is None else now
    found, strays = [], []
    try:
        with os.scandir(backups.directory) as entries:
            for entry in entries:
                dump, stray = _classify(entry, backups)
                if dump is not None:
                    found.append(dump)
                if stray is not None:
                    strays.append(stray)
    except OSError as e:
        strays.append(Stray(Path(backups.directory), 0, f"cannot list the backup directory ({e.strerror})",
                            UNJUDGED))
    found.sort(key=lambda d: (d.mtime, d.name), reverse=True)
    busy = find_in_progress(found, now, growth_wait)
    busy_paths = {b.path for b in busy}
    dumps = tuple(d for d in found if d.path not in busy_paths)
    # A file being written is neither a stray nor a zero-byte leftover (yet).
    strays = [s for s in strays if s.path not in busy_paths]
    strays.sort(key=lambda s: s.path.name)
    rule = night_rule(backups.night_boundary, (d.mtime for d in dumps))
    return Inventory(backups.directory, backups.pattern, dumps, tuple(strays), now, rule, busy)


def _classify(entry: os.DirEntry[str], backups: BackupsSection) -> tuple[DumpFile | None, Stray | None]:
    """One directory entry: a dump, a stray, both (a tiny dump) or neither (not ours)."""
    name, path = entry.name, Path(entry.path)
    is_dump = fnmatch.fnmatch(name, backups.pattern)
    ours = is_dump or any(fnmatch.fnmatch(name, g) for g in STRAY_GLOBS)
    try:
        st = entry.stat()  # follows symlinks: a link to a dump is a dump (inside the directory, below)
    except OSError as e:
        if not ours:
            return None, None
        what = {errno.ELOOP: "symlink loop", errno.ENOENT: "symlink to a missing file"}.get(
            e.errno or 0, f"cannot stat ({e.strerror})")
        return None, Stray(path, 0, f"{what}: not judged", UNJUDGED)
    if ours and _links_outside(entry, backups.directory):
        return None, Stray(path, 0, "symlink to a file outside the backup directory: not read", UNJUDGED)
    if is_dump and stat.S_ISDIR(st.st_mode) and display_name(name) == name:
        return _directory_dump(path, st)
    if not stat.S_ISREG(st.st_mode):
        if not is_dump:
            return None, None
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        return None, Stray(path, 0, f"{kind} named like a dump, not a regular file: not read", UNJUDGED)
    if display_name(name) != name:
        if not ours:
            return None, None
        return None, Stray(path, st.st_size, "file name is not valid UTF-8: not judged", UNJUDGED)
    dump = DumpFile(path, st.st_size, st.st_mtime, stat.S_IMODE(st.st_mode), entry.is_symlink()) if is_dump else None
    reason = _stray_reason(name, st.st_size, is_dump, backups.stray_max_bytes)
    return dump, Stray(path, st.st_size, reason) if reason else None


NO_TOC = ("a directory named like a dump without a toc.dat (not a pg_dump -Fd archive, or pg_dump failed before "
          "writing it): not read")


def _directory_dump(path: Path, st: os.stat_result) -> tuple[DumpFile | None, Stray | None]:
    """A directory named like a dump: a pg_dump -Fd archive when it holds a toc.dat (its size the sum of
    its files, its time the newest of them), else an entry the checks cannot judge."""
    if not pgarchive.is_directory_dump(path):
        return None, Stray(path, 0, NO_TOC, UNJUDGED)
    try:
        size, mtime = pgarchive.directory_stat(path)
    except OSError as e:
        return None, Stray(path, 0, f"directory archive cannot be listed ({e.strerror}): not judged", UNJUDGED)
    return DumpFile(path, size, mtime, stat.S_IMODE(st.st_mode)), None
def _links_outside(entry: os.DirEntry[str], directory: Path) -> bool:
    """A link (or a chain of them) that ends outside the backup directory. Whoever may write there
    (often the application's user) could otherwise make the run, as root, read any file and show
    its lines in the reports; links inside the directory (`latest.sql.gz -> x.sql.gz`) still count."""
    try:
        if not entry.is_symlink():
            return False
    except OSError:
        return False
    home = os.path.realpath(directory)
    return os.path.commonpath([home, os.path.realpath(entry.path)]) != home


_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


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
    unreadable: bool = False  # one of them could not even be read by this user


@dataclass(frozen=True)
class Coverage:
    nights: tuple[Night, ...]  # the retention window, newest night first
    rule: NightRule

    @property
    def missing(self) -> tuple[Night, ...]:
        return tuple(n for n in self.nights if n.good is None)


def window(inv: Inventory, retention_days: int) -> list[dt.date]:
    """The nights that must each hold a good dump, newest first.

    Tonight counts only once a complete dump for it exists (the job may not have run or finished
    yet); a missing tonight is the max-age check's business.
    """
    rule = inv.night_rule
    tonight = rule.night_of(inv.taken_at)
    has = any(rule.night_of(d.mtime) == tonight for d in inv.dumps)
    last = tonight if has else tonight - dt.timedelta(days=1)
    return [last - dt.timedelta(days=i) for i in range(retention_days)]


def coverage(inv: Inventory, cache: ScanCache, retention_days: int, min_payload: int) -> Coverage:
    by_night: dict[dt.date, list[DumpFile]] = {}
    for d in inv.dumps:
        by_night.setdefault(inv.night_rule.night_of(d.mtime), []).append(d)
    nights = []
    for date in window(inv, retention_days):
        good, bad, unreadable = None, [], False
        for d, scan in _scanned(tuple(by_night.get(date, ())), cache):
            if scan.is_good(min_payload):
                good = d.name
                break
            bad.append(f"{d.name} ({'; '.join(scan.problems(min_payload))})")
            unreadable |= scan.format == "unreadable"
        nights.append(Night(date, good, tuple(bad), unreadable))
    return Coverage(tuple(nights), inv.night_rule)


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
    newest = inv.newest
    return newest is not None and (is_custom_format(newest.path) or pgarchive.is_directory_dump(newest.path)
                                   or pgarchive.is_tar_dump(newest.path))
