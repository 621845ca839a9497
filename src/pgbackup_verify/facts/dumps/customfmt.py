"""Custom-format dumps (`pg_dump -Fc`): the table of contents and a full read of the data.

`pg_restore --list` reads only the TOC at the start of the archive (24 ms for a 119 MB
dump here), so it proves the archive opens, but not that the data blocks behind it are
intact. `verify_archive` therefore streams `pg_restore -f -` (the archive rendered as SQL)
through the same scanner as the .sql.gz files: a truncated or corrupt archive makes
pg_restore fail, and the SQL carries the usual header and footer.

Which schemas and large objects the archive holds is read from the archive's own TOC
(`read_archive_toc`), field by field as pg_restore reads it: the `--list` text prints
names unquoted and space-separated (`SCHEMA - my schema my owner`) and turns newlines
into spaces, so no text parser can tell a name with a space from the owner after it.
The text parser stays only for archive versions newer than the reader knows.

How many rows each table of the archive loads (`count_archive_rows`) is read from
`pg_restore --data-only -f -` through the plain-dump scanner: pg_restore decompresses every
method the archive may use (gzip, lz4, zstd, none) and writes each TABLE DATA entry as the
COPY statement pg_dump stored for it, so the scanner sees the target as loaded (the root of a
partition tree under --load-via-partition-root, names with quotes or newlines quoted), exactly
as for a plain dump.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pgbackup_verify.facts import childenv
from pgbackup_verify.facts.dumps.gzipscan import STOPPED, DumpScan, scan_stream
from pgbackup_verify.facts.dumps.plainscan import MetaCommandRefused, PlainDumpScanner
from pgbackup_verify.safefs import open_regular

# TOC entry descriptions of more than one word; the schema column follows the description.
_MULTIWORD = ("TABLE DATA", "SEQUENCE SET", "SEQUENCE OWNED BY", "FK CONSTRAINT", "DEFAULT ACL",
              "MATERIALIZED VIEW DATA", "MATERIALIZED VIEW", "FOREIGN TABLE", "TEXT SEARCH CONFIGURATION",
              "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "FOREIGN DATA WRAPPER",
              "SERVER", "USER MAPPING", "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA",
              "TABLE ATTACH", "INDEX ATTACH", "STATISTICS DATA", "LARGE OBJECT", "BLOB", "BLOBS",
              "SHELL TYPE", "ROW SECURITY", "EVENT TRIGGER", "PROCEDURAL LANGUAGE", "DEFAULT",
              "CHECK CONSTRAINT", "OPERATOR CLASS", "OPERATOR FAMILY")


@dataclass(frozen=True)
class TocFacts:
    path: str
    readable: bool  # pg_restore --list succeeded
    error: str | None  # pg_restore's last stderr line when not readable
    entries: int  # TOC entries listed
    schemas: tuple[str, ...]  # schemas created by or holding objects of the archive, sorted
    dumped_from: str
    dumped_by: str
    seconds: float
    large_objects: int | None = None  # large objects the archive creates (None: not known)
    read_by: str = "archive TOC"  # or "pg_restore --list text" for archive versions the reader does not know

    def missing(self, expected: tuple[str, ...] | list[str]) -> list[str]:
        return [s for s in expected if s not in self.schemas]


def _last_line(stderr: bytes) -> str:
    lines = [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "no message"


def _schema_of(rest: str) -> tuple[str | None, bool]:
    """(schema, is_schema_entry) from '<desc> <namespace> <tag> <owner>' of one TOC line."""
    desc = next((d for d in sorted(_MULTIWORD, key=len, reverse=True) if rest.startswith(d + " ")), None)
    if desc is None:
        desc = rest.split(" ", 1)[0]
    after = rest[len(desc) + 1:]
    if desc == "SCHEMA" and after.startswith("- "):
        # '- <name> <owner>': names with spaces survive because the owner is the last word.
        name = after[2:].rsplit(" ", 1)[0] if " " in after[2:] else after[2:]
        return name, True
    namespace = after.split(" ", 1)[0]
    return (None if namespace == "-" else namespace), False


def parse_toc(listing: str) -> tuple[int, set[str], str, str]:
    entries, schemas, dumped_from, dumped_by = 0, set(), "", ""
    for line in listing.splitlines():
        if line.startswith(";"):
            text = line.lstrip("; ").strip()
            if text.startswith("Dumped from database version:"):
                dumped_from = text.split(":", 1)[1].strip()
            elif text.startswith("Dumped by pg_dump version:"):
                dumped_by = text.split(":", 1)[1].strip()
            continue
        head, sep, rest = line.partition("; ")
        if not sep or not head.strip().isdigit():
            continue
        entries += 1
        parts = rest.split(" ", 2)  # tableoid, oid, remainder
        if len(parts) == 3:
            schema, _ = _schema_of(parts[2])
            if schema:
                schemas.add(schema)
    return entries, schemas, dumped_from, dumped_by


class ArchiveFormatError(Exception):
    """The file is not a custom-format archive this reader knows; str() says why."""


@dataclass(frozen=True)
class TocEntry:
    dump_id: int
    catalog_id: tuple[str, str]  # (tableoid, oid) as pg_dump wrote them
    desc: str  # "TABLE", "SCHEMA", "BLOB", "TABLE DATA", ...
    namespace: str | None  # the schema, exactly as in the catalog
    tag: str  # the object's name, exactly
    owner: str | None
    defn: str
    data_file: str | None = None  # directory and tar archives: the file holding the entry's data
    copy_stmt: str = ""  # TABLE DATA: the COPY statement pg_restore writes before the data


@dataclass(frozen=True)
class ArchiveToc:
    version: tuple[int, int, int]
    dbname: str
    dumped_from: str
    dumped_by: str
    entries: tuple[TocEntry, ...]
    compression: str = "gzip"  # of the data blocks: none, gzip (zlib), lz4, zstd
    int_size: int = 4
    data_start: int = 0  # where the data blocks begin: right after the TOC

    def listed(self) -> int:
        """Entries `pg_restore --list` shows."""
        return sum(e.desc not in _NOT_LISTED for e in self.entries)

    def schemas(self) -> set[str]:
        out = {e.tag for e in self.entries if e.desc == "SCHEMA"}
        return out | {e.namespace for e in self.entries if e.namespace}

    def large_objects(self) -> int:
        # One BLOB entry per large object up to pg_dump 16; 17 groups them in BLOB METADATA entries.
        return sum(max(1, e.defn.count("lo_create(")) for e in self.entries if e.desc in ("BLOB", "BLOB METADATA"))


# Entries pg_restore handles itself and `--list` does not show (DATABASE only with -C).
_NOT_LISTED = frozenset({"ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE", "DATABASE PROPERTIES"})
_K_VERS_MAX = (1, 16)  # pg_dump 17's archive version; newer ones fall back to the --list text


class _Reader:
    """pg_dump's archive primitives (pg_backup_archiver.c ReadInt/ReadStr/ReadOffset)."""

    def __init__(self, f: IO[bytes], int_size: int = 4, where: str = "its table of contents") -> None:
        self.f, self.int_size, self.off_size, self.where = f, int_size, 8, where

    def bytes(self, n: int) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            raise ArchiveFormatError(f"archive ends inside {self.where}")
        return b

    def byte(self) -> int:
        return self.bytes(1)[0]

    def int(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.bytes(self.int_size), "little")
        return -value if sign else value

    def str(self) -> str | None:
        n = self.int()
        if n < 0:
            return None
        if n > 1 << 30:
            raise ArchiveFormatError(f"implausible string length {n} in the table of contents")
        return self.bytes(n).decode("utf-8", "surrogateescape")

    def offset(self) -> None:
        self.byte()
        self.bytes(self.off_size)


# The format byte of the header: custom archives say 1; the toc.dat of directory (-Fd) and tar (-Ft)
# archives says 3 (pg_dump writes the directory TOC's header as the tar one: pg_backup_directory.c).
_CUSTOM, _TOC_DAT = 1, 3


def read_archive_toc(path: str | Path | IO[bytes]) -> ArchiveToc:
    """The TOC of a `pg_dump -Fc` archive, or of a toc.dat (-Fd, -Ft: pass the directory, or the toc.dat
    stream), read from the archive itself (only its head is read)."""
    if not isinstance(path, (str, Path)):
        return _read_toc(path)
    p = Path(path)
    with open_regular(p / "toc.dat" if p.is_dir() else p) as f:  # never a FIFO put in its place
        head = f.read(512)
        f.seek(0)
        if head[257:262] == b"ustar":  # pg_dump -Ft: toc.dat is the first member; nothing is extracted
            with tarfile.open(fileobj=f, mode="r|") as tf:
                m = tf.next()
                member = tf.extractfile(m) if m is not None and m.name == "toc.dat" and m.isreg() else None
                if member is None:
                    raise ArchiveFormatError("a tar file whose first member is not toc.dat (not pg_dump -Ft)")
                return _read_toc(member)
        return _read_toc(f)


def _read_toc(f: IO[bytes]) -> ArchiveToc:
    r = _Reader(f)
    if r.bytes(5) != b"PGDMP":
        raise ArchiveFormatError("not a pg_dump custom-format archive (no PGDMP magic)")
    vmaj, vmin = r.byte(), r.byte()
    vrev = r.byte() if (vmaj, vmin) > (1, 0) else 0
    version = (vmaj, vmin, vrev)
    if version[:2] < (1, 10) or version[:2] > _K_VERS_MAX:
        raise ArchiveFormatError(f"archive version {vmaj}.{vmin}.{vrev} not known to this reader")
    r.int_size, r.off_size = r.byte(), r.byte()
    fmt = r.byte()
    if fmt not in (_CUSTOM, _TOC_DAT):
        raise ArchiveFormatError("archive is not in custom, directory or tar format (pg_dump -Fc/-Fd/-Ft)")
    if version[:2] >= (1, 15):
        algorithm = r.byte()
        compression = {0: "none", 1: "gzip", 2: "lz4", 3: "zstd"}.get(algorithm, f"unknown ({algorithm})")
    else:
        compression = "none" if r.int() == 0 else "gzip"  # a zlib level; -1 is zlib's default
    for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        r.int()
    dbname, dumped_from, dumped_by = r.str() or "", r.str() or "", r.str() or ""
    count = r.int()
    entries = []
    for _ in range(count):
        dump_id = r.int()
        r.int()  # had dumper
        catalog_id = (r.str() or "0", r.str() or "0")
        tag, desc = r.str() or "", r.str() or ""
        if version[:2] >= (1, 11):
            r.int()  # section
        defn = r.str() or ""
        r.str()  # drop statement
        copy_stmt = r.str() or ""
        namespace = r.str()
        r.str()  # tablespace
        if version[:2] >= (1, 14):
            r.str()  # table access method
        if version[:2] >= (1, 16):
            r.int()  # relkind
        owner = r.str()
        r.str()  # "with oids", always false
        while r.str() is not None:  # dependencies
            pass
        data_file = None
        if fmt == _CUSTOM:
            r.offset()  # custom format: where the entry's data is
        else:
            data_file = r.str() or None  # directory and tar: the file of the entry's data
        entries.append(TocEntry(dump_id, catalog_id, desc, namespace, tag, owner, defn, data_file, copy_stmt))
    data_start = f.tell() if fmt == _CUSTOM else 0  # custom format: where the data blocks begin
    return ArchiveToc(version, dbname, dumped_from, dumped_by, tuple(entries), compression, r.int_size, data_start)


@contextlib.contextmanager
def _archive_input(p: Path, follow: bool = True) -> Iterator[tuple[list[str], Any, int]]:
    """(pg_restore's path arguments, its stdin, stored bytes): a directory archive (-Fd) by its path, as
    pg_restore opens its files itself; a file through the descriptor opened here, never a FIFO put in its
    place (see safefs.open_regular)."""
    if p.is_dir():
        yield [str(p)], subprocess.DEVNULL, sum(e.stat().st_size for e in os.scandir(p) if e.is_file())
        return
    with open_regular(p, follow) as f:
        yield [], f, os.fstat(f.fileno()).st_size


def read_toc(path: str | Path, timeout: float = 120) -> TocFacts:
    """Does the archive open (`pg_restore --list`), and which schemas and large objects does it hold."""
    started = time.perf_counter()
    try:
        with _archive_input(Path(path)) as (args, stdin, _):
            proc = subprocess.run(["pg_restore", "--list", *args], stdin=stdin, capture_output=True,
                                  timeout=timeout, check=False, env=childenv.plain())
    except (OSError, subprocess.TimeoutExpired) as e:
        return TocFacts(str(path), False, f"pg_restore --list could not run ({e})", 0, (), "", "",
                        time.perf_counter() - started)
    if proc.returncode != 0:
        return TocFacts(str(path), False, _last_line(proc.stderr), 0, (), "", "", time.perf_counter() - started)
    try:
        toc = read_archive_toc(path)
    except (ArchiveFormatError, OSError):
        entries, schemas, dumped_from, dumped_by = parse_toc(proc.stdout.decode("utf-8", "replace"))
        return TocFacts(str(path), True, None, entries, tuple(sorted(schemas)), dumped_from, dumped_by,
                        time.perf_counter() - started, None, "pg_restore --list text")
    return TocFacts(str(path), True, None, toc.listed(), tuple(sorted(toc.schemas())), toc.dumped_from,
                    toc.dumped_by, time.perf_counter() - started, toc.large_objects())


def verify_archive(path: str | Path, follow: bool = True, seconds: float | None = None) -> DumpScan:
    """Read the whole archive as SQL (`pg_restore -f -`) through the dump scanner.

    payload_bytes is then the size of the SQL the archive restores to, comparable with the
    decompressed payload of a .sql.gz of the same database.
    """
    p = Path(path)
    try:
        with _archive_input(p, follow) as (args, stdin, size):
            proc = subprocess.Popen(["pg_restore", "-f", "-", *args], stdin=stdin, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=childenv.plain())
    except OSError as e:
        return DumpScan(str(p), "custom", 0, 0, False, f"cannot read with pg_restore ({e.strerror or e})", False, "",
                        False, "", "", 0.0)
    assert proc.stdout is not None and proc.stderr is not None
    with proc:
        scan = scan_stream(proc.stdout, str(p), compressed=False, seconds=seconds)
        if scan.error and scan.error.startswith(STOPPED):
            proc.kill()  # stopped by the time limit: pg_restore's own exit is not the finding
        proc.stdout.close()
        stderr = proc.stderr.read(65536)
        rc = proc.wait()
    error = scan.error
    if rc != 0 and not (error or "").startswith(STOPPED):
        error = f"pg_restore failed reading the archive: {_last_line(stderr)}"
    return dataclasses.replace(scan, format="custom", compressed_bytes=size, valid=error is None, error=error)


@dataclass
class ArchiveRows:
    scan: PlainDumpScanner  # rows per COPY target, targets as (schema, name), blocks, uncounted
    error: str | None  # why the counts are incomplete (pg_restore failed, time limit); None: all read
    sql_bytes: int  # size of the data-only SQL read (0: read from the data blocks directly)
    seconds: float
    read_by: str = "read with pg_restore --data-only"


def count_archive_rows(path: str | Path, extra_args: Sequence[str] = (), deadline: float | None = None,
                       started: Callable[[subprocess.Popen[bytes]], None] | None = None) -> ArchiveRows:
    """The rows each table of a custom-format archive loads, read from its data blocks.

    Streams `pg_restore --data-only -f -` (extra_args: e.g. the `-L` list of a sample tier)
    through PlainDumpScanner in 1 MiB pieces: memory stays bounded whatever the archive's size.
    deadline (time.monotonic()) stops the reading; `started` gets the process (to kill it on a signal).
    """
    start = time.monotonic()
    scan = PlainDumpScanner()
    error: str | None = None
    sql_bytes = 0
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty stderr cannot stall the stream
        try:
            proc = subprocess.Popen(["pg_restore", "--data-only", "-f", "-", *extra_args, str(path)],
                                    stdout=subprocess.PIPE, stderr=err, env=childenv.plain())
        except OSError as e:
            return ArchiveRows(scan, f"pg_restore could not run ({e})", 0, time.monotonic() - start)
        if started is not None:
            started(proc)
        assert proc.stdout is not None
        with proc:
            try:
                read, feed = proc.stdout.read, scan.feed
                while chunk := read(1 << 20):
                    sql_bytes += len(chunk)
                    feed(chunk)
                    if deadline is not None and time.monotonic() > deadline:
                        error = "row count stopped by the time limit ([drill].time_limit_seconds)"
                        proc.kill()
                        break
                scan.finish()
            except MetaCommandRefused as e:  # only counted, never run: but the counts stop being sure
                error = f"data of the archive unreadable as SQL: {e}"
                proc.kill()
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0 and error is None:
            err.seek(0)
            error = f"pg_restore failed reading the archive's data: {_last_line(err.read(65536))}"
    return ArchiveRows(scan, error, sql_bytes, time.monotonic() - start)
