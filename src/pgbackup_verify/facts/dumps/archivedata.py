"""The rows of a custom-format archive, counted from its data blocks directly.

A `pg_dump -Fc` archive is its header, its table of contents (read by customfmt.read_archive_toc),
then one data block per entry with data, in TOC order (pg_backup_custom.c):

    byte   BLK_DATA (1) or BLK_BLOBS (3)
    int    the entry's dump id
    BLK_DATA:  chunks (int length, bytes) up to a length of 0; together one zlib stream of
               the table's COPY text (or the text itself, uncompressed)
    BLK_BLOBS: per large object: int oid, its chunks as above; an oid of 0 ends the block

COPY text holds one row per line (a newline inside a value is written `\\n`), so a table's rows
are the newlines of its decompressed data, counted with bytes.count: the whole archive is read
once, decompressed in bounded pieces, and nothing else is kept. Archives this reader does not
know (lz4, zstd, a block of another kind) raise ArchiveFormatError; the caller then falls back
to `pg_restore --data-only` (customfmt.count_archive_rows).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from isal import isal_zlib

from pgbackup_verify.facts.dumps.customfmt import (
    ArchiveFormatError,
    ArchiveRows,
    ArchiveToc,
    _Reader,
    count_archive_rows,
    read_archive_toc,
)
from pgbackup_verify.facts.dumps.plainscan import PlainDumpScanner

BLK_DATA, BLK_BLOBS = 1, 3
_OUT = 1 << 20  # most decompressed bytes held at once
_INFLATE_ERROR: type[Exception] = isal_zlib.IsalError  # type: ignore[assignment]  # the stub says instance
_TAIL = 16  # the end of a block's text kept to find its terminator
_SETTINGS = ("ENCODING", "STDSTRINGS")  # what pg_restore writes first, and the scanner reads names by


class _Blocks(_Reader):
    """The archive's primitives (customfmt._Reader), and the chunk sequences of its data blocks."""

    def chunks(self) -> Callable[[], bytes]:
        """A reader of one chunk sequence: each call the next chunk, b"" after the last."""
        done = False

        def next_chunk() -> bytes:
            nonlocal done
            if done:
                return b""
            n = self.int()
            if n < 0 or n > 1 << 30:  # pg_dump writes chunks of its buffer size
                raise ArchiveFormatError(f"implausible data chunk length {n}")
            if n == 0:
                done = True
                return b""
            return self.bytes(n)
        return next_chunk

    def skip_chunks(self) -> None:
        next_chunk = self.chunks()
        while next_chunk():
            pass


def _lines(next_chunk: Callable[[], bytes], compressed: bool) -> int:
    """Rows of one block's data; its decompressed text is never held whole.

    pg_dump stores the COPY data with its terminator, `\\.` and two blank lines (dumpTableData_copy):
    the rows are the lines before it. A block without it is not one this reader knows.
    """
    count, tail = 0, b""
    d = isal_zlib.decompressobj() if compressed else None
    while chunk := next_chunk():
        pieces = [chunk] if d is None else [d.decompress(chunk, _OUT)]
        while d is not None and d.unconsumed_tail:
            pieces.append(d.decompress(d.unconsumed_tail, _OUT))
        for out in pieces:
            count += out.count(b"\n")
            tail = out[-_TAIL:] if len(out) >= _TAIL else (tail + out)[-_TAIL:]
    if d is not None:
        out = d.flush()
        count += out.count(b"\n")
        tail = (tail + out)[-_TAIL:]
        if not d.eof:
            raise ArchiveFormatError("a data block's compressed stream ends early (corrupt archive)")
    blank = len(tail) - len(tail.rstrip(b"\n"))  # the newline ending `\\.` and the blank lines after it
    body = tail[:len(tail) - blank]
    if blank == 0 or not body.endswith(b"\\.") or (len(body) > 2 and body[-3:-2] != b"\n") or (
            len(tail) == _TAIL and blank > _TAIL - 3):
        raise ArchiveFormatError("a data block without the COPY terminator pg_dump writes")
    return count - blank


def toc_scanner(toc: ArchiveToc, wanted: Collection[int] | None = None) -> PlainDumpScanner:
    """A scanner primed as pg_restore begins (the archive's encoding and string settings), noting the
    materialized views the restore refreshes (`wanted`: the dump ids a restore list keeps; None: all);
    its TABLE DATA entries' COPY statements are the caller's to add."""
    scan = PlainDumpScanner()
    for e in toc.entries:
        if (e.desc in _SETTINGS and e.defn) or (e.desc == "MATERIALIZED VIEW DATA"
                                                and (wanted is None or e.dump_id in wanted)):
            scan.feed(e.defn.encode("utf-8", "surrogateescape") + b"\n")
    scan.finish()
    return scan


def count_data_blocks(path: str | Path, wanted: Collection[int] | None = None,
                      deadline: float | None = None, toc: ArchiveToc | None = None) -> PlainDumpScanner:
    """A scanner holding the rows each TABLE DATA entry loads (as `pg_restore --data-only -f -` shows them).

    wanted: the dump ids a restore list (`-L`) keeps; None: all. The COPY statement of each entry goes
    through the plain-dump scanner, so targets are keyed exactly as for a plain dump; materialized
    views the restore refreshes are noted too. Raises ArchiveFormatError, OSError, TimeoutError.
    """
    toc = toc or read_archive_toc(path)
    if not toc.data_start:  # a directory or tar archive: its data files are pg_restore's to read
        raise ArchiveFormatError("not a custom-format archive: no data blocks after its table of contents")
    if toc.compression not in ("none", "gzip"):
        raise ArchiveFormatError(f"data blocks compressed with {toc.compression}: not read directly")
    by_id = {e.dump_id: e for e in toc.entries}
    keep = (lambda i: True) if wanted is None else (lambda i: i in wanted)
    scan = toc_scanner(toc, wanted)
    compressed = toc.compression == "gzip"
    with open(path, "rb", buffering=1 << 20) as f:
        f.seek(toc.data_start)
        blocks = _Blocks(f, toc.int_size, "a data block (truncated archive)")
        while kind := f.read(1):
            dump_id = blocks.int()
            entry = by_id.get(dump_id)
            if kind[0] == BLK_BLOBS:
                while blocks.int() != 0:  # each large object's oid, then its data
                    blocks.skip_chunks()
                continue
            if kind[0] != BLK_DATA or entry is None:
                raise ArchiveFormatError(f"unknown data block (type {kind[0]}, dump id {dump_id})")
            if entry.desc != "TABLE DATA" or not keep(dump_id):
                blocks.skip_chunks()
                continue
            rows = _lines(blocks.chunks(), compressed)
            if not scan.copy_rows(entry.copy_stmt.encode("utf-8", "surrogateescape"), rows):
                raise ArchiveFormatError(f"TABLE DATA {entry.tag!r}: no COPY statement the scanner reads")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("row count stopped by the time limit ([drill].time_limit_seconds)")
    return scan


def restore_list_ids(args: list[str] | tuple[str, ...]) -> set[int] | None:
    """The dump ids a `-L FILE` restore list keeps (pg_restore's own reading: a number, then ';')."""
    if not args:
        return None
    if len(args) != 2 or args[0] != "-L":
        raise ArchiveFormatError(f"pg_restore arguments {args!r}: not a restore list")
    ids: set[int] = set()
    for line in Path(args[1]).read_text(encoding="utf-8", errors="replace").splitlines():
        head = line.strip().split(";", 1)[0].strip()
        if head.isdigit():
            ids.add(int(head))
    return ids


def archive_rows(path: str | Path, extra_args: Sequence[str] = (), deadline: float | None = None,
                 started: Callable[[subprocess.Popen[bytes]], None] | None = None,
                 toc: ArchiveToc | None = None) -> ArchiveRows:
    """The archive's rows per table: from its data blocks where this reader knows them, else through
    `pg_restore --data-only` (customfmt.count_archive_rows). A damaged block is left to pg_restore,
    whose own message then names what is wrong. `toc`: the archive's, when the caller has read it."""
    start = time.monotonic()
    try:
        scan = count_data_blocks(path, restore_list_ids(list(extra_args)), deadline, toc)
    except TimeoutError as e:
        return ArchiveRows(PlainDumpScanner(), str(e), 0, time.monotonic() - start)
    except (ArchiveFormatError, OSError, _INFLATE_ERROR):
        return count_archive_rows(path, extra_args, deadline, started)
    return ArchiveRows(scan, None, 0, time.monotonic() - start, "counted from its blocks directly")
