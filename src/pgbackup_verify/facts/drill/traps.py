"""Traps: restored code that tried something only a superuser may do.

The drill restores as a plain role (drillcluster.py), so code an object owner put in the dump (a
CHECK, a domain CHECK, a generated column, an index expression, a matview query, a trigger) that
reaches for a program, a server file, a connection or another superuser-only power fails with a
privilege error instead of running. Each such error is a finding of its own: the same dump restored by
hand as a superuser would have run it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# What the server says, and what it means the code tried (PostgreSQL 15/16 messages).
_TRIED = (
    (re.compile(r"to COPY to or from an external program|pg_execute_server_program"), "COPY ... TO/FROM PROGRAM",
     "runs a program on the server as the database's OS user"),
    (re.compile(r"pg_write_server_files|to COPY to a file|server-side lo_export"), "a write to a server file",
     "writes files on the server"),
    (re.compile(r"pg_read_server_files|to COPY from a file|server-side lo_import|permission denied for function "
                r"pg_read_(?:binary_)?file|pg_ls_dir"), "a read of a server file", "reads the server's files"),
    (re.compile(r"permission denied to create extension|must be superuser to create this extension"),
     "to create an untrusted extension", "installs code only a superuser may install"),
    (re.compile(r"could not establish connection|password or GSSAPI delegated credentials required|"
                r"password is required"), "a connection to another server",
     "connects to other servers (the live one too) from inside the database"),
    (re.compile(r"must be superuser|permission denied to set parameter|permission denied for language"),
     "a superuser-only operation", "runs with superuser rights"),
)
_FUNCTION = re.compile(r"(?:PL/pgSQL|SQL) function ([^\s(]+(?:\([^)]*\))?)")
_OBJECT = re.compile(r"COPY failed for table \"([^\"]+)\"|"
                     r"\| (?:line|command): (?:COPY|INSERT INTO|CREATE EXTENSION(?: IF NOT EXISTS)?|"
                     r"CREATE (?:UNIQUE )?INDEX \S+ ON(?: ONLY)?|"
                     r"REFRESH MATERIALIZED VIEW|CREATE MATERIALIZED VIEW|ALTER TABLE(?: ONLY)?|CREATE TABLE)\s+(\S+)")


@dataclass(frozen=True)
class Trap:
    object: str  # what was being restored: the table, index or view of the statement
    function: str  # the function whose code tried it ("" when the statement itself did)
    tried: str
    means: str

    def describe(self) -> str:
        via = f"{self.function}, called while restoring it," if self.function else "its restore"
        return (f"{self.object}: {via} tried {self.tried} as the restoring role: a superuser restore of this dump "
                f"{self.means}")


def find_traps(messages: list[str]) -> list[Trap]:
    """The privilege failures among the restore's error messages, one Trap each."""
    traps: list[Trap] = []
    for msg in messages:
        head = msg.split("\n", 1)[0]  # the error itself; its context follows on the next lines
        hit = next(((tried, means) for pattern, tried, means in _TRIED if pattern.search(head)), None)
        if hit is None:
            continue
        obj, fn = _OBJECT.search(msg), _FUNCTION.search(msg)
        name = obj and (obj.group(1) or obj.group(2))
        traps.append(Trap(name.rstrip(";") if name else "a statement of the dump",
                          fn.group(1) if fn else "", *hit))
    return traps


FIX = ("fix: drop or rewrite that code in the live database (it does nothing useful for its owner), and restore "
       "this dump by hand only as a non-superuser")
