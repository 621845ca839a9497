"""Which compressor wrote a plain dump, and its payload as one decompressed stream.

Real hosts pipe `pg_dump` through gzip, zstd, xz, lz4 or bzip2. The bytes decide (magic numbers);
the file name is only a hint. Every format is read with a maintained binding at flat memory, and
each one's own integrity check does the judging: gzip CRC32 and length (python-isal), zstd frame
checksums where the writer stored them (`zstd` does by default), xz CRC/SHA (stdlib lzma), lz4
content checksums (`lz4` does by default), bzip2 block CRCs (stdlib bz2). A cut file ends before
the end-of-stream marker and is an error, never a quiet short payload.

`open_payload` is the one way to read a dump's payload, for the dump checks and the restore drill.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pgbackup_verify.facts.dumps.source import DumpSource

GZIP, ZSTD, XZ, LZ4, BZIP2 = "gzip", "zstd", "xz", "lz4", "bzip2"
# Magic numbers from each format's specification (RFC 1952, RFC 8878, xz-file-format, lz4 frame, bzip2).
MAGICS = ((GZIP, b"\x1f\x8b"), (ZSTD, b"\x28\xb5\x2f\xfd"), (XZ, b"\xfd7zXZ\x00"), (LZ4, b"\x04\x22\x4d\x18"),
          (BZIP2, b"BZh"))
MAGIC_BYTES = 6
COMPRESSORS = tuple(name for name, _ in MAGICS)
SUFFIXES = {".gz": GZIP, ".gzip": GZIP, ".zst": ZSTD, ".zstd": ZSTD, ".xz": XZ, ".lz4": LZ4, ".bz2": BZIP2}
READ_SIZE = 1 << 17  # stored bytes per read: 128 KiB input pieces avoid allocator churn (measurements.md)
# Payload bytes per call of an lzma/bz2/lz4 decompressor: a result that fits CPython's first 32 KiB output
# block is handed out as is (no join of blocks) and stays under malloc's mmap threshold, so no fresh pages
# are mapped and faulted in per piece. Measured on an xz scan of 60 MB payload: 2,055 page faults instead
# of 6,799 with 256 KiB, ~7% less CPU (bench_verify.py).
PIECE = 1 << 15


class Stored(Protocol):
    """The stored bytes: a file opened "rb", a pipe, a counting wrapper, a tar member."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class PayloadReader(Protocol):
    """What every binding's reader here offers: isal's IGzipFile, _ZstdReader, _Streams (xz, lz4, bzip2)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readinto(self, buffer: Any, /) -> int: ...

    def close(self) -> None: ...


def compression_of(head: bytes) -> str | None:
    """The compressor whose magic number starts `head`, or None."""
    return next((name for name, magic in MAGICS if head.startswith(magic)), None)


def named_compression(name: str) -> str | None:
    """The compressor a file name suggests (`.sql.zst` -> zstd): only a hint, the bytes decide."""
    lower = name.lower()
    return next((c for suffix, c in SUFFIXES.items() if lower.endswith(suffix)), None)


def compression_of_fmt(fmt: str) -> str | None:
    """"plain-zstd" (a DumpSource.fmt) or "zstd" (a DumpScan.format) -> "zstd"; plain/custom -> None."""
    name = fmt.removeprefix("plain-")
    return name if name in COMPRESSORS else None


def payload_reader(raw: Stored, compression: str | None) -> io.RawIOBase:
    """The decompressed payload of `raw` (the stored bytes), read in pieces.

    Concatenated members/frames/streams are read as one payload, as `gzip -dc` and `zstd -dc` do.
    Bad data surfaces from read()/readinto() as PayloadError (an OSError naming the format), whatever
    the binding raised, so every reader (the scan, the drill) catches one kind of error.
    """
    if compression is None:
        return _as_raw(raw)
    return _Judged(*_open(raw, compression), compression)


def _open(raw: Stored, compression: str) -> tuple[PayloadReader, tuple[type[BaseException], ...]]:
    """The binding's reader and what it raises on bad data. Each binding is imported when its format
    is met (an import costs ~1.5 MB of RSS, and most hosts use one compressor)."""
    if compression == GZIP:
        from isal import igzip, isal_zlib

        # isal's stub declares `error` an Exception instance; it is the exception class.
        return (igzip.IGzipFile(fileobj=io.BufferedReader(_as_raw(raw), READ_SIZE), mode="rb"),
                (isal_zlib.error, zlib.error))  # type: ignore[return-value]
    if compression == ZSTD:
        import zstandard

        return _ZstdReader(raw), (zstandard.ZstdError,)
    if compression == XZ:
        import lzma

        return _Streams(raw, lzma.LZMADecompressor), (lzma.LZMAError,)
    if compression == LZ4:
        import lz4.frame

        return _Streams(raw, lz4.frame.LZ4FrameDecompressor), (RuntimeError,)  # LZ4F_decompress failed ...
    if compression == BZIP2:
        import bz2

        return _Streams(raw, bz2.BZ2Decompressor), ()  # bad bzip2 data is an OSError without errno
    raise ValueError(f"unknown compression {compression!r}")


def open_payload(source: DumpSource, raw: Stored | None = None) -> io.BufferedReader:
    """A dump's decompressed payload stream (plain SQL), whatever compressor wrote it: read(n),
    readinto, and lines (iteration, readline). Bad data raises PayloadError (an OSError).

    `raw` is the source's stored stream when the caller already opened it (e.g. wrapped to count
    stored bytes for progress); by default `source.open()`. Closing the reader closes the source.
    """
    stored = raw if raw is not None else source.open()
    return io.BufferedReader(payload_reader(stored, compression_of_fmt(source.fmt)), READ_SIZE)


def payload_chunks(source: DumpSource, raw: Stored) -> io.RawIOBase:
    """The payload for a reader of large pieces only (the restore drill's 1 MiB reads): read(n) goes to
    the binding directly, with no buffer in between (open_payload's costs ~45% more CPU at 1 MiB reads
    of gzip, measured). A read may return less than asked; b"" is the end. Errors as open_payload's."""
    return payload_reader(raw, compression_of_fmt(source.fmt))



class PayloadError(OSError):
    """The compressed data is bad: cut short (truncated) or damaged; str() names the format."""

    def __init__(self, compression: str, truncated: bool, detail: str) -> None:
        self.compression, self.truncated, self.detail = compression, truncated, detail
        super().__init__(self.at(None))

    def at(self, offset: int | None) -> str:
        where = f" at byte {offset}" if offset is not None else ""
        if self.truncated:
            return f"{self.compression} stream ends early{where} (file truncated)"
        return f"{self.compression} data corrupt{where.replace(' at', ' near')} ({self.detail})"


def _judge(compression: str, e: BaseException) -> PayloadError:
    text = str(e).strip() or type(e).__name__
    truncated = isinstance(e, EOFError) or "truncated" in text or "end of file" in text.lower()
    return PayloadError(compression, truncated, text[:160])


class _Judged(io.RawIOBase):
    """A binding's reader whose errors come out as PayloadError; a failing disk stays an OSError."""

    def __init__(self, reader: PayloadReader, errors: tuple[type[BaseException], ...], compression: str) -> None:
        self._reader, self._compression = reader, compression
        self._errors: tuple[type[BaseException], ...] = (EOFError, OSError, *errors)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            return self._reader.readinto(b)
        except PayloadError:
            raise
        except self._errors as e:
            raise self._judged(e) from e

    def piece(self, view: memoryview) -> bytes | memoryview:
        """The next piece of payload, b"" at its end: the decompressor's own bytes where it hands them
        out (xz, lz4, bzip2: no copy into `view`), else read into `view`."""
        try:
            if isinstance(self._reader, _Streams):
                return self._reader.piece(len(view))
            return view[:self._reader.readinto(view) or 0]
        except PayloadError:
            raise
        except self._errors as e:
            raise self._judged(e) from e

    def _judged(self, e: BaseException) -> BaseException:
        if isinstance(e, OSError) and e.errno is not None:  # the disk or the pipe, not the data
            return e
        return _judge(self._compression, e)

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


def payload_pieces(reader: io.RawIOBase, size: int) -> Callable[[], bytes | memoryview]:
    """A function returning the next piece of `reader`'s payload (at most `size` bytes; empty at the end).

    For the scan, which only looks at the pieces: a piece is valid until the next call (it may live in
    one reused buffer), and what the binding hands out is not copied again (measured: ~4% of the CPU
    of an xz scan, bench_verify.py).
    """
    view = memoryview(bytearray(size))
    if isinstance(reader, _Judged):
        judged = reader
        return lambda: judged.piece(view)
    return lambda: view[:reader.readinto(view) or 0]


class _Decompressor(Protocol):
    """The decompressor objects of lzma, bz2 and lz4.frame (the zlib-style incremental API)."""

    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = -1, /) -> bytes: ...


class _Streams(io.RawIOBase):
    """Concatenated streams of one format, decoded by its decompressor object driven directly.

    Stored bytes go in 128 KiB pieces and at most PIECE bytes come out per call (flat
    memory); a new decompressor takes over after each stream's end marker. Input that ends inside
    a stream is an EOFError. Measured on xz: ~8% less CPU than lzma.LZMAFile (whose 8 KiB reads and
    extra copy cost), on par with `xz -t`.
    """

    def __init__(self, raw: Stored, new: Callable[[], _Decompressor]) -> None:
        self._raw, self._new = raw, new
        self._d = new()
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        data = self.piece(len(view))
        view[:len(data)] = data
        return len(data)

    def piece(self, size: int) -> bytes:
        """At most `size` (and PIECE) bytes of payload as the decompressor returned them; b"" at the end."""
        while True:
            if self._d.eof:
                rest = self._d.unused_data or self._raw.read(READ_SIZE)
                if not rest:
                    return b""  # the input ends right after a whole stream
                self._d, self._pending = self._new(), rest
            elif self._d.needs_input and not self._pending:
                self._pending = self._raw.read(READ_SIZE)
                if not self._pending:
                    raise EOFError("stream ends before its end-of-stream marker")
            data = self._d.decompress(self._pending, min(size, PIECE))
            self._pending = b""
            if data:
                return data

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _ZstdReader(io.RawIOBase):
    """zstd frames to their end, frame checksums verified; a stream cut inside a frame is an EOFError.

    zstandard's stream_reader (flat memory, frames read across) returns a short read where the input
    stops inside a frame instead of failing (as do read_to_iter and decompressobj, measured with
    zstandard 0.25), so the stored bytes pass through `_ZstdFrames` on their way in, which follows
    the frame structure and says at the end whether the last frame was whole.
    """

    def __init__(self, raw: Stored) -> None:
        import zstandard

        self._raw = raw
        self._frames = _ZstdFrames(raw)
        self._reader = zstandard.ZstdDecompressor().stream_reader(self._frames,  # type: ignore[arg-type]
                                                                  read_size=READ_SIZE,
                                                                  read_across_frames=True, closefd=False)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n: int = self._reader.readinto(b)
        if n == 0 and not self._frames.complete():
            raise EOFError("zstd stream cut inside a frame")
        return n

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
            self._raw.close()
        super().close()


_ZSTD_SKIPPABLE = 0x184D2A50  # ..0x184D2A5F: skippable frames (RFC 8878 3.1.2)


class _ZstdFrames(io.RawIOBase):
    """The stored bytes, passed through unchanged while their frame structure (RFC 8878) is followed:
    frame header, block headers (block contents skipped), checksum. Whole only at a frame boundary."""

    def __init__(self, raw: Stored) -> None:
        self._raw = raw
        self._state, self._buf, self._skip = "magic", b"", 0
        self._checksum = False
        self._lost = False  # bytes that are not zstd: the decompressor itself says why

    def readable(self) -> bool:
        return True

    def complete(self) -> bool:
        return self._lost or (self._state == "magic" and not self._buf and not self._skip)

    def read(self, size: int = -1, /) -> bytes:
        """What zstandard calls: the stored bytes as the stream returned them (RawIOBase.read would
        read into a new buffer and copy it out once more)."""
        data = self._raw.read(size) or b""
        if not self._lost:
            self._feed(memoryview(data))
        return data

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        into = getattr(self._raw, "readinto", None)
        if into is not None:  # straight into zstandard's buffer: no copy of the stored bytes
            n = into(view) or 0
        else:
            data = self._raw.read(len(view))
            n = len(data)
            view[:n] = data
        if not self._lost:
            self._feed(view[:n])
        return n

    def _need(self) -> int:
        return {"magic": 4, "fhd": 1, "block": 3, "checksum": 4, "skipsize": 4}.get(self._state, self._rest)

    def _feed(self, data: memoryview) -> None:
        i, n = 0, len(data)
        while i < n and not self._lost:
            if self._skip:
                k = min(self._skip, n - i)
                self._skip -= k
                i += k
                continue
            if self._state == "block" and not self._buf and n - i >= 3:
                # A block header whole in this piece, the common case: read it in place.
                self._block(data[i] | data[i + 1] << 8 | data[i + 2] << 16)
                i += 3
                continue
            need = self._need()
            take = min(need - len(self._buf), n - i)
            self._buf += bytes(data[i:i + take])
            i += take
            if len(self._buf) == need:
                field, self._buf = self._buf, b""
                self._advance(field)

    def _advance(self, field: bytes) -> None:
        value = int.from_bytes(field, "little")
        if self._state == "magic":
            if field == b"\x28\xb5\x2f\xfd":
                self._state = "fhd"
            elif value & 0xFFFFFFF0 == _ZSTD_SKIPPABLE:
                self._state = "skipsize"
            else:
                self._lost = True
        elif self._state == "fhd":
            fcs, single, dict_flag = value >> 6, value >> 5 & 1, value & 3
            self._checksum = bool(value >> 2 & 1)
            self._rest = (0 if single else 1) + (0, 1, 2, 4)[dict_flag] + ((1 if single else 0), 2, 4, 8)[fcs]
            self._state = "header" if self._rest else "block"
        elif self._state == "header":
            self._state = "block"
        elif self._state == "block":
            self._block(value)
        elif self._state == "checksum":
            self._state = "magic"
        elif self._state == "skipsize":
            self._skip = value
            self._state = "magic"

    def _block(self, value: int) -> None:
        """A block header (RFC 8878 3.1.1.2): its contents are skipped; the last one ends the frame."""
        last, kind, size = value & 1, value >> 1 & 3, value >> 3
        if kind == 3:
            self._lost = True
        self._skip = 1 if kind == 1 else size
        self._state = ("checksum" if self._checksum else "magic") if last else "block"

    _rest = 0


def _as_raw(stream: Stored) -> io.RawIOBase:
    if isinstance(stream, io.RawIOBase):
        return stream
    return RawStream(stream)


class RawStream(io.RawIOBase):
    """Any binary stream as a RawIOBase (io.BufferedReader and isal's reader fill buffers with readinto);
    read() goes straight through, without a copy into a buffer of RawIOBase's own."""

    def __init__(self, stream: Stored) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return bytes(self._stream.read(n))

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()
