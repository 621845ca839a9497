"""COPY-aware scan of a plain SQL dump on its way into psql, lexed the way psql lexes it.

psql runs a backslash meta-command wherever one appears outside quotes and comments,
even after a statement on the same line (`SELECT 1; \\! rm -rf ...`). The scan refuses
every such line before psql sees it, and lets pass only COPY data, where backslashes are
escapes. Where COPY data starts is psql's decision, so the scan makes it the same way:
psql reads the dump line by line (without the newline), splits statements at a `;`
outside quotes, comments, parentheses and `BEGIN ... END` function bodies, sends each
one, and when the server answers a `COPY ... FROM STDIN` it reads the data from the next
line up to a line `\\.`, then goes on with the rest of the line that held the `;`. So a
COPY statement may span lines and its names may hold `;`, `(`, `)`, quotes, dots,
newlines and any unicode; a data row is never read as SQL.

While it is at it, the scan counts what the dump loads: the data rows of each COPY block
and the rows of each `INSERT ... VALUES` (dumps written with --inserts, --column-inserts
or --rows-per-insert), by the target table as written; the large objects it creates
(`lo_create`) and the materialized views it refreshes. psql's own `\\restrict` mode (with
a key of ours) is the second lock.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

_RESTRICT = re.compile(rb"\\(?:un)?restrict\s+[A-Za-z0-9]+\s*$")
# A code line without any of these leaves the lexer state unchanged and neither starts nor ends a statement.
_SPECIAL = re.compile(rb"""['"$\\;()]|--|/\*""")
_DOLLAR = re.compile(rb"\$([A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$")
_IDENT = re.compile(rb"[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*")
_WS = re.compile(rb"[ \t\n\r\f]+")
# Code bytes that are neither whitespace nor the start of anything the lexer tracks (numbers, operators, ...).
_OTHER = re.compile(rb"[^-/'\"$\\;()A-Za-z_\x80-\xff \t\n\r\f0-9.]+")
# Numbers whole, so that the exponent of 1e5 is not taken for a word (psql counts words, see _word).
_NUMBER = re.compile(rb"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# psql's {quotecontinue}: a string goes on after whitespace holding a newline (here only \r: psql strips \n).
_QUOTE_CONTINUE = re.compile(rb"(?:[ \t\f]|--[^\n\r]*)*[\n\r](?:[ \t\n\r\f]+|--[^\n\r]*[\n\r])*'")
_COMMENT_END = re.compile(rb"[\r\n]")
# Bytes of words and numbers, and how flex splits such a run into tokens (see _word_before).
_RUN_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$" + bytes(range(0x80, 0x100)))
_RUN_TOKENS = re.compile(rb"\$[0-9]*|[0-9]+(?:[eE][+-]?[0-9]+)?|[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*")
# Tokens of one captured (lexically complete) statement.
_TOKEN = re.compile(rb"""[ \t\n\r\f]+|--[^\n\r]*|/\*.*?\*/|("(?:[^"]|"")*")"""
                    rb"""|([A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*)|('(?:[^']|'')*')|(.)""", re.S)
_LO_CREATE = re.compile(rb"SELECT\s+pg_catalog\.lo_create\(\s*'(\d+)'\s*\)\s*;", re.I)
_SET = re.compile(rb"SET\s+(?:SESSION\s+)?(client_encoding|standard_conforming_strings)\s*(?:=|TO)\s*"
                  rb"'?([A-Za-z0-9_-]+)'?", re.I)
DUMP_COMPLETE = b"-- PostgreSQL database dump complete"
MAX_STATEMENT = 1 << 20  # bytes of a COPY/INSERT head kept to read its target; pg_dump's are far smaller
_KINDS = {b"copy": "copy", b"insert": "insert", b"refresh": "refresh", b"select": "select", b"set": "set"}
# PostgreSQL client encodings whose bytes Python decodes under another name.
_ENCODINGS = {"utf8": "utf-8", "unicode": "utf-8", "latin1": "latin-1", "sql_ascii": "utf-8", "win1252": "cp1252",
              "euc_jp": "euc_jp", "win1251": "cp1251", "koi8r": "koi8_r", "latin9": "iso8859_15"}
_CODE, _STRING, _QIDENT, _DOLLARQ, _COMMENT, _AFTER_STRING = range(6)


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


CLUSTER_DUMP = "a pg_dumpall cluster dump"
_CONNECT = re.compile(r"\\c(?:onnect)?\s")


class MetaCommandRefused(Exception):
    """A backslash command outside COPY data; str() names the dump line (and a pg_dumpall `\\connect`)."""

    def __init__(self, line_no: int, text: str) -> None:
        # Outside a pg_dumpall file (facts/drill/clusterdump.py reads its own \connect lines) a switch
        # between databases (pg_dump -C) is refused like any meta-command, but said for what it is.
        what = f" ({CLUSTER_DUMP} switching databases)" if _CONNECT.match(text) else ""
        super().__init__(f"dump line {line_no}: psql meta-command refused: {text}{what}")
        self.line_no = line_no
        self.text = text


class StatementRefused(MetaCommandRefused):
    """A statement the scan cannot follow the way psql would (so it cannot tell SQL from data)."""

    def __init__(self, line_no: int, text: str, why: str) -> None:
        Exception.__init__(self, f"dump line {line_no}: statement refused ({why}): {text}")
        self.line_no = line_no
        self.text = text


def _word_before(line: bytes, j: int) -> bytes:
    """The token that ends right before line[j], when it is a word, number or parameter; else b''."""
    k = j
    while k > 0 and line[k - 1] in _RUN_BYTES:
        k -= 1
    last = b""
    for m in _RUN_TOKENS.finditer(line, k, j):
        last = m.group(0)
    return last


def _glued_to_number(line: bytes, k: int) -> bool:
    """Does a number end right before line[k] (`1e`, `1.e`, `$1e`)?"""
    before = line[k - 1] if k > 0 else 0
    if before == 0x2E:
        before = line[k - 2] if k > 1 else 0
    return 0x30 <= before <= 0x39


def _tokens(stmt: bytes) -> list[tuple[str, bytes]]:
    """('q', quoted identifier) | ('i', word) | ('s', string) | ('p', one byte); whitespace/comments dropped."""
    out = []
    for m in _TOKEN.finditer(stmt):
        if m.group(1) is not None:
            out.append(("q", m.group(1)[1:-1].replace(b'""', b'"')))
        elif m.group(2) is not None:
            out.append(("i", m.group(2)))
        elif m.group(3) is not None:
            out.append(("s", m.group(3)[1:-1].replace(b"''", b"'")))
        elif m.group(4) is not None:
            out.append(("p", m.group(4)))
    return out


def _is_word(tok: tuple[str, bytes] | None, *words: bytes) -> bool:
    return tok is not None and tok[0] == "i" and tok[1].lower() in words


def _name_at(toks: list[tuple[str, bytes]], i: int) -> tuple[list[tuple[str, bytes]], int]:
    """A possibly qualified name starting at toks[i]: its parts and the index after it."""
    parts: list[tuple[str, bytes]] = []
    while i < len(toks) and toks[i][0] in ("q", "i"):
        parts.append(toks[i])
        if i + 1 < len(toks) and toks[i + 1] == ("p", b"."):
            i += 2
            continue
        return parts, i + 1
    return parts, i


def _skip_parens(toks: list[tuple[str, bytes]], i: int) -> int:
    depth = 0
    while i < len(toks):
        if toks[i] == ("p", b"("):
            depth += 1
        elif toks[i] == ("p", b")"):
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def split_name(qualified: str) -> tuple[str, str]:
    """`public.item_00` / `"My Schema"."T"` / `"a.b"."c;d"` -> (schema, table), as the server reads them."""
    parts, _ = _name_at(_tokens(qualified.encode()), 0)
    names = [_ident_text(p, "utf-8") for p in parts] or [qualified]
    return (names[-2], names[-1]) if len(names) >= 2 else ("public", names[-1])


def _ident_text(tok: tuple[str, bytes], encoding: str) -> str:
    # Unquoted names fold to lower case (ASCII letters only, as the server does in multibyte encodings).
    raw = tok[1] if tok[0] == "q" else tok[1].translate(_ASCII_LOWER)
    return raw.decode(encoding, "replace")


_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


@dataclass
class PlainDumpScanner:
    """Feed it every line of the dump, in order; it returns what may go to psql."""

    line_no: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # COPY/INSERT target as written -> rows it loads
    dropped_restrict: int = 0
    complete: bool = False  # saw pg_dump's closing comment
    recent: deque[tuple[int, bytes]] = field(default_factory=lambda: deque(maxlen=5000))
    targets: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # as written -> (schema, name)
    copy_blocks: int = 0
    insert_statements: int = 0
    uncounted: dict[str, str] = field(default_factory=dict)  # target as written -> why its rows are not counted
    large_objects: int = 0  # lo_create calls: one per large object pg_dump writes
    refreshed: list[str] = field(default_factory=list)  # REFRESH MATERIALIZED VIEW targets, as written
    _copy: str | None = None
    _copy_rows: int = 0
    _copy_text: bool = True  # text format: one line, one row
    _pending: deque[tuple[str, bool]] = field(default_factory=deque)  # COPY FROM STDIN sent, data not read yet
    _state: int = _CODE
    _estring: bool = False
    _tag: bytes = b""
    _depth: int = 0  # comment nesting
    _paren: int = 0  # psql's paren_depth
    _begin: int = 0  # psql's begin_depth (BEGIN ... END bodies of CREATE FUNCTION/PROCEDURE)
    _idents: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    _ident_count: int = 0
    _in_function: bool = False  # the statement is CREATE [OR REPLACE] FUNCTION|PROCEDURE
    _stmt_open: bool = False  # code seen since the last statement-ending ';'
    _kind: str | None = None  # what the open statement is, when the scan cares
    _cap: bytearray | None = None  # the open statement's text so far (its head, for INSERT)
    _cap_from: int = 0
    _ins_target: str | None = None
    _ins_rows: int = 0
    _heads: dict[bytes, tuple[str, int] | None] = field(default_factory=dict)  # INSERT head -> (target, rows)
    _std_strings: bool = True
    _encoding: str = "utf-8"
    _carry: bytes = b""  # an incomplete last line, kept for the next chunk

    def scan(self, line: bytes) -> bytes:
        """Return the line to send (a dropped `\\restrict` becomes an empty line, so numbers stay)."""
        self.line_no += 1
        if self._copy is not None:
            if line.startswith(b"\\.") and line.rstrip(b"\r\n") == b"\\.":
                self._end_copy(self._copy_rows)
            else:
                self._copy_rows += 1
            return line
        self.recent.append((self.line_no, line[:300]))
        if self._state == _CODE and not self._stmt_open:
            if _RESTRICT.match(line):
                self.dropped_restrict += 1
                return b"\n"
            if line.startswith(DUMP_COMPLETE):
                self.complete = True
        if (self._state == _CODE and self._stmt_open and self._ident_count >= 4 and not self._in_function
                and not _SPECIAL.search(line)):
            # Inside a statement, past the words that decide a function body: nothing here can change state.
            if self._cap is not None:
                self._capture(line, 0, len(line))
            return line
        self._lex(line)
        if self._pending and self._copy is None:
            self._copy, self._copy_text = self._pending.popleft()
            self._copy_rows = 0
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
                out.append(view[pos:stop])
                pos = stop
                if end == -1:
                    self._copy_rows += rows
                else:
                    self._end_copy(self._copy_rows + rows - 1)
                    if self._pending:  # a second COPY FROM STDIN on the line of the first
                        self._copy, self._copy_text = self._pending.popleft()
                        self._copy_rows = 0
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
        while self._copy is not None:  # stream ended inside COPY data: count what arrived
            self._end_copy(self._copy_rows)
            if self._pending:
                self._copy, self._copy_text = self._pending.popleft()
                self._copy_rows = 0
        return out

    def copy_rows(self, header: bytes, rows: int) -> bool:
        """A COPY block known by its header and its row count only (a custom archive's data block,
        counted by archivedata.py): keyed and counted as if its data had been fed. False when the
        header is not a COPY FROM stdin this scanner reads (nothing is counted then)."""
        self.feed(header if header.endswith(b"\n") else header + b"\n")
        if self._copy is None or self._pending:
            return False
        self._end_copy(rows)
        return True

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

    # --- what the dump loads ---------------------------------------------------------------

    def _end_copy(self, rows: int) -> None:
        target = self._copy
        assert target is not None
        self.copy_blocks += 1
        if self._copy_text:
            self.rows[target] = self.rows.get(target, 0) + rows
        else:
            self.uncounted[target] = "COPY in CSV or binary format: rows are not lines"
        self._copy = None

    def _target(self, parts: list[tuple[str, bytes]]) -> str:
        written = ".".join((b'"' + p[1].replace(b'"', b'""') + b'"' if p[0] == "q" else p[1]).decode(
            self._encoding, "replace") for p in parts)
        names = [_ident_text(p, self._encoding) for p in parts[-2:]]
        self.targets[written] = (names[0], names[1]) if len(names) == 2 else (None, names[0])
        return written

    def _statement_done(self, stmt: bytes) -> None:
        """A whole statement the scan cares about was read up to its ';'."""
        kind = self._kind
        if kind == "copy":
            self._copy_statement(stmt)
        elif kind == "insert":
            if self._ins_target is None:
                self._insert_head(stmt)
            if self._ins_target is not None:
                self.insert_statements += 1
                self.rows[self._ins_target] = self.rows.get(self._ins_target, 0) + max(0, self._ins_rows)
        elif kind == "refresh":
            toks = _tokens(stmt)
            i = 3 + _is_word(toks[3] if len(toks) > 3 else None, b"concurrently")
            parts, j = _name_at(toks, i)
            with_no_data = [t[1].lower() for t in toks[j:j + 3] if t[0] == "i"] == [b"with", b"no", b"data"]
            if parts and not with_no_data and _is_word(toks[1], b"materialized"):
                self.refreshed.append(self._target(parts))
        elif kind == "select":
            if _LO_CREATE.match(stmt):
                self.large_objects += 1
        elif kind == "set":
            m = _SET.match(stmt)
            if m and m.group(1).lower() == b"client_encoding":
                self._encoding = _ENCODINGS.get(m.group(2).decode().lower().replace("-", ""), "utf-8")
            elif m:
                self._std_strings = m.group(2).lower() in (b"on", b"true", b"1", b"yes")

    def _copy_statement(self, stmt: bytes) -> None:
        """psql enters COPY IN exactly for COPY [BINARY] name [(columns)] FROM STDIN|STDOUT ... (gram.y)."""
        toks = _tokens(stmt)
        i = 1
        binary = _is_word(toks[i] if i < len(toks) else None, b"binary")
        parts, i = _name_at(toks, i + binary)
        if not parts:
            return  # COPY (query) TO ...: nothing comes from the dump
        if i < len(toks) and toks[i] == ("p", b"("):
            i = _skip_parens(toks, i)
        if not (_is_word(toks[i] if i < len(toks) else None, b"from")
                and _is_word(toks[i + 1] if i + 1 < len(toks) else None, b"stdin", b"stdout")):
            return
        options = {t[1].lower() for t in toks[i + 2:] if t[0] in ("i", "s")}
        self._pending.append((self._target(parts), not binary and not options & {b"csv", b"binary"}))

    def _insert_head(self, head: bytes) -> None:
        """INSERT INTO name [(columns)] [OVERRIDING ... VALUE] VALUES ... | DEFAULT VALUES, up to its first '('.

        pg_dump repeats the same head for every row (--inserts): each one is read once.
        """
        if head in self._heads:
            known = self._heads[head]
        else:
            known = self._read_insert_head(head)
            if len(self._heads) >= 4096:
                self._heads.clear()
            self._heads[head] = known
        if known is not None:
            self._ins_target, self._ins_rows = known

    def _read_insert_head(self, head: bytes) -> tuple[str, int] | None:
        toks = _tokens(head)
        if toks and toks[-1] == ("p", b";"):
            toks.pop()
        if not _is_word(toks[1] if len(toks) > 1 else None, b"into"):
            return None
        parts, i = _name_at(toks, 2)
        rest = [t[1].lower() for t in toks[i:]]
        if not parts or any(t[0] != "i" for t in toks[i:]):
            return None
        if rest and rest[-1] == b"values" and (len(rest) == 1 or rest[-2] == b"value"):
            rows = 0  # the '(' that ends the head opens the first row
        elif rest == [b"default", b"values"] or rest[-3:] == [b"value", b"default", b"values"]:
            rows = 1
        elif not rest:
            rows = -1  # a column list comes first; the rows follow it
        else:
            return None
        return self._target(parts), rows

    # --- the lexer --------------------------------------------------------------------------

    def _capture(self, line: bytes, start: int, end: int) -> None:
        assert self._cap is not None
        if self._kind == "select":  # only lo_create('oid') is read: the head is enough (lowrite data is not)
            if len(self._cap) < 256:
                self._cap += line[start:min(end, start + 256)]
            return
        self._cap += line[start:end]
        if len(self._cap) > MAX_STATEMENT:
            if self._kind == "copy":
                raise StatementRefused(self.line_no, bytes(self._cap[:200]).decode(errors="replace"),
                                       f"a COPY statement longer than {MAX_STATEMENT} bytes")
            if self._kind == "insert":
                self.uncounted.setdefault(bytes(self._cap[:100]).decode(errors="replace"),
                                          "INSERT statement head too long to read")
            self._cap = None

    def _begin_statement(self, line: bytes, i: int, word: bytes) -> None:
        self._stmt_open = True
        self._kind = _KINDS.get(word.lower())
        self._ins_target, self._ins_rows = None, 0
        if self._kind is not None:
            self._cap, self._cap_from = bytearray(), i

    def _end_statement(self, line: bytes, j: int) -> None:
        if self._cap is not None:
            self._capture(line, self._cap_from, j + 1)
        if self._cap is not None or self._ins_target is not None:
            self._statement_done(bytes(self._cap or b""))
        self._stmt_open, self._kind, self._cap, self._ins_target = False, None, None, None
        self._ident_count, self._in_function = 0, False

    def _open_paren(self, line: bytes, i: int) -> None:
        if self._paren == 0 and self._kind == "insert":
            if self._ins_target is None and self._cap is not None:
                self._capture(line, self._cap_from, i)
                if self._cap is not None:
                    self._insert_head(bytes(self._cap))
                self._cap = None  # the head is read; the rows are counted by their '('
            if self._ins_target is not None:
                self._ins_rows += 1
        self._paren += 1

    def _word(self, word: bytes) -> None:
        """psql's {identifier} rule: track CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ... END."""
        lw = word.lower()
        if self._ident_count == 0:
            self._idents = [0, 0, 0, 0]
        if self._ident_count < 4 and lw in (b"create", b"function", b"procedure", b"or", b"replace"):
            self._idents[self._ident_count] = lw[0]
        self._ident_count += 1
        ids = self._idents
        self._in_function = ids[0] == 0x63 and (ids[1] in (0x66, 0x70) or (
            ids[1] == 0x6F and ids[2] == 0x72 and ids[3] in (0x66, 0x70)))
        if self._in_function and self._paren == 0:
            if lw == b"begin":
                self._begin += 1
            elif lw == b"case":
                if self._begin >= 1:
                    self._begin += 1
            elif lw == b"end" and self._begin > 0:
                self._begin -= 1

    def _escapes(self, line: bytes, j: int) -> bool:
        """Does the string opening at line[j] take backslash escapes (E'..', or any with std strings off)?"""
        w = _word_before(line, j)
        if len(w) == 1 and w in b"EeBbXxNn":
            if w in b"EeNn" and _glued_to_number(line, j - 1):
                self._refuse_glued(line)
            return w in b"Ee" or (w in b"Nn" and not self._std_strings)
        if not w and j >= 2 and line[j - 1] == 0x26 and _word_before(line, j - 1) in (b"U", b"u"):
            return False  # U&'..'
        return not self._std_strings

    def _refuse_glued(self, line: bytes) -> None:
        # psql up to 14 reads 1e'..' as 1 and an E'..' string, psql 15 as the junk token 1e and a
        # plain string: where the string ends depends on the psql. pg_dump never writes this.
        raise StatementRefused(self.line_no, line.decode(errors="replace").rstrip("\r\n")[:200],
                               "a number glued to a quote: psql versions disagree where the string ends")

    def _refuse(self, line: bytes) -> None:
        raise MetaCommandRefused(self.line_no, line.decode(errors="replace").rstrip("\r\n")[:200])

    def _lex(self, line: bytes) -> None:
        # psql lexes each line without its newline; a statement that goes on keeps it in the capture.
        n = len(line) - 1 if line.endswith(b"\n") else len(line)
        i = 0
        while i < n:
            st = self._state
            if st == _CODE:
                if self._stmt_open and self._ident_count >= 4 and not self._in_function:
                    # Inside a statement past the words that decide a function body, words no longer
                    # matter: jump to the next byte that can change state, and look back for the
                    # token before a quote or '$' (E'..' escapes; a '$' inside a word is no quote).
                    m = _SPECIAL.search(line, i, n)
                    if m is None:
                        break
                    i = m.start()
                    c = line[i]
                    if c == 0x27:
                        self._state, self._estring, i = _STRING, self._escapes(line, i), i + 1
                        continue
                    if c == 0x24:
                        w = _word_before(line, i)
                        m = None if w[:1].isalpha() or w[:1] == b"_" or w[:1] >= b"\x80" else _DOLLAR.match(line, i, n)
                        if m:
                            self._state, self._tag, i = _DOLLARQ, m.group(0), m.end()
                        else:
                            i += 1
                        continue
                c = line[i]
                if c in b" \t\n\r\f":
                    i = _WS.match(line, i, n).end()  # type: ignore[union-attr]
                    continue
                if c == 0x2D and line.startswith(b"--", i):  # comment up to the next newline byte
                    m = _COMMENT_END.search(line, i, n)
                    i = m.start() if m else n
                    continue
                if c == 0x2F and line.startswith(b"/*", i):
                    self._state, self._depth, i = _COMMENT, 1, i + 2
                    continue
                if c == 0x5C:  # backslash in code: psql would run it
                    self._refuse(line)
                if c == 0x3B and self._paren == 0 and self._begin == 0:
                    if not self._stmt_open:
                        self._begin_statement(line, i, b"")
                    self._end_statement(line, i)
                    i += 1
                    continue
                # A token: it opens the statement if none is open. String prefixes first, as flex's
                # longest match does: E'..' (escapes), B'..', X'..', N'..', U&'..', U&"..".
                word, prefix = b"", 0
                if c in b"Uu" and line.startswith((b"&'", b'&"'), i + 1):
                    prefix = 2
                elif c in b"EeBbXxNn" and i + 1 < n and line[i + 1] == 0x27:
                    prefix = 1
                elif c >= 0x80 or c == 0x5F or 0x41 <= (c & 0xDF) <= 0x5A:
                    m = _IDENT.match(line, i, n)
                    assert m is not None
                    word = m.group(0)
                if not self._stmt_open:
                    self._begin_statement(line, i, word)
                if word:
                    self._word(word)
                    i += len(word)
                elif prefix:
                    if c in b"EeNn" and _glued_to_number(line, i):
                        self._refuse_glued(line)
                    if line[i + prefix] == 0x22:
                        self._state = _QIDENT
                    else:
                        self._state = _STRING
                        self._estring = c in b"Ee" or (c in b"Nn" and not self._std_strings)
                    i += prefix + 1
                elif c == 0x27:
                    self._state, self._estring, i = _STRING, not self._std_strings, i + 1
                elif c == 0x22:
                    self._state, i = _QIDENT, i + 1
                elif c == 0x24:
                    m = _DOLLAR.match(line, i, n)
                    if m:
                        self._state, self._tag, i = _DOLLARQ, m.group(0), m.end()
                    else:
                        i += 1
                elif c == 0x28:
                    self._open_paren(line, i)
                    i += 1
                elif c == 0x29:
                    if self._paren > 0:
                        self._paren -= 1
                    i += 1
                elif 0x30 <= c <= 0x39 or c == 0x2E:
                    m = _NUMBER.match(line, i, n)
                    i = m.end() if m else i + 1
                else:
                    m = _OTHER.match(line, i, n)
                    i = m.end() if m else i + 1
            elif st == _STRING:
                j = line.find(b"'", i, n)
                if self._estring:
                    k = line.find(b"\\", i, n)
                    if k != -1 and (j == -1 or k < j):
                        i = k + 2
                        continue
                if j == -1:
                    break
                if line.startswith(b"''", j) and j + 1 < n:
                    i = j + 2
                    continue
                self._state, i = _AFTER_STRING, j + 1
            elif st == _AFTER_STRING:
                # A string closed: psql looks for {quotecontinue} before going back to code.
                m = _QUOTE_CONTINUE.match(line, i, n)
                if m:
                    self._state, i = _STRING, m.end()
                else:
                    self._state = _CODE
            elif st == _QIDENT:
                j = line.find(b'"', i, n)
                if j == -1:
                    break
                self._state, i = _CODE, j + 1  # "" re-enters the identifier at once: same result
            elif st == _DOLLARQ:
                j = line.find(self._tag, i, n)
                if j == -1:
                    break
                self._state, i = _CODE, j + len(self._tag)
            else:
                j, k = line.find(b"*/", i, n), line.find(b"/*", i, n)
                if k != -1 and (j == -1 or k < j):
                    self._depth, i = self._depth + 1, k + 2
                elif j == -1:
                    break
                else:
                    self._depth, i = self._depth - 1, j + 2
                    if self._depth == 0:
                        self._state = _CODE
        if self._cap is not None:
            self._capture(line, self._cap_from, len(line))
            self._cap_from = 0


__all__ = ["DUMP_COMPLETE", "MetaCommandRefused", "PlainDumpScanner", "StatementRefused", "split_name"]


_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_$]*")


def display_name(*parts: str | None) -> str:
    """Names for a one-line message: quoted as SQL needs them, control characters escaped (\\n, \\t)."""
    shown = []
    for p in parts:
        if p is None:
            continue
        if not _PLAIN_NAME.fullmatch(p):
            p = '"' + p.replace('"', '""') + '"'
        shown.append("".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in p))
    return ".".join(shown)
