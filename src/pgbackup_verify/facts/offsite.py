"""The offsite archive, read through rclone: list the archives, stream the PG member out of one.

Nothing is extracted to disk: `rclone cat` feeds tarfile in stream mode (`r|gz`), and the member is
handed on as a readable stream. Hostile members (absolute paths, `..`, links whose targets leave the
archive, devices) are never opened; they are reported. Links that stay inside the archive are fine.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import re
import subprocess
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, cast

from isal import igzip

from pgbackup_verify.config import OffsiteSection
from pgbackup_verify.facts import childenv
from pgbackup_verify.facts.dumps.compression import RawStream, named_compression
from pgbackup_verify.facts.dumps.gzipscan import DumpScan, scan_stream
from pgbackup_verify.facts.dumps.source import DumpSource, NoDumpFound
from pgbackup_verify.facts.tarcaps import ArchiveLimit, capped_tarinfo


class RcloneError(Exception):
    """rclone could not list or read the remote; str() is one line naming the remote."""


def _last_line(stderr: str, rc: int) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return re.sub(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\w+ ?: )?", "", lines[-1])[:300] if lines else f"exit {rc}"


@dataclass(frozen=True)
class Archive:
    remote: str
    name: str
    size: int
    mtime: float

    @property
    def path(self) -> str:
        sep = "" if self.remote.endswith((":", "/")) else "/"
        return f"{self.remote}{sep}{self.name}"


def _epoch(iso: str) -> float:
    # rclone prints nanoseconds; datetime takes at most microseconds.
    head, dot, rest = iso.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        iso = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def list_archives(o: OffsiteSection) -> list[Archive]:
    """Archives matching the glob in the remote path, oldest first."""
    try:
        res = subprocess.run([o.rclone, "lsjson", "--files-only", o.remote], capture_output=True, text=True,
                             timeout=300, check=False, env=childenv.rclone())
    except FileNotFoundError:
        raise RcloneError(f"rclone binary '{o.rclone}' not found; install rclone or set [offsite].rclone") from None
    if res.returncode != 0:
        raise RcloneError(f"rclone cannot list '{o.remote}': {_last_line(res.stderr, res.returncode)}")
    found = [Archive(o.remote, e["Path"], int(e["Size"]), _epoch(e["ModTime"])) for e in json.loads(res.stdout)
             if fnmatch.fnmatch(e["Path"], o.archive_glob)]
    return sorted(found, key=lambda a: a.mtime)


@dataclass(frozen=True)
class Listing:
    remote: str
    archive_glob: str
    archives: list[Archive]  # oldest first
    error: str = ""  # rclone could not list the remote

    @property
    def newest(self) -> Archive | None:
        return self.archives[-1] if self.archives else None


def listing(o: OffsiteSection) -> Listing:
    try:
        return Listing(o.remote, o.archive_glob, list_archives(o))
    except RcloneError as e:
        return Listing(o.remote, o.archive_glob, [], str(e))


_MAX_HOPS = 40  # links followed while resolving one name, as the kernel's limit for symlink loops


def _clean(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _inside(path: str, links: dict[str, str], hops: int = 0) -> bool | None:
    """Whether an archive-relative path stays inside the archive once the symlink members in
    `links` (clean name -> target) are followed on the way; None for a link loop."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    out: list[str] = []
    for i, part in enumerate(parts):
        if part == "..":
            if not out:
                return False
            out.pop()
            continue
        out.append(part)
        target = links.get("/".join(out))
        if target is not None:
            if hops >= _MAX_HOPS:
                return None
            if target.startswith("/"):
                return False
            return _inside("/".join([*out[:-1], target, *parts[i + 1:]]), links, hops + 1)
    return True


def _leaves(path: str, links: dict[str, str]) -> str:
    inside = _inside(path, links)
    return "" if inside else "a link loop" if inside is None else "outside the archive"


def name_reason(m: tarfile.TarInfo, links: dict[str, str]) -> str:
    """Why writing this member's name would land outside the archive ('' when it would not): an
    absolute name, `..`, or a parent directory that is a symlink member leaving the archive
    (`links`: the symlinks seen before it, as an extraction would have made them)."""
    if m.name.startswith("/"):
        return "absolute path"
    if ".." in m.name.split("/"):
        return "path traversal (..)"
    parent = _clean(m.name).rpartition("/")[0]
    where = _leaves(parent, links) if parent else ""
    return f"written through a link that leads {where}" if where else ""


def link_reason(m: tarfile.TarInfo, links: dict[str, str]) -> str:
    """Why a link member is hostile ('' when its target stays inside the archive): an absolute
    target, `..` past the archive's top, or a path through another link that leaves. `links`
    is every symlink of the archive: a link is followed after the extraction, not during it."""
    if m.linkname.startswith("/"):
        return f"{'symlink' if m.issym() else 'hardlink'} to {m.linkname}, outside the archive"
    name = _clean(m.name)
    # A symlink's target is relative to its own directory; a hardlink's to the archive's top.
    target = f"{name.rpartition('/')[0]}/{m.linkname}" if m.issym() else m.linkname
    where = _leaves(target, links)
    return f"{'symlink' if m.issym() else 'hardlink'} to {m.linkname}, {where}" if where else ""


def hostile_reason(m: tarfile.TarInfo, links: dict[str, str] | None = None) -> str:
    """Why a member must never be followed or written anywhere ('' for a safe member). Links that
    stay inside the archive are safe (a copy of /etc/nginx has them); `links` are the archive's
    symlinks (clean name -> target) to resolve targets and parent directories through."""
    links = links or {}
    reason = name_reason(m, links)
    if reason:
        return reason
    if m.issym() or m.islnk():
        return link_reason(m, links)
    if not (m.isreg() or m.isdir()):
        return "device, fifo or other special file"
    return ""


@dataclass
class MemberStream:
    """The PG dump inside an archive, as a readable stream, for the checks and the restore drill."""

    stream: IO[bytes]
    name: str
    size: int  # bytes of the member itself (the .sql.gz), from the tar header
    mtime: float
    archive: Archive

    @property
    def description(self) -> str:
        return f"{self.archive.path} member {self.name} ({self.size} B)"


@dataclass
class ArchiveScan:
    archive: Archive
    members: int = 0
    hostile: list[str] = field(default_factory=list)  # "name: reason"
    links_inside: int = 0  # symlinks and hardlinks whose targets stay inside the archive (fine)
    matches: list[str] = field(default_factory=list)  # safe regular members matching the member glob
    member_size: int | None = None
    member_mtime: float | None = None
    gzip: DumpScan | None = None  # None when the member could not be read to its end
    error: str = ""  # the archive could not be read to its end

    @property
    def member_read(self) -> bool:
        """The PG member was found and read whole, whatever came after it. A member whose stream
        broke where the archive itself broke was not read: the archive's read error says why."""
        return self.gzip is not None and (self.gzip.valid or not self.error)


READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)

class _Until(RawStream):
    """rclone's output as tarfile reads it, ending in TimeoutError (an OSError: a read error) at `deadline`:
    tarfile skips a member's data inside one call, which a check between members could not stop."""

    def __init__(self, stream: IO[bytes], deadline: float, seconds: float) -> None:
        super().__init__(stream)
        self._deadline, self._seconds = deadline, seconds

    def read(self, n: int = -1) -> bytes:
        if time.monotonic() > self._deadline:
            raise TimeoutError(f"not read to its end within {self._seconds:g} s ([offsite].read_timeout_seconds)")
        return super().read(n)


@contextlib.contextmanager
def _tar_stream(o: OffsiteSection, archive: Archive, seconds: float | None = None,
                whole: bool = False) -> Iterator[tarfile.TarFile]:
    """`rclone cat` into tarfile's stream mode; a read error caused by rclone is reported as rclone's.
    With `seconds`, reading stops with a TimeoutError after that much wall-clock time. With `whole`, once
    the caller has read every member, the rest of the gzip stream is read too, so that its trailer (CRC-32
    and length of the whole archive) is checked: tarfile stops at the end-of-archive blocks and never
    checks it, so a byte flipped outside the PG member (another component of the upload) went unseen."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([o.rclone, "cat", archive.path], stdout=subprocess.PIPE, stderr=err,
                                env=childenv.rclone())
        assert proc.stdout is not None
        failure: BaseException | None = None
        try:
            source = proc.stdout if seconds is None else \
                cast(IO[bytes], _Until(proc.stdout, time.monotonic() + seconds, seconds))
            if whole:
                with igzip.IGzipFile(fileobj=source, mode="rb") as gz, \
                        tarfile.open(fileobj=gz, mode="r|", tarinfo=capped_tarinfo()) as tf:
                    yield tf
                    while gz.read(1 << 16):  # to the trailer; in pieces, so trailing junk costs no memory
                        pass
            else:
                with tarfile.open(fileobj=source, mode="r|gz", tarinfo=capped_tarinfo()) as tf:
                    yield tf
        except READ_ERRORS as e:
            failure = e
        finally:
            proc.stdout.close()
            proc.kill()  # a reader that stopped early does not wait for the rest of the download
            rc = proc.wait()
        err.seek(0)
        msg = err.read().decode(errors="replace").strip()
    if isinstance(failure, ArchiveLimit | TimeoutError):  # this reader stopped: rclone's broken pipe follows
        raise failure
    if rc not in (0, -9) and msg:
        raise RcloneError(f"rclone cannot read '{archive.path}': {_last_line(msg, rc)}") from failure
    if failure:
        raise failure


@contextlib.contextmanager
def open_member(o: OffsiteSection, archive: Archive) -> Iterator[MemberStream | None]:
    """Stream the first safe member matching [offsite].member; None when there is none."""
    links: dict[str, str] = {}
    with _tar_stream(o, archive) as tf:
        for m in tf:
            if m.issym():
                links[_clean(m.name)] = m.linkname
            elif m.isreg() and not name_reason(m, links) and fnmatch.fnmatch(m.name, o.member):
                f = tf.extractfile(m)
                assert f is not None
                yield MemberStream(f, m.name, m.size, float(m.mtime), archive)
                return
        yield None


# What scan_archive says about the same bytes, as kept in the scan record: bump on any change to it (the
# member's own scanner has dumps.inventory.SCANNER_VERSION; the record names both).
ARCHIVE_SCANNER_VERSION = 2  # 2: the whole archive's gzip trailer (CRC-32, length) is checked


def remote_hash(o: OffsiteSection, archive: Archive) -> str:
    """The remote's own hash of the archive ("md5:...", "sha1:..."), or "" where it offers none.

    One file listed, with MD5 and SHA-1 asked for by name: a cloud remote keeps them as metadata; a
    local one computes them (one read, no decompression); every other hash type is left alone."""
    try:
        res = subprocess.run([o.rclone, "lsjson", "--files-only", "--hash-type", "MD5", "--hash-type", "SHA-1",
                              archive.path], capture_output=True, text=True, timeout=300, check=False,
                             env=childenv.rclone())
        entries = json.loads(res.stdout) if res.returncode == 0 else []
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return ""
    hashes = entries[0].get("Hashes") or {} if len(entries) == 1 and isinstance(entries[0], dict) else {}
    return next((f"{k}:{v}" for k, v in sorted(hashes.items()) if v), "")


def scan_archive(o: OffsiteSection, archive: Archive) -> ArchiveScan:
    """One streaming pass over the whole archive: every header checked, the first match verified.
    Link targets are judged at the end, against every symlink of the archive; nothing is followed."""
    scan = ArchiveScan(archive)
    links: dict[str, str] = {}
    link_members: list[tarfile.TarInfo] = []
    deadline = time.monotonic() + o.read_timeout_seconds
    try:
        with _tar_stream(o, archive, o.read_timeout_seconds, whole=True) as tf:
            for m in tf:
                scan.members += 1
                reason = name_reason(m, links)
                if reason:
                    scan.hostile.append(f"{m.name}: {reason}")
                elif m.issym() or m.islnk():
                    if m.issym():
                        links[_clean(m.name)] = m.linkname
                    link_members.append(m)
                elif not (m.isreg() or m.isdir()):
                    scan.hostile.append(f"{m.name}: device, fifo or other special file")
                elif m.isreg() and fnmatch.fnmatch(m.name, o.member):
                    scan.matches.append(m.name)
                    if len(scan.matches) == 1:
                        f = tf.extractfile(m)
                        assert f is not None
                        scan.member_size, scan.member_mtime = m.size, float(m.mtime)
                        # Bounded twice: the download by _Until, the member's own inflation here (a tiny
                        # download can inflate for hours).
                        scan.gzip = scan_stream(f, f"{archive.name}:{m.name}", seconds=o.read_timeout_seconds,
                                                setting="[offsite].read_timeout_seconds", until=deadline)
    except READ_ERRORS as e:
        scan.error = f"archive unreadable after {scan.members} members: {e}"
    except RcloneError as e:
        scan.error = str(e)
    for m in link_members:
        reason = link_reason(m, links)
        if reason:
            scan.hostile.append(f"{m.name}: {reason}")
        else:
            scan.links_inside += 1
    return scan


class _MemberReader(RawStream):
    """The member's bytes; closing it ends the rclone stream behind it."""

    def __init__(self, stream: IO[bytes], stack: contextlib.ExitStack) -> None:
        super().__init__(stream)
        self._stack = stack

    def close(self) -> None:
        if not self.closed:
            self._stack.close()  # ends the tar reader and rclone, the member's stream with them
        io.RawIOBase.close(self)


def member_source(o: OffsiteSection) -> DumpSource:
    """The PG member of the newest archive as the restore drill's input (read once, as a stream)."""
    found = listing(o)
    archive = found.newest
    if archive is None:
        raise NoDumpFound(f"no '{o.archive_glob}' archive in {o.remote}{f' ({found.error})' if found.error else ''}; "
                          "the drill has nothing offsite to restore")

    def _open() -> io.BufferedReader:
        stack = contextlib.ExitStack()
        member = stack.enter_context(open_member(o, archive))
        if member is None:
            stack.close()
            raise NoDumpFound(f"archive {archive.path} holds no safe member matching '{o.member}'")
        return io.BufferedReader(_MemberReader(member.stream, stack), 1 << 20)

    compression = named_compression(o.member)  # a stream: the member's name is all there is to go by
    fmt = f"plain-{compression}" if compression else "plain"
    return DumpSource(description=f"{archive.path} member {o.member}", name=archive.name, fmt=fmt,
                      size=None, payload_hint=None, open=_open, mtime=archive.mtime)
