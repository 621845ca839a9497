"""Writing files safely as root: never through a link someone planted, never half a file.

`open_regular` reads a file that must still be the regular file a listing saw (never a FIFO that
blocks, never a device). `atomic_write` writes a fresh temp file (mkstemp: unpredictable name, O_EXCL, 0600) in the same
directory and renames it over the destination; rename replaces a planted symlink instead of
writing through it. `check_dir_private_enough` refuses a reports directory that other users may
write into, since pytest-html and junitxml open their own files there by name.

Reports are private: what the suite writes is 0600 in a 0700 directory (`make_private` brings
pytest-html's and junitxml's own files, and those of older versions, to the same modes). With a
reports group, 0640 in 0750 and that group.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


class UnsafeDirectory(Exception):
    """str() names the directory and the fix."""


def _replace(path: Path, write: Callable[[BinaryIO], None], mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


FILE_MODE, DIR_MODE = 0o600, 0o700  # without a reports group
GROUP_FILE_MODE, GROUP_DIR_MODE = 0o640, 0o750


def atomic_write(path: Path, data: bytes | str, mode: int = FILE_MODE) -> None:
    raw = data.encode("utf-8") if isinstance(data, str) else data

    def write(f: BinaryIO) -> None:
        f.write(raw)

    _replace(path, write, mode)


def atomic_copy(src: Path, dst: Path, mode: int = FILE_MODE) -> None:
    def copy(out: BinaryIO) -> None:
        with open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)  # streamed: a report may be large

    _replace(dst, copy, mode)


def open_append(path: Path) -> int:
    """An fd for appending to `path` (created 0600), refusing a symlink at the end of the path."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"'{path}' is not a regular file")
    return fd


def open_regular(path: str | os.PathLike[str], follow: bool = True, buffering: int = -1) -> BinaryIO:
    """Open for reading a file that must be a regular file, as it is at the moment of opening: a FIFO put
    in its place after the listing does not block the open (O_NONBLOCK), and the type is re-checked on
    the open descriptor (fstat), so a FIFO, socket or device is refused with an OSError. `follow=False`
    also refuses a symlink put there (O_NOFOLLOW), for a name the listing saw as a plain file."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            raise OSError(e.errno, "replaced by a symlink after the directory was listed", str(path)) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
                else "not a regular file"
            raise OSError(errno.EINVAL, f"{kind}, not a regular file (swapped after the listing?)", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def check_dir_private_enough(path: Path, what: str) -> None:
    """Refuse a directory that another user can write into (the suite writes there, often as root)."""
    st = os.stat(path)
    if st.st_mode & 0o022 and st.st_uid == os.geteuid():
        raise UnsafeDirectory(f"{what} '{path}' is writable by other users (mode {stat.S_IMODE(st.st_mode):o}); "
                              f"run: chmod go-w '{path}'")
    if st.st_mode & 0o022 or (st.st_uid not in (0, os.geteuid())):
        raise UnsafeDirectory(f"{what} '{path}' can be written by other users (owner uid {st.st_uid}, mode "
                              f"{stat.S_IMODE(st.st_mode):o}); use a directory owned by this user, not shared")



def make_private(directory: Path, gid: int | None = None) -> None:
    """`directory` 0700 and every regular file in it 0600 (0750/0640 and group `gid` with one), for
    what this user owns; links and other users' files are left alone, never followed."""
    dir_mode, file_mode = (DIR_MODE, FILE_MODE) if gid is None else (GROUP_DIR_MODE, GROUP_FILE_MODE)
    _restrict(directory, dir_mode, gid, os.O_DIRECTORY)
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                _restrict(Path(entry.path), file_mode, gid, 0)


def _restrict(path: Path, mode: int, gid: int | None, flags: int) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | flags)
    except OSError:
        return  # gone meanwhile (rotation), a link, or not ours to open
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            return
        if gid is not None and st.st_gid != gid:
            os.fchown(fd, -1, gid)
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
