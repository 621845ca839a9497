"""The backup directory of a remote target, read through its testinfra host (facts/remote.py).

Listing is one `find -H` over the directory (type, mode, size, mtime of every entry, NUL-separated;
a `find -L` for the rare symlink to a dump), classified by the same rules as the local inventory.
Times are the backup host's own (`date` in the same command), so ages do not depend on clock skew.

Reading streams: `RemoteFile` is a raw stream whose every refill is one `dd` of CHUNK bytes at the
next offset, run through the host's backend like any other command (one shared SSH connection for an
OpenSSH target), the next chunk fetched while the scanner reads this one. Nothing is copied to the local
disk, memory stays at a few chunks whatever the dump's size, and nothing is written on the remote host.
The same stream feeds the gzip/plain scanners and the restore drill (`remote_source`). A dump still
being written is caught by its growth across a short pause (the process check of the local inventory
needs /proc of the host: local only).
"""

from __future__ import annotations

import fnmatch
import io
import posixpath
import struct
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from pgbackup_verify.config import BackupsSection
from pgbackup_verify.facts.dumps.gzipscan import DumpScan, scan_stream
from pgbackup_verify.facts.dumps.inventory import (
    NO_TOC,
    STRAY_GLOBS,
    UNJUDGED,
    DumpFile,
    Inventory,
    ScanCache,
    Stray,
    _stray_reason,
    display_name,
)
from pgbackup_verify.facts.dumps.nights import night_rule
from pgbackup_verify.facts.dumps.progress import GROWTH_WAIT_S, GROWTH_WINDOW_S, InProgress
from pgbackup_verify.facts.dumps.source import DumpSource, NoDumpFound, detect_format

Host = Any  # testinfra.host.Host

CHUNK = 8 << 20  # bytes per remote read: large enough that a command's cost is small against it
_KINDS = {"d": "a directory", "p": "a named pipe (FIFO)", "s": "a socket", "c": "a character device",
          "b": "a block device"}
_LIST = "date +%%s && find -H %s -mindepth 1 -maxdepth 1 -printf '%%y\\t%%Y\\t%%m\\t%%s\\t%%T@\\t%%f\\0'"


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")  # file names need not be UTF-8 (inventory.display_name)


def _reason(stderr: str) -> str:
    """`find: '/x': Permission denied` -> `Permission denied` (the strerror, as the local inventory shows it)."""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    return last.rsplit(": ", 1)[-1] or "unknown error"


@dataclass(frozen=True)
class _Entry:
    name: str
    kind: str  # find's %y of the entry itself
    target_kind: str  # %Y: what a link points to (N missing, L loop)
    mode: int
    size: int
    mtime: float


def listing(host: Host, directory: str) -> tuple[float, list[_Entry], str]:
    """(the host's time, the entries, why the directory cannot be listed or '')."""
    res = host.run(_LIST, directory)
    out = _text(res.stdout_bytes)
    now_s, _, rest = out.partition("\n")
    entries = []
    for rec in filter(None, rest.split("\0")):
        kind, target_kind, mode, size, mtime, name = rec.split("\t", 5)
        entries.append(_Entry(name, kind, target_kind, int(mode, 8), int(size), float(mtime)))
    now = float(now_s) if now_s.strip().isdigit() else time.time()
    return now, entries, (_reason(res.stderr) if res.rc != 0 and not entries else "")


def _follow(host: Host, path: str, e: _Entry) -> _Entry:
    """A symlink to a regular file: the size, mode and mtime of the file it names (as os.stat does)."""
    res = host.run("find -L %s -maxdepth 0 -printf '%%s\t%%m\t%%T@'", path)  # mtime to the ns, as the listing
    if res.rc != 0 or not res.stdout.strip():
        return e
    size, mode, mtime = res.stdout.strip().split("\t")
    return _Entry(e.name, "f", "f", int(mode, 8), int(size), float(mtime))


def _classify(host: Host, directory: str, e: _Entry, backups: BackupsSection) -> tuple[DumpFile | None,
                                                                                      Stray | None]:
    """The local inventory's rules (inventory._classify) for one listed entry."""
    path = Path(posixpath.join(directory, e.name))
    is_dump = fnmatch.fnmatch(e.name, backups.pattern)
    ours = is_dump or any(fnmatch.fnmatch(e.name, g) for g in STRAY_GLOBS)
    if e.kind == "l":
        if e.target_kind in ("L", "N", "?"):
            if not ours:
                return None, None
            what = {"L": "symlink loop", "N": "symlink to a missing file"}.get(e.target_kind, "cannot stat")
            return None, Stray(path, 0, f"{what}: not judged", UNJUDGED)
        e = _follow(host, str(path), e) if ours and e.target_kind == "f" else \
            _Entry(e.name, e.target_kind, e.target_kind, e.mode, e.size, e.mtime)
    if e.kind != "f":
        if not is_dump:
            return None, None
        if e.kind == "d":  # the same words as locally; a real -Fd archive is read only on its own host
            toc = host.run("test -f %s", str(path / "toc.dat")).rc == 0
            return None, Stray(path, 0, "a pg_dump -Fd archive on the backup host: read only where it lies (run "
                               "the suite there)" if toc else NO_TOC, UNJUDGED)
        kind = _KINDS.get(e.kind, "not a regular file")
        return None, Stray(path, 0, f"{kind} named like a dump, not a regular file: not read", UNJUDGED)
    if display_name(e.name) != e.name:
        if not ours:
            return None, None
        return None, Stray(path, e.size, "file name is not valid UTF-8: not judged", UNJUDGED)
    dump = DumpFile(path, e.size, e.mtime, e.mode) if is_dump else None
    reason = _stray_reason(e.name, e.size, is_dump, backups.stray_max_bytes)
    return dump, Stray(path, e.size, reason) if reason else None


def _still_growing(host: Host, directory: str, recent: list[DumpFile], wait: float) -> dict[Path, str]:
    if not recent:
        return {}
    time.sleep(wait)
    _, again, _ = listing(host, directory)
    now = {Path(posixpath.join(directory, e.name)): e for e in again}
    found = {}
    for f in recent:
        e = now.get(f.path)
        if e is not None and (e.size != f.size or e.mtime != f.mtime):
            found[f.path] = f"grew from {f.size} to {e.size} bytes in {wait:g} s"
    return found


def take_remote_inventory(host: Host, backups: BackupsSection, growth_wait: float | None = None) -> Inventory:
    """The local `take_inventory`, over the backup host's testinfra backend: stat only, nothing read."""
    directory = str(backups.directory)
    now, entries, error = listing(host, directory)
    found, strays = [], []
    if error:
        strays.append(Stray(Path(directory), 0, f"cannot list the backup directory ({error})", UNJUDGED))
    for e in entries:
        dump, stray = _classify(host, directory, e, backups)
        if dump is not None:
            found.append(dump)
        if stray is not None:
            strays.append(stray)
    found.sort(key=lambda d: (d.mtime, d.name), reverse=True)
    recent = [f for f in found if now - f.mtime < GROWTH_WINDOW_S]
    grew = _still_growing(host, directory, recent, GROWTH_WAIT_S if growth_wait is None else growth_wait)
    busy = tuple(InProgress(f.path, f.size, f.mtime, grew[f.path]) for f in found if f.path in grew)
    dumps = tuple(d for d in found if d.path not in grew)
    strays = sorted((s for s in strays if s.path not in grew), key=lambda s: s.path.name)
    rule = night_rule(backups.night_boundary, (d.mtime for d in dumps))
    return Inventory(backups.directory, backups.pattern, dumps, tuple(strays), now, rule, busy)


class RemoteFile(io.RawIOBase):
    """A file on the backup host as a raw binary stream, CHUNK bytes per remote `dd`. The next chunk is
    fetched in the background while the reader works on this one, so transfer and scan overlap; at most
    two chunks are held (plus the one a command is receiving)."""

    def __init__(self, host: Host, path: str, chunk: int = CHUNK) -> None:
        super().__init__()
        self.host, self.path, self.chunk = host, path, chunk
        self._block = 0  # next CHUNK-sized block to hand out
        self._buf = memoryview(b"")
        self._eof = False
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pgbv-remote-read")
        self._next: Future[bytes] | None = None

    def readable(self) -> bool:
        return True

    def _get(self, block: int) -> bytes:
        res = self.host.run("dd if=%s bs=%s skip=%s count=1", self.path, str(self.chunk), str(block))
        if res.rc != 0:
            raise OSError(f"cannot read {self.path} on the backup host ({_reason(res.stderr)})")
        return bytes(res.stdout_bytes)

    def fetch(self) -> None:
        """The next chunk into the buffer (the first one at once: a caller may want it before reading)."""
        future = self._next or self._pool.submit(self._get, self._block)
        self._next = None
        data = future.result()
        self._block += 1
        self._eof = len(data) < self.chunk
        if not self._eof:
            self._next = self._pool.submit(self._get, self._block)
        self._buf = memoryview(data)

    def head(self, n: int) -> bytes:
        return bytes(self._buf[:n])

    def readinto(self, b: Any) -> int:
        if not self._buf and not self._eof:
            self.fetch()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        if self._next is not None:
            self._next.cancel()
        self._pool.shutdown(wait=True)  # a read under way ends with its chunk: no command is left running
        super().close()


def _unreadable(path: str, why: str) -> DumpScan:
    # The local scan_file's fact for a file it cannot open: nothing is said about bytes never seen.
    return DumpScan(path, "unreadable", 0, 0, False, f"cannot read ({why})", False, "", False, "", "", 0.0)


def scan_remote(host: Host, dump: DumpFile) -> DumpScan:
    """The local `scan_dump` of one remote dump, streamed once. A custom-format archive is verified by
    `pg_restore` on a local file only: remotely it is a finding, never a silent pass."""
    path = str(dump.path)
    with RemoteFile(host, path) as stream:
        try:
            stream.fetch()
        except OSError as e:
            return _unreadable(path, str(e).rsplit("(", 1)[-1].rstrip(")"))
        if stream.head(5).startswith(b"PGDMP"):
            return DumpScan(path, "custom", dump.size, 0, False, "a custom-format archive on a remote host: "
                            "verified on the backup host only (run the suite there, or dump in plain format)",
                            False, "", False, "", "", 0.0)
        return scan_stream(cast(IO[bytes], stream), path,
                           compressed=True if path.endswith((".gz", ".gzip")) else None)


@dataclass
class RemoteScanCache(ScanCache):
    """One scan per remote file per session, keyed on what the listing saw (path, size, mtime)."""

    host: Host = None
    remote_scans: dict[tuple[str, int, float], DumpScan] = field(default_factory=dict)

    def scan(self, dump: DumpFile) -> DumpScan:
        key = (str(dump.path), dump.size, dump.mtime)
        if key in self.remote_scans:
            self.hits += 1
            return self.remote_scans[key]
        result = self.remote_scans[key] = scan_remote(self.host, dump)
        return result


def _gzip_payload(host: Host, path: str, size: int) -> int | None:
    """The gzip footer's payload size (mod 4 GiB, lifted to at least the file size): 4 bytes read remotely."""
    if size < 18:
        return None
    res = host.run("tail -c 4 -- %s", path)
    if res.rc != 0 or len(res.stdout_bytes) != 4:
        return None
    isize = struct.unpack("<I", res.stdout_bytes)[0]
    while isize < size:
        isize += 1 << 32
    return isize


def remote_source(host: Host, backups: BackupsSection, inventory: Inventory | None = None) -> DumpSource:
    """The drill's source for a remote target: the newest dump the dump checks judged, streamed."""
    newest = (inventory or take_remote_inventory(host, backups)).newest
    if newest is None:
        raise NoDumpFound(f"no file matches '{backups.pattern}' in {backups.directory} on the backup host; "
                          "check [backups].directory and pattern, and that the nightly dump runs")
    path = str(newest.path)
    head = host.run("dd if=%s bs=5 count=1", path).stdout_bytes
    fmt = detect_format(head, newest.name)
    payload = _gzip_payload(host, path, newest.size) if fmt == "plain-gzip" else (
        newest.size if fmt == "plain" else None)
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(newest.mtime))
    return DumpSource(description=f"{path} on the backup host ({stamp})", name=newest.name, fmt=fmt,
                      size=newest.size, payload_hint=payload,
                      open=lambda: io.BufferedReader(RemoteFile(host, path), CHUNK), mtime=newest.mtime)
