"""Each dump is read once in its life: a persistent record of what scanning a file showed.

A full read of a dump costs seconds to minutes; a night's dump does not change once written, so
reading every kept dump again every run makes the run's cost grow with retention, not with what is
new. The record keeps, per dump file, the scanner's result and the key that proves the file unchanged
since: device, inode, size, mtime and ctime in nanoseconds (ctime moves on any write, chmod or
`touch -d`, and cannot be set back by a user), plus the scanner's version. A key that moved, another
scanner version, another result type or a record that cannot be read all mean a fresh scan: never a
stale verdict. The newest dump is read in full every run (it is what the night is about), and each
kept dump again at least every `rescan_days` (bit rot on old files is real), on a day of its own so
that no run pays for all of them.

What a read cannot vouch for is not kept: a file the run's user cannot open, a read error, a file
that changed while it was read. The record is a JSON file per target beside the run history,
0600 in a 0700 directory, replaced atomically (safefs); it knows nothing of dump formats: results
are stored as the fields of the scanner's (dataclass) result type.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
import time
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pgbackup_verify.facts.dumps.gzipscan import STOPPED
from pgbackup_verify.safefs import atomic_write

RECORD_DIR = "scan-records"  # beside history.jsonl in the reports (state) directory
DAY_S = 86400
R = TypeVar("R")


@dataclass(frozen=True)
class FileKey:
    """What proves a file unchanged since it was read."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileKey | None:
        try:
            st = os.stat(path)
            if stat.S_ISDIR(st.st_mode):  # a pg_dump -Fd archive: a data file rewritten in place moves no
                return cls._of_directory(path, st)  # stamp of its directory, so every file's stamps count
        except OSError:
            return None
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    @classmethod
    def _of_directory(cls, path: Path, st: os.stat_result) -> FileKey:
        size, mtime, ctime = 0, st.st_mtime_ns, st.st_ctime_ns
        with os.scandir(path) as entries:
            for e in entries:
                s = e.stat(follow_symlinks=False)
                size, mtime, ctime = size + s.st_size, max(mtime, s.st_mtime_ns), max(ctime, s.st_ctime_ns)
        return cls(st.st_dev, st.st_ino, size, mtime, ctime)



def day_of_period(seed: str, days: int) -> int:
    """A stable day in each `days`-day period for one file (the same in every process)."""
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") % days


@dataclass(frozen=True)
class Reading:
    """How this run got one dump's verdict: read in full, or from the record (and when that was)."""

    name: str
    read: bool
    why: str  # "newest dump", "no record", "changed since ...", "rescan due", "unchanged since ..."
    scanned_at: float  # when the verdict in use was read

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.scanned_at))
        return f"{self.name} ({self.why})" if self.read else f"{self.name} (recorded {when})"


def record_path(state_dir: Path, target: str) -> Path:
    """The record file of one target (a name that is safe on disk and unique per target name)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", target).strip("-.")[:60] or "target"
    return state_dir / RECORD_DIR / f"{safe}-{hashlib.sha256(target.encode()).hexdigest()[:8]}.json"


def _lasting(result: Any) -> bool:
    """Would reading the same bytes again say the same? Not for what the reader's rights, the disk or
    the network decided (an unreadable file, a read error, rclone failing): those are read again."""
    fmt = getattr(result, "format", "")
    error = str(getattr(result, "error", "") or "")
    if hasattr(result, "archive"):  # an offsite archive scan: any read error may be the network's
        member = str(getattr(getattr(result, "gzip", None), "error", "") or "")
        return not error and not member.startswith(STOPPED)  # a time limit is this run's, not the bytes'
    # pg_restore's verdict on a custom-format archive depends on the pg_restore installed (its version).
    return fmt != "unreadable" and not error.startswith(("read error", "cannot read", "pg_restore failed", STOPPED))


_PRIMITIVES = (bool, int, float, str)


def _build(cls: type, data: Any) -> Any:
    """An instance of the dataclass `cls` from its asdict() form, every field checked against its type
    hint (nested dataclasses, `X | None`, lists of primitives); ValueError when anything does not fit."""
    if not isinstance(data, dict) or set(data) != {f.name for f in dataclasses.fields(cls)}:
        raise ValueError(f"not a {cls.__name__}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _value(hints[name], value) for name, value in data.items()})


def _value(hint: Any, value: Any) -> Any:
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        origin = typing.get_origin(option)
        if dataclasses.is_dataclass(option) and isinstance(option, type):
            return _build(option, value)
        if origin in (list, tuple) and isinstance(value, list):
            (item, *_) = typing.get_args(option) or (str,)
            if all(isinstance(v, item) for v in value):
                return value if origin is list else tuple(value)
        if option in _PRIMITIVES and isinstance(value, option) and not (option is int and isinstance(value, bool)):
            return value
        if option is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    raise ValueError(f"{value!r} is not a {hint}")


@dataclass
class ScanRecord:
    """The persistent record of one target's dumps (or offsite archives); `scan` and `scan_remote` read
    through it."""

    path: Path | None  # None: no state directory, nothing persists (everything is read)
    scanner_version: int | str  # of the scanners that made the verdicts; another one reads everything again
    types: Sequence[type]  # the scanner's result types (dataclasses) a record may hold
    newest: Path | None = None  # read in full every run, whatever the record says
    rescan_days: int = 7
    now: float = field(default_factory=time.time)
    readings: list[Reading] = field(default_factory=list)
    problem: str = ""  # why the record could not be read or written ("" when it could)
    _entries: dict[str, dict[str, Any]] | None = None

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._entries is None:
            self._entries = {}
            if self.path is not None:
                try:
                    doc = json.loads(self.path.read_bytes())
                    entries = doc.get("dumps") if isinstance(doc, dict) else None
                    if isinstance(entries, dict):
                        self._entries = {k: v for k, v in entries.items() if isinstance(v, dict)}
                    else:
                        self.problem = f"scan record {self.path} is not a record: everything is read"
                except FileNotFoundError:
                    pass
                except (OSError, ValueError) as e:
                    self.problem = f"scan record {self.path} unreadable ({e}): everything is read"
        return self._entries

    def _restore(self, entry: dict[str, Any], key: list[Any]) -> tuple[Any, float] | str:
        """(result, scanned_at) from a valid entry, else why it cannot be used."""
        if entry.get("key") != key:
            return "changed since its last read"
        if entry.get("scanner") != self.scanner_version:
            return f"read by scanner version {entry.get('scanner')}, now {self.scanner_version}"
        result = entry.get("result")
        cls = next((t for t in self.types if isinstance(result, dict) and t.__name__ == result.get("type")), None)
        scanned_at = entry.get("scanned_at")
        if cls is None or not isinstance(scanned_at, int | float) or isinstance(scanned_at, bool):
            return "record of another result type"
        try:
            return _build(cls, result.get("fields")), float(scanned_at)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            return "record of another result type"

    def _due(self, seed: str, scanned_at: float) -> bool:
        age = self.now - scanned_at
        if age < 0 or age >= self.rescan_days * DAY_S:
            return True  # overdue, or a date from the future (a clock set back): read it
        today = int(self.now // DAY_S)
        return today != int(scanned_at // DAY_S) and today % self.rescan_days == day_of_period(seed, self.rescan_days)

    def _through(self, ident: str, name: str, key: list[Any] | None, seed: str, read: Callable[[], R],
                 always: str, unchanged: Callable[[], bool], keep: Callable[[str], bool]) -> R:
        entry = self._load().get(ident) if key is not None else None
        if key is None:
            why = "cannot stat"
        elif always:
            why = always
        elif entry is None:
            why = "no record"
        else:
            restored = self._restore(entry, key)
            if isinstance(restored, str):
                why = restored
            elif self._due(seed, restored[1]):
                why = f"rescan due (every {self.rescan_days} days)"
            else:
                self.readings.append(Reading(name, False, "unchanged", restored[1]))
                return restored[0]
        result = read()
        self.readings.append(Reading(name, True, why, self.now))
        if key is not None and _lasting(result) and dataclasses.is_dataclass(result) and unchanged():
            entries = self._load()
            entries[ident] = {"key": key, "scanner": self.scanner_version, "scanned_at": round(self.now, 3),
                              "result": {"type": type(result).__name__, "fields": dataclasses.asdict(result)}}  # type: ignore[arg-type]
            self._save({k: v for k, v in entries.items() if keep(k)})
        return result

    def scan(self, path: Path, scanner: Callable[[Path], R]) -> R:
        """The verdict on the file `path`: from the record while it proves the file unchanged, else read."""
        key = FileKey.of(path)
        return self._through(str(path), path.name, list(dataclasses.astuple(key)) if key else None,
                             f"{key.dev}:{key.ino}" if key else "", lambda: scanner(path),
                             "newest dump" if self.newest is not None and path == self.newest else "",
                             lambda: FileKey.of(path) == key,
                             os.path.lexists)  # files gone from disk leave the record with them

    def scan_remote(self, ident: str, name: str, key: list[Any], read: Callable[[], R]) -> R:
        """The verdict on a remote object `ident` listed as `key` (size, time, hash): from the record while
        the listing shows it unchanged, else read. Only the newest one is kept in the record."""
        return self._through(ident, name, key, ident, read, "", lambda: True, lambda k: k == ident)

    def _save(self, entries: dict[str, dict[str, Any]]) -> None:
        self._entries = entries
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.path.parent, 0o700)
            atomic_write(self.path, json.dumps({"dumps": entries}, separators=(",", ":")), mode=0o600)
        except OSError as e:
            self.problem = f"scan record {self.path} not written ({e.strerror or e}): the next run reads everything"
