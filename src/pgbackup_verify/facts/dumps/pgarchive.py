"""Directory (`pg_dump -Fd`, also what `pg_dump -j` writes) and tar (`pg_dump -Ft`) archives.

Both hold a `toc.dat` (the same table of contents as a custom archive) that names the file of every
entry with data: `NNNN.dat` (pg_dump 15 writes `NNNN.dat.gz` into a directory by default, 16 also
`.lz4` / `.zst`), and `blobs.toc`, which lists one `blob_OID.dat` per large object. An archive is
judged complete only if every file its TOC lists is there as a regular file; then `pg_restore -f -`
reads it whole through the dump scanner (customfmt.verify_archive), which is where a cut or damaged
data file (gzip, lz4 or zstd inside) fails.

A tar archive's member headers are checked the hostile way the offsite archives' are
(offsite.hostile_reason: no absolute path, no `..`, no link leaving the archive, no device); it is
never extracted, only streamed.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pgbackup_verify.facts.dumps import customfmt
from pgbackup_verify.facts.dumps.gzipscan import DumpScan
from pgbackup_verify.safefs import open_regular

DATA_SUFFIXES = ("", ".gz", ".lz4", ".zst")  # pg_dump's data file compressions (none, gzip, lz4, zstd)
BLOBS_TOC = "blobs.toc"
_BLOBS_TOC_MAX = 64 << 20  # one short line per large object; a bigger blobs.toc is not pg_dump's
TAR_BLOCK = 512


def is_directory(path: Path) -> bool:
    """path.is_dir() that says False where the path cannot be stat()ed (Path.is_dir raises on EACCES):
    the file's own read then reports what it can."""
    try:
        return stat.S_ISDIR(path.stat().st_mode)
    except OSError:
        return False


def is_directory_dump(path: Path) -> bool:
    """A directory holding a toc.dat: what pg_dump -Fd writes (toc.dat first, then the data files)."""
    try:
        return path.is_dir() and stat.S_ISREG((path / "toc.dat").lstat().st_mode)
    except OSError:
        return False


def is_tar_dump(path: Path) -> bool:
    """A POSIX tar file whose first member is toc.dat: what pg_dump -Ft writes."""
    try:
        with open_regular(path) as f:  # a FIFO put in the dump's place is refused, never waited on
            head = f.read(TAR_BLOCK)
    except OSError:
        return False
    return len(head) == TAR_BLOCK and head[257:262] == b"ustar" and head[:8] == b"toc.dat\x00"


def directory_stat(path: Path) -> tuple[int, float]:
    """(bytes of the regular files in the directory, newest mtime among them and the directory)."""
    size, mtime = 0, path.stat().st_mtime
    with os.scandir(path) as entries:
        for e in entries:
            st = e.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                size += st.st_size
                mtime = max(mtime, st.st_mtime)
    return size, mtime


@dataclass(frozen=True)
class ArchiveFiles:
    """What the TOC lists against what the archive holds."""

    fmt: str  # "directory" | "tar"
    listed: int  # data files the TOC (and blobs.toc) lists
    missing: tuple[str, ...] = ()  # "3659.dat (TABLE DATA public.big)"
    hostile: tuple[str, ...] = ()  # tar members never to be followed: "name: reason"
    error: str | None = None  # the TOC itself could not be read

    def problem(self) -> str | None:
        """One line for the finding, or None when the archive is complete."""
        if self.error:
            return f"{self.fmt} archive unreadable: {self.error}"
        if self.hostile:
            return (f"tar archive holds {len(self.hostile)} member(s) pg_dump never writes: "
                    f"{', '.join(self.hostile[:3])}")
        if self.missing:
            more = len(self.missing) - 3
            shown = ", ".join(self.missing[:3]) + (f" and {more} more" if more > 0 else "")
            return (f"{self.fmt} archive incomplete: {len(self.missing)} of {self.listed} data file(s) listed in "
                    f"toc.dat missing: {shown}")
        return None


def _what(e: customfmt.TocEntry) -> str:
    where = f"{e.namespace}." if e.namespace else ""
    return f"{e.desc} {where}{e.tag}"


def _blob_files(text: str) -> list[str]:
    """blobs.toc: one "OID blob_OID.dat" line per large object."""
    return [line.split(" ", 1)[1].strip() for line in text.splitlines() if " " in line]


def _data_file(e: customfmt.TocEntry) -> str | None:
    """Where an entry's data is. The large objects' entry (BLOBS) is always blobs.toc; a tar TOC still
    names an NNNN.dat for it that pg_dump never writes."""
    if not e.data_file:
        return None
    return BLOBS_TOC if e.desc == "BLOBS" else e.data_file


def _present(name: str, have: set[str]) -> bool:
    return any(name + suffix in have for suffix in DATA_SUFFIXES)


def directory_files(path: Path) -> ArchiveFiles:
    """Every data file toc.dat (and blobs.toc) lists, looked up in the directory (lstat only)."""
    try:
        toc = customfmt.read_archive_toc(path)
        with os.scandir(path) as entries:
            have = {e.name for e in entries if e.is_file(follow_symlinks=False)}
    except (customfmt.ArchiveFormatError, OSError) as e:
        return ArchiveFiles("directory", 0, error=str(e))
    listed, missing = 0, []
    for entry in toc.entries:
        name = _data_file(entry)
        if not name:
            continue
        listed += 1
        if not _present(name, have):
            missing.append(f"{name} ({_what(entry)})")
        elif name == BLOBS_TOC:
            try:
                with (path / BLOBS_TOC).open("rb") as f:
                    blobs = _blob_files(f.read(_BLOBS_TOC_MAX).decode("utf-8", "replace"))
            except OSError as e:
                return ArchiveFiles("directory", listed, error=f"{BLOBS_TOC}: {e.strerror}")
            listed += len(blobs)
            missing += [f"{b} (large object)" for b in blobs if not _present(b, have)]
    return ArchiveFiles("directory", listed, tuple(missing))


def tar_files(path: Path) -> ArchiveFiles:
    """One streaming pass over the tar: every member header checked, toc.dat read, the listed files looked up."""
    from pgbackup_verify.facts.offsite import READ_ERRORS, hostile_reason  # offsite imports this package

    have: set[str] = set()
    hostile: list[str] = []
    toc: customfmt.ArchiveToc | None = None
    blobs: list[str] = []
    try:
        with open_regular(path) as raw, tarfile.open(fileobj=raw, mode="r|") as tf:
            for m in tf:
                reason = hostile_reason(m) or ("" if m.isreg() else "not a regular file")
                if reason or "/" in m.name:
                    hostile.append(f"{m.name}: {reason or 'a path below the top'}")
                    continue
                have.add(m.name)
                if m.name == "toc.dat" and toc is None:
                    toc = customfmt.read_archive_toc(_member(tf, m))
                elif m.name == BLOBS_TOC and m.size <= _BLOBS_TOC_MAX:
                    blobs = _blob_files(_member(tf, m).read().decode("utf-8", "replace"))
    except (customfmt.ArchiveFormatError, *READ_ERRORS) as e:
        return ArchiveFiles("tar", 0, error=str(e) or type(e).__name__)
    if toc is None:
        return ArchiveFiles("tar", 0, error="no toc.dat member")
    listed = [(name, _what(e)) for e in toc.entries if (name := _data_file(e))]
    if any(name == BLOBS_TOC for name, _ in listed):
        listed += [(b, "large object") for b in blobs]
    missing = tuple(f"{name} ({what})" for name, what in listed if not _present(name, have))
    return ArchiveFiles("tar", len(listed), missing, tuple(hostile))


def _member(tf: tarfile.TarFile, m: tarfile.TarInfo) -> IO[bytes]:
    f = tf.extractfile(m)
    assert f is not None  # a regular member always has a file object
    return f


def verify(path: Path, fmt: str) -> DumpScan:
    """A directory or tar archive: complete by its TOC, then read whole through pg_restore."""
    files = directory_files(path) if fmt == "directory" else tar_files(path)
    try:
        size = directory_stat(path)[0] if fmt == "directory" else path.stat().st_size
    except OSError:
        size = 0
    problem = files.problem()
    if problem:
        return DumpScan(str(path), fmt, size, 0, False, problem, False, "", False, "", "", 0.0)
    scan = customfmt.verify_archive(path)
    return dataclasses.replace(scan, format=fmt, compressed_bytes=size)
