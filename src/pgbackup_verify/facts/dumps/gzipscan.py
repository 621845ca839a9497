"""Streaming verification of a plain-SQL dump, compressed (gzip, zstd, xz, lz4, bzip2) or not.

One pass, flat memory: the payload is decompressed in pieces of up to 256 KiB (compression.py: python-isal's
igzip reader for gzip, 5x faster than `gzip -t` here, see benchmarks/bench_verify.py; zstandard,
lzma, lz4.frame, bz2 for the others, each with its own integrity check) and thrown
away, except a small head (for the pg_dump header) and a small tail window (for the
footer). The tail is a window and not the last line because pg_dump 15.14+ writes
`\\unrestrict <key>` AFTER `-- PostgreSQL database dump complete`.

The scanner takes any readable binary stream plus a description, so the restore drill
and the offsite reader can verify what they stream (`rclone cat`, a pipe) the same way.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pgbackup_verify.facts.dumps.compression import (
    COMPRESSORS,
    MAGIC_BYTES,
    PayloadError,
    compression_of,
    payload_pieces,
    payload_reader,
)
from pgbackup_verify.safefs import open_regular

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

# Output piece size: 256 KiB was as fast as 1 MiB here and keeps ~1.5 MB off the peak RSS.
CHUNK = 1 << 18
HEAD_BYTES = 8192  # the header, \restrict and the "Dumped from/by" lines fit easily
TAIL_BYTES = 4096  # footer + \unrestrict + trailing blank lines
GZIP_MAGIC = b"\x1f\x8b"
CUSTOM_MAGIC = b"PGDMP"  # pg_dump -Fc archive
HEADER = "-- PostgreSQL database dump"
FOOTER = "-- PostgreSQL database dump complete"
# pg_dumpall writes the whole cluster (roles, tablespaces, every database) under its own header.
# pg_dump's archive formats (-Fc, -Fd, -Ft): judged through pg_restore, never scanned as SQL text.
ARCHIVE_FORMATS = ("custom", "directory", "tar")
CLUSTER_HEADER = "-- PostgreSQL database cluster dump"
CLUSTER_FOOTER = "-- PostgreSQL database cluster dump complete"


@dataclass(frozen=True)
class DumpScan:
    """What one pass over a dump showed. `valid` is about the compression layer only."""

    path: str  # file path or the stream's description
    # "gzip", "zstd", "xz", "lz4", "bzip2" (compressed plain SQL), "plain", "custom" / "directory" / "tar"
    # (pg_dump -Fc/-Fd/-Ft, read through pg_restore), "empty", "unknown", "unreadable"
    format: str
    compressed_bytes: int  # bytes read from the file/stream
    payload_bytes: int  # decompressed bytes, up to the error if any
    valid: bool  # the stream decompressed to its end with CRC and length correct
    error: str | None  # why it is not valid, one line
    header_found: bool  # the payload starts with pg_dump's (or pg_dumpall's) header comment
    # The first meaningful payload line when it is pg_dump's header, else "": a file that is not a
    # dump (a link to a root-only file, say) never has a line of it shown in a report.
    header_line: str
    footer_found: bool  # "-- PostgreSQL database dump complete" (or the cluster one) in the tail window
    dumped_from: str  # "15.20 (Debian ...)" from "-- Dumped from database version ...", or ""
    dumped_by: str  # pg_dump version from the header, or ""
    seconds: float
    cluster: bool = False  # a pg_dumpall file (cluster header): roles and every database, or globals only

    @property
    def compressed(self) -> bool:
        return self.format in COMPRESSORS

    @property
    def name(self) -> str:
        return Path(self.path).name

    def is_good(self, min_payload_bytes: int) -> bool:
        """A restorable-looking dump: intact stream, header, footer, enough payload."""
        return (self.valid and self.header_found and self.footer_found
                and self.payload_bytes >= min_payload_bytes)

    def problems(self, min_payload_bytes: int) -> list[str]:
        """Why it is not good, each a short phrase for a failure message."""
        out = []
        if not self.valid:
            out.append(self.error or "invalid")
        if self.valid or self.compressed:
            if self.payload_bytes < min_payload_bytes:
                out.append(f"payload {self.payload_bytes} bytes < minimum {min_payload_bytes}")
            if self.payload_bytes and not self.header_found:
                out.append(f"no pg_dump header (the first line is not {HEADER!r}; not shown)")
            if self.payload_bytes and not self.footer_found:
                out.append(f"no '{FOOTER}' line in the last {TAIL_BYTES} bytes (dump cut short)")
        return out


class _Counting(io.RawIOBase):
    """Raw reader over `stream` that first replays the peeked `prefix` and counts bytes."""

    def __init__(self, stream: IO[bytes], prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix
        self.count = len(prefix)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        # The stream's own bytes, not copied once more (zstandard reads by read(), see compression.py).
        if self._prefix or size < 0:
            return super().read(size) or b""
        data = self._stream.read(size) or b""
        self.count += len(data)
        return data

    def readinto(self, b: WriteableBuffer) -> int:
        view = memoryview(b).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        reader = getattr(self._stream, "readinto", None)
        if reader is not None:
            n = reader(view) or 0
        else:
            data = self._stream.read(len(view))
            n = len(data)
            view[:n] = data
        self.count += n
        return n


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        more = stream.read(n - len(buf))
        if not more:
            break
        buf += more
    return buf


def _format_of(magic: bytes) -> str:
    if not magic:
        return "empty"
    compression = compression_of(magic)
    if compression:
        return compression
    if magic.startswith(CUSTOM_MAGIC):
        return "custom"
    if magic.startswith((b"--", b"SET ", b"\\", b"\n")):
        return "plain"
    return "unknown"


def _header_facts(head: bytes) -> tuple[bool, str, str, str]:
    lines = head.decode("utf-8", "replace").splitlines()
    meaningful = [ln.strip() for ln in lines[:20] if ln.strip() and ln.strip() != "--"]
    first = meaningful[0] if meaningful else ""
    found = first in (HEADER, CLUSTER_HEADER)
    dumped_from = dumped_by = ""
    for ln in meaningful:
        if ln.startswith("-- Dumped from database version "):
            dumped_from = ln.removeprefix("-- Dumped from database version ")
        elif ln.startswith("-- Dumped by pg_dump version "):
            dumped_by = ln.removeprefix("-- Dumped by pg_dump version ")
    if not found:  # not pg_dump's: nothing of it is repeated (it may be any file the link pointed at)
        return False, "", "", ""
    return found, first[:120], dumped_from, dumped_by


def _footer_in(tail: bytes) -> bool:
    return any(ln.strip() in (FOOTER.encode(), CLUSTER_FOOTER.encode()) for ln in tail.splitlines())


STOPPED = "not read to its end within"  # the start of a time-limit error (see scan_stream)


def scan_stream(stream: IO[bytes], description: str, *, compressed: bool | None = True,
                seconds: float | None = None, setting: str = "[backups].read_timeout_seconds",
                until: float | None = None) -> DumpScan:
    """Verify a dump read from `stream`: compressed expected (True: any of compression.COMPRESSORS,
    told by its magic bytes), plain SQL (False), or whatever the magic bytes say (None).

    Never raises on bad content: a wrong or broken stream comes back as a fact. `seconds` bounds
    the read in wall-clock time (a few hundred bytes can inflate to terabytes); `setting` names the key
    that sets it, for the message; `until` (time.monotonic()) is the deadline when the limit started
    earlier than this read. No size limit: an honest dump of any size passes in its time.
    """
    started = time.perf_counter()
    deadline = until if until is not None else time.monotonic() + seconds if seconds is not None else None
    magic = _read_exact(stream, MAGIC_BYTES)
    fmt = _format_of(magic)
    raw = _Counting(stream, magic)
    if compressed is None:
        compressed = fmt in COMPRESSORS
    if (compressed and fmt not in COMPRESSORS) or fmt in ("custom", "empty"):
        return _not_scanned(description, fmt, magic, raw, started)
    reader = payload_reader(raw, fmt) if compressed else raw
    piece = payload_pieces(reader, CHUNK)
    head = bytearray()
    tail = b""
    payload = 0
    error = None
    try:
        while n := len(view := piece()):
            payload += n
            if len(head) < HEAD_BYTES:
                head += view[:min(n, HEAD_BYTES - len(head))]
            # Keep only the last TAIL_BYTES of payload seen so far (one copy when the piece holds them all).
            tail = bytes(view[n - TAIL_BYTES:]) if n >= TAIL_BYTES else (tail + bytes(view))[-TAIL_BYTES:]
            if deadline is not None and time.monotonic() > deadline:
                limit = f"{seconds:g} s" if seconds is not None else "its time limit"
                error = (f"{STOPPED} {limit} ({payload} bytes of payload from {raw.count} read): a "
                         f"decompression bomb or a stream that never ends? raise {setting} if it is honest")
                break
    except PayloadError as e:
        error = e.at(raw.count)
    except OSError as e:
        error = f"read error after {raw.count} bytes ({e})"
    header_found, header_line, dumped_from, dumped_by = _header_facts(bytes(head))
    return DumpScan(description, fmt, raw.count, payload, error is None, error, header_found,
                    header_line, _footer_in(tail), dumped_from, dumped_by, time.perf_counter() - started,
                    header_line == CLUSTER_HEADER)



def _not_scanned(description: str, fmt: str, magic: bytes, raw: _Counting, started: float) -> DumpScan:
    # No byte of a file that is not a dump is ever quoted (a link to a root-only file, say).
    why = {"custom": "a pg_dump custom-format archive, not compressed SQL (check it with pg_restore --list)",
           "empty": "file is empty (0 bytes), not even an empty compressed stream",
           "plain": "not a compressed file: plain SQL text",
           }.get(fmt, "not a compressed dump: no gzip, zstd, xz, lz4 or bzip2 magic at its start")
    return DumpScan(description, fmt, raw.count, 0, False, why, False, "", False, "", "",
                    time.perf_counter() - started)


def scan_file(path: str | Path, *, compressed: bool | None = True, follow: bool = True,
              seconds: float | None = None) -> DumpScan:
    """Verify one dump file on disk; unreadable files (a FIFO or device put in its place too: see
    safefs.open_regular) come back as an invalid scan."""
    p = Path(path)
    try:
        with open_regular(p, follow, buffering=0) as f:
            return scan_stream(f, str(p), compressed=compressed, seconds=seconds)
    except OSError as e:
        # "unreadable", not "unknown": the bytes were never seen, so nothing may be said about them.
        return DumpScan(str(p), "unreadable", 0, 0, False, f"cannot read ({e.strerror})", False, "", False,
                        "", "", 0.0)
