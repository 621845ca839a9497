"""A minimal streaming check of a gzipped plain pg_dump: valid gzip, payload size, footer.

Kept in one small function so the offsite checks can switch to the shared gzip scanner once it
lands; the contract is `verify_pg_gzip(readable) -> GzipFacts`. Never reads the whole file in
memory: 128 KiB input pieces, output capped, only a tail of the payload kept.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import BinaryIO

FOOTER = b"-- PostgreSQL database dump complete"
CHUNK = 128 * 1024
TAIL = 4096
# pg_dump 15.18+ writes `\unrestrict <key>` after the footer; blank lines and comments may follow too.
_AFTER_FOOTER_OK = re.compile(rb"^(\s*|\\unrestrict \S+\s*|--.*)$")


@dataclass(frozen=True)
class GzipFacts:
    compressed_bytes: int
    payload_bytes: int
    valid: bool
    error: str
    footer: bool  # the pg_dump completion footer ends the payload

    def describe(self) -> str:
        state = "valid gzip" if self.valid else f"INVALID gzip ({self.error})"
        return (f"{state}, {self.compressed_bytes} B compressed, {self.payload_bytes} B payload, "
                f"footer {'present' if self.footer else 'MISSING'}")


def footer_in_tail(tail: bytes) -> bool:
    """True when the footer is there and only blank lines, comments or \\unrestrict follow it."""
    at = tail.rfind(FOOTER)
    if at < 0:
        return False
    return all(_AFTER_FOOTER_OK.match(line) for line in tail[at + len(FOOTER):].split(b"\n"))


def verify_pg_gzip(stream: BinaryIO) -> GzipFacts:
    """Decompress `stream` (all gzip members, as gzip -d does) and check the pg_dump footer."""
    compressed = payload = 0
    tail = b""
    d = zlib.decompressobj(wbits=31)
    started = False  # a gzip member has begun and not yet ended
    try:
        while data := stream.read(CHUNK):
            compressed += len(data)
            while data:
                started = True
                out = d.decompress(data, CHUNK * 8)  # capped output: flat memory on huge payloads
                payload += len(out)
                tail = (tail + out)[-TAIL:]
                if d.eof:
                    data, started = d.unused_data, False
                    d = zlib.decompressobj(wbits=31)
                else:
                    data = d.unconsumed_tail
    except zlib.error as e:
        return GzipFacts(compressed, payload, False, f"corrupt gzip data: {e}", False)
    if compressed == 0:
        return GzipFacts(0, 0, False, "empty file, not even a gzip header", False)
    if started:
        return GzipFacts(compressed, payload, False, "truncated gzip stream: no end-of-stream marker", False)
    return GzipFacts(compressed, payload, True, "", footer_in_tail(tail))
