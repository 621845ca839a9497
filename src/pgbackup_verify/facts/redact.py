"""Restore errors without the dump's rows: what failed, where, never the data.

A dump holds the database's rows (that is why dumps are 0600), and a failing restore quotes them:
PostgreSQL puts the offending value or the whole row into its message (`invalid input syntax for
type integer: "..."`, `DETAIL: Failing row contains (...)`, `Key (id)=(...) already exists`,
`CONTEXT: COPY t, line 3: "<the row>"`), psql echoes a failing INSERT (`LINE 1: INSERT ... VALUES
(...)`), pg_restore its command (`Command was: INSERT ...`). Those messages end up in the HTML, XML
and JSON reports, in cron mail and in Kuma.

`redact_copy_error` keeps what locates the fault (dump line, table, column, constraint, type, the
error itself) and replaces every quoted value and row by `<value withheld>` / `<row withheld>`.
It is a whitelist: a double-quoted string survives only after a word that names an object
(relation, table, column, constraint, index, type, encoding...); everything else quoted is a value.
The restore drill formats its messages first and passes each through here (one call per message,
multi-line messages included).
"""

from __future__ import annotations

import re

VALUE, ROW = "<value withheld>", "<row withheld>"
# Terminal control characters: C0 but TAB and LF, DEL, C1, and the bidirectional overrides ("Trojan
# Source"), which reorder what a reader sees without being visible themselves. report.console shows
# them as escapes; grants spells identifiers holding them in U&"..." form.
CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

# A double-quoted string PostgreSQL writes ("" inside it is a quote), and the word before it.
_QUOTED = re.compile(r'(?P<before>\b[\w/]+\s+)?"(?:[^"]|"")*"')
_NAMES = {"relation", "table", "column", "constraint", "index", "type", "encoding", "schema", "role", "database",
          "sequence", "function", "operator", "extension", "trigger", "view", "domain", "collation", "policy",
          "publication", "subscription", "server", "mapping", "language", "cast", "aggregate", "procedure",
          "statistics", "tablespace", "rule", "wrapper"}
# `COPY t, line 3, column v: "..."` and `COPY t, line 3: "<row>"`: table, line and column stay.
_COPY_VALUE = re.compile(r'(COPY [^,\n]+, line \d+, column [^:\n]+): .*$')
_COPY_ROW = re.compile(r'(COPY [^,\n]+, line \d+): .*$')
_FAILING_ROW = re.compile(r"(Failing row contains )\(.*\)\.?$")
# `Key (a, b)=(1, x) already exists.`: the columns stay, the values go; only known endings are kept.
_KEY = re.compile(r"(Key \(.*?\))=\(.*\)(?P<rest>.*)$")
_KEY_ENDS = re.compile(r' (?:already exists|is not present in table "(?:[^"]|"")*"|'
                       r'is still referenced from table "(?:[^"]|"")*")\.$')
# A statement that carries values: everything from VALUES (or after the first line) goes.
_VALUES = re.compile(r"(\b(?:INSERT INTO|COPY)\b.*?\bVALUES\b)\s*.*$", re.IGNORECASE)
_LINE_ECHO = re.compile(r"^(\s*LINE \d+:).*$")
_CARET = re.compile(r"^\s*\^\s*$")
_BYTES = re.compile(r'(invalid byte sequence for encoding "[^"]*": )0x[0-9a-f]+(?: 0x[0-9a-f]+)*')
_SHOWN_LINE = re.compile(r"^(?P<head>.*?\| line: )(?P<text>.*)$")
# What a dump line may look like when it is shown: a statement header, never a data row.
_STATEMENT = re.compile(r"^(?:COPY |CREATE |ALTER |SET |SELECT pg_catalog\.|COMMENT |GRANT |REVOKE |DROP |REFRESH |DO |"
                        r"\\connect |\\restrict |\\unrestrict |BEGIN|COMMIT|--)")


def _quoted(m: re.Match[str]) -> str:
    before = m["before"] or ""
    if before.strip().lower() in _NAMES:
        return m[0]
    return before + VALUE


def _statement_line(text: str) -> str:
    """A dump line shown beside an error: kept when it is a statement's head, else withheld."""
    if text.upper().startswith("INSERT INTO"):
        m = _VALUES.match(text)
        return f"{m[1]} ({ROW})" if m else f"INSERT ... ({ROW})"
    return text if _STATEMENT.match(text) else ROW


def _line(line: str) -> str | None:
    """One line made safe; None drops it (psql's caret under an echoed statement)."""
    if _CARET.match(line):
        return None
    if (m := _LINE_ECHO.match(line)) is not None:
        return f"{m[1]} <statement withheld>"
    if (m := _SHOWN_LINE.match(line)) is not None:
        return (_line(m["head"][:-len("| line: ")]) or "") + "| line: " + _statement_line(m["text"])
    line = _COPY_VALUE.sub(rf"\1: {VALUE}", line)
    line = _COPY_ROW.sub(rf"\1: {ROW}", line)
    line = _FAILING_ROW.sub(rf"\1({ROW}).", line)
    if (m := _KEY.search(line)) is not None:
        end = m["rest"] if _KEY_ENDS.fullmatch(m["rest"]) else ""
        line = line[:m.start()] + f"{m[1]}=({VALUE}){end}"
    if "Command was:" in line:
        head, _, command = line.partition("Command was:")
        line = f"{head}Command was: {_statement_line(command.strip())}"
    line = _BYTES.sub(rf"\1{VALUE}", line)
    # What is left quoted and not an object's name is a value (`...: "abc"`, `value "9e9" is out of range`).
    return _QUOTED.sub(_quoted, line)


def redact_copy_error(msg: str) -> str:
    """`msg` (a restore error, one or more lines) with every value and row of the dump withheld."""
    return "\n".join(ln for ln in map(_line, msg.split("\n")) if ln is not None)
