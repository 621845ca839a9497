"""Decompression bombs written fast: gigabytes of zeros as a few megabytes of real gzip.

After a full flush deflate starts afresh, so 1 MiB of zeros compresses to the same bytes every time:
it is compressed once and written `mib` times, with gzip's own header and trailer (CRC-32, length)
around the raw deflate stream, so every reader sees a valid gzip file of that size.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

ZEROS = bytes(1 << 20)


def write_gzip_zeros(path: Path, mib: int, head: bytes = b"", tail: bytes = b"") -> Path:
    """A gzip file of `head`, `mib` MiB of zeros and `tail`."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc = zlib.crc32(head)
    with path.open("wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")  # gzip header: deflate, no name, no mtime
        f.write(co.compress(head) + co.flush(zlib.Z_FULL_FLUSH))
        block = co.compress(ZEROS) + co.flush(zlib.Z_FULL_FLUSH)
        for _ in range(mib):
            f.write(block)
            crc = zlib.crc32(ZEROS, crc)
        f.write(co.compress(tail) + co.flush())
        f.write(struct.pack("<II", zlib.crc32(tail, crc), (len(head) + (mib << 20) + len(tail)) & 0xFFFFFFFF))
    return path
