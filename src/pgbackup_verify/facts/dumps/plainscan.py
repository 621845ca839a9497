"""COPY-aware scan of a plain SQL dump on its way into psql.

psql runs a backslash meta-command wherever one appears outside quotes and comments,
even after a statement on the same line (`SELECT 1; \\! rm -rf ...`). The scan refuses
every such line before psql sees it, and lets pass only COPY data (between
`COPY ... FROM stdin;` and `\\.`), where backslashes are escapes. While it is at it,
it counts the data rows of each COPY block: the row-fidelity check compares them with
the restored tables. psql's own `\\restrict` mode (with a key of ours) is the second lock.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

_COPY = re.compile(
    rb'COPY\s+((?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)(?:\.(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*))?)'
    rb'\s*(?:\([^;]*\))?\s+FROM\s+stdin;\s*$', re.IGNORECASE)
_RESTRICT = re.compile(rb"\\(?:un)?restrict\s+[A-Za-z0-9]+\s*$")
# A line without any of these leaves a line-start lexer state unchanged and holds no meta-command.
_SPECIAL = re.compile(rb"""['"$\\]|--|/\*""")
_DOLLAR = re.compile(rb"\$([A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$")
_IDENT_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$")
DUMP_COMPLETE = b"-- PostgreSQL database dump complete"


def _copy_end(buf: bytes, pos: int) -> int:
    """Start of the first complete `\\.` line at or after line start `pos`, or -1 (psql's rule)."""
    if buf.startswith((b"\\.\n", b"\\.\r\n"), pos):
        return pos
    i = pos
    while True:
        i = buf.find(b"\n\\.", i)
        if i == -1:
            return -1
        if buf.startswith((b"\n", b"\r\n"), i + 3):
            return i + 1
        i += 1


class MetaCommandRefused(Exception):
    """A backslash command outside COPY data; str() names the dump line."""

    def __init__(self, line_no: int, text: str) -> None:
        super().__init__(f"dump line {line_no}: psql meta-command refused: {text}")
        self.line_no = line_no
        self.text = text


def split_name(qualified: str) -> tuple[str, str]:
    """`public.item_00` / `"My Schema"."T"` -> (schema, table), unquoted."""
    parts = re.findall(r'"((?:[^"]|"")+)"|([^."]+)', qualified)
    names = [q.replace('""', '"') if q else p for q, p in parts]
    return (names[0], names[1]) if len(names) == 2 else ("public", names[0])


@dataclass
class PlainDumpScanner:
    """Feed it every line of the dump, in order; it returns what may go to psql."""

    line_no: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # COPY target as written -> data rows
    dropped_restrict: int = 0
    complete: bool = False  # saw pg_dump's closing comment
    recent: deque[tuple[int, bytes]] = field(default_factory=lambda: deque(maxlen=5000))
    _copy: str | None = None
    _copy_rows: int = 0
    _state: int = 0  # 0 code, 1 '...', 2 "...", 3 $tag$...$tag$, 4 /* ... */
    _estring: bool = False
    _tag: bytes = b""
    _depth: int = 0
    _stmt_open: bool = False  # code seen since the last top-level ';'
    _carry: bytes = b""  # an incomplete last line, kept for the next chunk

    def scan(self, line: bytes) -> bytes:
        """Return the line to send (a dropped `\\restrict` becomes an empty line, so numbers stay)."""
        self.line_no += 1
        if self._copy is not None:
            if line.startswith(b"\\.") and line.rstrip(b"\r\n") == b"\\.":
                self.rows[self._copy] = self.rows.get(self._copy, 0) + self._copy_rows
                self._copy = None
            else:
                self._copy_rows += 1
            return line
        self.recent.append((self.line_no, line[:300]))
        if self._state == 0 and not self._stmt_open:
            m = _COPY.match(line)
            if m:
                self._copy, self._copy_rows = m.group(1).decode(), 0
                return line
            if _RESTRICT.match(line):
                self.dropped_restrict += 1
                return b"\n"
            if line.startswith(DUMP_COMPLETE):
                self.complete = True
        if self._state == 0 and not _SPECIAL.search(line):
            if line.strip():
                self._stmt_open = not line.rstrip().endswith(b";")
            return line
        self._lex(line)
        return line

    def feed(self, chunk: bytes) -> list[bytes | memoryview]:
        """Scan a piece of the stream; return the pieces to send, in order.

        COPY data goes through in blocks: rows are counted with bytes.count and the
        terminator found with bytes.find, so the cost per row stays in C. SQL lines go
        one by one through scan().
        """
        buf = self._carry + chunk if self._carry else chunk
        out: list[bytes | memoryview] = []
        view, pos, n = memoryview(buf), 0, len(buf)
        while pos < n:
            if self._copy is not None:
                end = _copy_end(buf, pos)
                stop = buf.rfind(b"\n", pos) + 1 if end == -1 else buf.index(b"\n", end) + 1
                if stop <= pos:
                    break
                rows = buf.count(b"\n", pos, stop)
                self.line_no += rows
                if end == -1:
                    self._copy_rows += rows
                else:
                    self.rows[self._copy] = self.rows.get(self._copy, 0) + self._copy_rows + rows - 1
                    self._copy = None
                out.append(view[pos:stop])
                pos = stop
            else:
                nl = buf.find(b"\n", pos)
                if nl == -1:
                    break
                out.append(self.scan(buf[pos:nl + 1]))
                pos = nl + 1
        self._carry = buf[pos:]
        return out

    def finish(self) -> list[bytes]:
        """End of stream: scan a last line without newline; return what to send."""
        out = [self.scan(self._carry)] if self._carry else []
        self._carry = b""
        if self._copy is not None:  # stream ended inside COPY data: count what arrived
            self.rows[self._copy] = self.rows.get(self._copy, 0) + self._copy_rows
            self._copy = None
        return out

    @property
    def copy_target(self) -> str | None:
        """The COPY target whose data lines come next; None outside COPY data (read-only hook)."""
        return self._copy

    @property
    def between_statements(self) -> bool:
        """True when the lines scanned so far end a statement (nothing open: quote, comment, `;`)."""
        return self._copy is None and self._state == 0 and not self._stmt_open

    def line_text(self, line_no: int) -> str | None:
        for no, text in reversed(self.recent):
            if no == line_no:
                return text.decode(errors="replace").rstrip("\r\n")
            if no < line_no:
                break
        return None

    def _refuse(self, line: bytes) -> None:
        raise MetaCommandRefused(self.line_no, line.decode(errors="replace").rstrip("\r\n")[:200])

    def _lex(self, line: bytes) -> None:
        i, n = 0, len(line)
        while i < n:
            c = line[i]
            if self._state == 0:
                if c == 0x2D and line.startswith(b"--", i):  # comment to end of line
                    break
                if c == 0x2F and line.startswith(b"/*", i):
                    self._state, self._depth, i = 4, 1, i + 2
                    continue
                if c == 0x5C:  # backslash in code: psql would run it
                    self._refuse(line)
                if c == 0x27:
                    prev = line[i - 1] if i else 0
                    before = line[i - 2] if i > 1 else 0
                    self._estring = prev in (0x45, 0x65) and before not in _IDENT_CHARS
                    self._state = 1
                elif c == 0x22:
                    self._state = 2
                elif c == 0x24 and (i == 0 or line[i - 1] not in _IDENT_CHARS):
                    m = _DOLLAR.match(line, i)
                    if m:
                        self._state, self._tag, i = 3, m.group(0), m.end()
                        self._stmt_open = True
                        continue
                if c == 0x3B:
                    self._stmt_open = False
                elif c not in (0x20, 0x09, 0x0A, 0x0D):
                    self._stmt_open = True
                i += 1
            elif self._state == 1:
                j = line.find(b"'", i)
                if self._estring:
                    k = line.find(b"\\", i)
                    if k != -1 and (j == -1 or k < j):
                        i = k + 2
                        continue
                if j == -1:
                    return
                if line.startswith(b"''", j):
                    i = j + 2
                    continue
                self._state, i = 0, j + 1
            elif self._state == 2:
                j = line.find(b'"', i)
                if j == -1:
                    return
                self._state, i = 0, j + 1  # "" re-enters state 2 at once: same result
            elif self._state == 3:
                j = line.find(self._tag, i)
                if j == -1:
                    return
                self._state, i = 0, j + len(self._tag)
            else:
                j, k = line.find(b"*/", i), line.find(b"/*", i)
                if k != -1 and (j == -1 or k < j):
                    self._depth, i = self._depth + 1, k + 2
                elif j == -1:
                    return
                else:
                    self._depth, i = self._depth - 1, j + 2
                    if self._depth == 0:
                        self._state = 0
