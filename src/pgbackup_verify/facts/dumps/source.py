"""What the drill restores: a readable dump stream plus its description.

The source is the newest local dump (`newest_dump`) or the offsite archive member
(`offsite.member_source`, whose `open()` streams from rclone). The drill never needs
more than `open()`, and a `path` only to let `pg_restore -j` seek.
"""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pgbackup_verify.config import BackupsSection
from pgbackup_verify.facts.dumps import pgarchive
from pgbackup_verify.facts.dumps.compression import (
    COMPRESSORS,
    GZIP,
    MAGIC_BYTES,
    compression_of,
    named_compression,
)
from pgbackup_verify.facts.dumps.gzipscan import CUSTOM_MAGIC
from pgbackup_verify.facts.dumps.inventory import take_inventory
from pgbackup_verify.safefs import open_regular

CUSTOM_RATIO = 6  # measured: pg_dump -Fc 119 MB for a 708 MB plain payload


class NoDumpFound(Exception):
    """No file to restore; str() names the directory and pattern."""


@dataclass(frozen=True)
class DumpSource:
    description: str  # shown in reports: file path, or archive + member
    name: str
    # "plain", "plain-gzip", "plain-zstd", "plain-xz", "plain-lz4", "plain-bzip2" (psql reads the payload)
    # | "custom", "directory", "tar" (ARCHIVE_FORMATS: pg_restore reads `path`)
    fmt: str
    size: int | None  # bytes of the stored (compressed) stream, when known
    payload_hint: int | None  # decompressed bytes, when known (gzip footer, inventory)
    open: Callable[[], io.BufferedIOBase]  # a buffered binary stream: a file opened "rb", a BufferedReader
    path: Path | None = None
    mtime: float | None = None

    def payload_estimate(self) -> int:
        """Bytes the restore will read at least; for the disk preflight and progress."""
        if self.payload_hint:
            return self.payload_hint
        return (self.size or 0) * (CUSTOM_RATIO if self.fmt in ("custom", "directory") else 1)


def detect_format(head: bytes, name: str) -> str:
    """The bytes decide; the name only for an empty head (a file still to be written, a stream)."""
    if head.startswith(CUSTOM_MAGIC):
        return "custom"
    compression = compression_of(head) or (None if head else named_compression(name))
    return f"plain-{compression}" if compression else "plain"


def _gzip_payload(path: Path, size: int) -> int | None:
    """The gzip footer holds the payload size modulo 4 GiB; lift it to at least the file size."""
    if size < 18:
        return None
    with open_regular(path) as f:
        f.seek(-4, 2)
        isize = struct.unpack("<I", f.read(4))[0]
    while isize < size:
        isize += 1 << 32
    return isize


def _open(path: Path) -> io.BufferedIOBase:
    f = open_regular(path)
    assert isinstance(f, io.BufferedReader)  # os.fdopen "rb" with buffering
    return f


# What each format is, in words: for init's target file and the README's table.
FORMAT_WORDS = {"custom": "pg_dump -Fc", "directory": "pg_dump -Fd, a directory per dump", "tar": "pg_dump -Ft",
                "plain": "plain SQL, uncompressed", **{f"plain-{c}": f"pg_dump piped through {c}" for c in COMPRESSORS}}


def format_of(path: Path) -> str:
    """A dump's format (DumpSource.fmt) from its bytes (a directory: from its toc.dat)."""
    if pgarchive.is_directory(path):
        return "directory"
    if pgarchive.is_tar_dump(path):
        return "tar"
    with open_regular(path) as f:  # a FIFO put in the dump's place is refused, never waited on
        head = f.read(MAGIC_BYTES)
    return detect_format(head, path.name)


def from_path(path: Path) -> DumpSource:
    st = path.stat()
    fmt = format_of(path)
    if fmt in ("directory", "tar"):  # pg_restore reads these from the path
        size, mtime = pgarchive.directory_stat(path) if fmt == "directory" else (st.st_size, st.st_mtime)
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))
        return DumpSource(description=f"{path} ({stamp}, {fmt} archive)", name=path.name, fmt=fmt, size=size,
                          payload_hint=None, open=lambda: _not_a_stream(path, fmt), path=path, mtime=mtime)
    payload = _gzip_payload(path, st.st_size) if fmt == f"plain-{GZIP}" else None
    if fmt == "plain":
        payload = st.st_size
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.st_mtime))
    return DumpSource(description=f"{path} ({stamp})", name=path.name, fmt=fmt, size=st.st_size,
                      payload_hint=payload, open=lambda: _open(path), path=path, mtime=st.st_mtime)


def _not_a_stream(path: Path, fmt: str) -> io.BufferedIOBase:
    raise NoDumpFound(f"{path} is a {fmt} archive: pg_restore reads it from its path, not as one stream")


def newest_dump(backups: BackupsSection) -> DumpSource:
    """The newest file matching [backups].pattern, by modification time: the same choice as the
    dump checks make (dumps.take_inventory), so the drill restores the dump they judged."""
    newest = take_inventory(backups).newest
    if newest is None:
        raise NoDumpFound(f"no file matches '{backups.pattern}' in {backups.directory}; "
                          "check [backups].directory and pattern, and that the nightly dump runs")
    return from_path(newest.path)
