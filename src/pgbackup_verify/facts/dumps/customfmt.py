"""Custom-format dumps (`pg_dump -Fc`): the table of contents and a full read of the data.

`pg_restore --list` reads only the TOC at the start of the archive (24 ms for a 119 MB
dump here), so it proves the archive opens and which schemas it holds, but not that the
data blocks behind it are intact. `verify_archive` therefore streams `pg_restore -f -`
(the archive rendered as SQL) through the same scanner as the .sql.gz files: a truncated
or corrupt archive makes pg_restore fail, and the SQL carries the usual header and footer.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pgbackup_verify.facts.dumps.gzipscan import DumpScan, scan_stream

# TOC entry descriptions of more than one word; the schema column follows the description.
_MULTIWORD = ("TABLE DATA", "SEQUENCE SET", "SEQUENCE OWNED BY", "FK CONSTRAINT", "DEFAULT ACL",
              "MATERIALIZED VIEW DATA", "MATERIALIZED VIEW", "FOREIGN TABLE", "TEXT SEARCH CONFIGURATION",
              "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "FOREIGN DATA WRAPPER",
              "SERVER", "USER MAPPING", "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA",
              "TABLE ATTACH", "INDEX ATTACH", "STATISTICS DATA", "LARGE OBJECT", "BLOB", "BLOBS",
              "SHELL TYPE", "ROW SECURITY", "EVENT TRIGGER", "PROCEDURAL LANGUAGE", "DEFAULT",
              "CHECK CONSTRAINT", "OPERATOR CLASS", "OPERATOR FAMILY")


@dataclass(frozen=True)
class TocFacts:
    path: str
    readable: bool  # pg_restore --list succeeded
    error: str | None  # pg_restore's last stderr line when not readable
    entries: int  # TOC entries listed
    schemas: tuple[str, ...]  # schemas created by or holding objects of the archive, sorted
    dumped_from: str
    dumped_by: str
    seconds: float

    def missing(self, expected: tuple[str, ...] | list[str]) -> list[str]:
        return [s for s in expected if s not in self.schemas]


def _last_line(stderr: bytes) -> str:
    lines = [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "no message"


def _schema_of(rest: str) -> tuple[str | None, bool]:
    """(schema, is_schema_entry) from '<desc> <namespace> <tag> <owner>' of one TOC line."""
    desc = next((d for d in sorted(_MULTIWORD, key=len, reverse=True) if rest.startswith(d + " ")), None)
    if desc is None:
        desc = rest.split(" ", 1)[0]
    after = rest[len(desc) + 1:]
    if desc == "SCHEMA" and after.startswith("- "):
        # '- <name> <owner>': names with spaces survive because the owner is the last word.
        name = after[2:].rsplit(" ", 1)[0] if " " in after[2:] else after[2:]
        return name, True
    namespace = after.split(" ", 1)[0]
    return (None if namespace == "-" else namespace), False


def parse_toc(listing: str) -> tuple[int, set[str], str, str]:
    entries, schemas, dumped_from, dumped_by = 0, set(), "", ""
    for line in listing.splitlines():
        if line.startswith(";"):
            text = line.lstrip("; ").strip()
            if text.startswith("Dumped from database version:"):
                dumped_from = text.split(":", 1)[1].strip()
            elif text.startswith("Dumped by pg_dump version:"):
                dumped_by = text.split(":", 1)[1].strip()
            continue
        head, sep, rest = line.partition("; ")
        if not sep or not head.strip().isdigit():
            continue
        entries += 1
        parts = rest.split(" ", 2)  # tableoid, oid, remainder
        if len(parts) == 3:
            schema, _ = _schema_of(parts[2])
            if schema:
                schemas.add(schema)
    return entries, schemas, dumped_from, dumped_by


def read_toc(path: str | Path, timeout: float = 120) -> TocFacts:
    """`pg_restore --list`: does the archive open, and which schemas does it hold."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(["pg_restore", "--list", str(path)], capture_output=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return TocFacts(str(path), False, f"pg_restore --list could not run ({e})", 0, (), "", "",
                        time.perf_counter() - started)
    if proc.returncode != 0:
        return TocFacts(str(path), False, _last_line(proc.stderr), 0, (), "", "", time.perf_counter() - started)
    entries, schemas, dumped_from, dumped_by = parse_toc(proc.stdout.decode("utf-8", "replace"))
    return TocFacts(str(path), True, None, entries, tuple(sorted(schemas)), dumped_from, dumped_by,
                    time.perf_counter() - started)


def verify_archive(path: str | Path) -> DumpScan:
    """Read the whole archive as SQL (`pg_restore -f -`) through the dump scanner.

    payload_bytes is then the size of the SQL the archive restores to, comparable with the
    decompressed payload of a .sql.gz of the same database.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        proc = subprocess.Popen(["pg_restore", "-f", "-", str(p)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except OSError as e:
        return DumpScan(str(p), "custom", 0, 0, False, f"cannot read with pg_restore ({e})", False, "",
                        False, "", "", 0.0)
    assert proc.stdout is not None and proc.stderr is not None
    with proc:
        scan = scan_stream(proc.stdout, str(p), compressed=False)
        proc.stdout.close()
        stderr = proc.stderr.read(65536)
        rc = proc.wait()
    error = scan.error
    if rc != 0:
        error = f"pg_restore failed reading the archive: {_last_line(stderr)}"
    return dataclasses.replace(scan, format="custom", compressed_bytes=size, valid=error is None, error=error)
