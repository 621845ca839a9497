"""What `pgbackup-verify init` reads from a healthy host, and the minimal target file it writes.

Everything here is read-only: the live catalog through a READ ONLY connection, the dumps by
stat() and one full read of the newest few. The written file states every value it chose and
where from, so an operator can judge each line instead of trusting a guess.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import os
import re
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from pgbackup_verify.config import BackupsSection
from pgbackup_verify.facts.dumps import customfmt, pgarchive
from pgbackup_verify.facts.dumps.compression import MAGIC_BYTES, SUFFIXES
from pgbackup_verify.facts.dumps.gzipscan import ARCHIVE_FORMATS
from pgbackup_verify.facts.dumps.inventory import (
    CUSTOM_SUFFIXES,
    STRAY_GLOBS,
    DumpFile,
    ScanCache,
    take_inventory,
)
from pgbackup_verify.facts.dumps.nights import night_rule
from pgbackup_verify.facts.dumps.source import FORMAT_WORDS, detect_format, format_of

# Names a dump job writes; a family of them is one glob (the digits of a date/time replaced by *).
# A directory holding a toc.dat (pg_dump -Fd) is a dump whatever its name.
DUMP_SUFFIXES = (".sql.gz", ".sql", ".gz", *CUSTOM_SUFFIXES, ".tar", *(s for s in SUFFIXES if s != ".gz"))
MAX_SCANNED = 8  # dumps read in full to learn the payload: the newest ones, enough for a week
TABLE_MARGIN = 0.9  # min_tables = 90% of today's tables, so dropping one table is not a failure
PAYLOAD_MARGIN = 0.5  # min_payload_bytes = half the smallest payload read
MAX_RETENTION = 7  # nights judged; each costs a full read per run


class InitError(Exception):
    """Init cannot write a target from what it found; str() is one line naming what and what to do."""


@dataclass(frozen=True)
class SchemaFacts:
    name: str
    owner: str
    tables: int


@dataclass(frozen=True)
class RoleGuess:
    role: str
    how: str  # one line: given, or why this role was guessed


@dataclass(frozen=True)
class DatabaseFacts:
    dbname: str
    user: str
    server_version: str
    schemas: tuple[SchemaFacts, ...]
    dump_role: RoleGuess
    roles: tuple[str, ...]  # roles owning or granted objects here, as a plain dump with owners names them


@dataclass(frozen=True)
class DumpFacts:
    directory: Path
    pattern: str
    pattern_how: str
    fmt: str  # as DumpSource.fmt: "custom", "directory", "tar", "plain", "plain-gzip", "plain-zstd", ...
    count: int
    interval_hours: float | None  # median time between dumps; None with one dump
    nights: int  # consecutive nights up to the newest one that hold a good dump (of those read)
    good: int  # good dumps among those read
    read: int  # dumps read in full
    smallest_payload: int  # smallest payload of the good dumps read
    smallest_file: int  # smallest file size on disk among the good dumps read
    largest_shrink: float  # largest payload shrink between consecutive good dumps read
    toc_schemas: tuple[str, ...] | None  # schemas in the newest custom-format dump's table of contents


# Per schema: owner and number of tables (r, p), user schemas only, extension members left out.
_SCHEMAS = """
SELECT n.nspname, pg_get_userbyid(n.nspowner),
       (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype = 'e'))
FROM pg_namespace n
WHERE n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema' AND n.nspname <> ALL(%s)
ORDER BY n.nspname
"""

# Login roles that may connect, each with the number of objects pg_dump needs and it cannot read:
# USAGE on each schema, SELECT on each table, partitioned table and sequence (what pg_dump 15 reads).
_CANDIDATES = """
WITH s AS (SELECT oid FROM pg_namespace
           WHERE nspname NOT LIKE 'pg\\_%%' AND nspname <> 'information_schema' AND nspname <> ALL(%(ex)s)),
     r AS (SELECT c.oid FROM pg_class c JOIN s ON s.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'S'))
SELECT ro.rolname, ro.rolsuper,
       (SELECT count(*) FROM s WHERE NOT has_schema_privilege(ro.oid, s.oid, 'USAGE'))
       + (SELECT count(*) FROM r WHERE NOT has_table_privilege(ro.oid, r.oid, 'SELECT')) AS lacking,
       ro.oid = d.datdba AS owns_db
FROM pg_roles ro, pg_database d
WHERE d.datname = current_database() AND ro.rolcanlogin
  AND has_database_privilege(ro.oid, d.oid, 'CONNECT')
ORDER BY ro.rolname
"""


# Roles a plain dump made without --no-owner / --no-acl names (owners, grantees, default privileges),
# less `postgres`, the superuser a throwaway drill cluster already has.
_ROLES = """
WITH s AS (SELECT oid, nspowner, nspacl FROM pg_namespace
           WHERE nspname NOT LIKE 'pg\\_%%' AND nspname <> 'information_schema' AND nspname <> ALL(%(ex)s)),
     ids AS (
  SELECT nspowner AS id FROM s
  UNION SELECT (aclexplode(nspacl)).grantee FROM s
  UNION SELECT relowner FROM pg_class c JOIN s ON s.oid = c.relnamespace
  UNION SELECT (aclexplode(relacl)).grantee FROM pg_class c JOIN s ON s.oid = c.relnamespace
  UNION SELECT proowner FROM pg_proc p JOIN s ON s.oid = p.pronamespace
  UNION SELECT (aclexplode(proacl)).grantee FROM pg_proc p JOIN s ON s.oid = p.pronamespace
  UNION SELECT typowner FROM pg_type t JOIN s ON s.oid = t.typnamespace
  UNION SELECT defaclrole FROM pg_default_acl
  UNION SELECT (aclexplode(defaclacl)).grantee FROM pg_default_acl)
SELECT r.rolname FROM ids JOIN pg_roles r ON r.oid = ids.id
WHERE r.rolname NOT LIKE 'pg\\_%%' AND r.rolname <> 'postgres'
ORDER BY 1
"""


def read_database(conn: psycopg.Connection, exclude: Iterable[str] = (), dump_role: str | None = None,
                  name_hint: str = "") -> DatabaseFacts:
    """Schemas with owners and table counts, and the dump role (given, or guessed and said how)."""
    ex = sorted(set(exclude))
    schemas = tuple(SchemaFacts(n, o, int(t)) for n, o, t in conn.execute(_SCHEMAS, (ex,)))
    row = conn.execute("SELECT current_database(), current_user, current_setting('server_version')").fetchone()
    assert row is not None
    dbname, user, version = (str(v) for v in row)
    role = RoleGuess(dump_role, "given with --dump-role") if dump_role else _guess_role(conn, ex, name_hint, user)
    roles = tuple(str(r[0]) for r in conn.execute(_ROLES, {"ex": ex}))
    return DatabaseFacts(dbname, user, version.split()[0], schemas, role, roles)


def _guess_role(conn: psycopg.Connection, exclude: list[str], name_hint: str, user: str) -> RoleGuess:
    rows = conn.execute(_CANDIDATES, {"ex": exclude}).fetchall()
    readers = [(str(name), bool(sup), bool(owns)) for name, sup, lacking, owns in rows if lacking == 0]
    plain = [r for r in readers if not r[1]]
    hinted = [r for r in readers if r[0] in _words(name_hint)]
    if hinted:
        return RoleGuess(hinted[0][0], f"guessed: named in the dump file names ({name_hint}) and it can read "
                                       "every schema, table and sequence")
    if len(plain) == 1:
        return RoleGuess(plain[0][0], "guessed: the only login role without superuser that can read every "
                                      "schema, table and sequence")
    if plain:
        owner = [r for r in plain if r[2]]
        pick = owner[0] if owner else plain[0]
        others = ", ".join(r[0] for r in plain if r is not pick)
        return RoleGuess(pick[0], f"guessed: {'the database owner, ' if owner else ''}one of several login roles "
                                  f"that can read everything (also {others})")
    supers = [r for r in readers if r[1]]
    if supers:
        pick = next((r for r in supers if r[0] == user), supers[0])
        return RoleGuess(pick[0], "guessed: no login role without superuser can read every schema, table and "
                                  "sequence, so the dumps are taken as a superuser")
    return RoleGuess(user, "NOT guessed: no login role can read every schema, table and sequence; this is the "
                           "connecting user; set the role your pg_dump runs as")


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z0-9_]+", text)) | set(re.findall(r"[A-Za-z0-9]+", text))


def family(name: str, directory_dump: bool = False) -> str | None:
    """The glob of a dump file's family: digits (dates, times, counters) become *; None if not a dump name."""
    if not (directory_dump or name.endswith(DUMP_SUFFIXES)) or any(Path(name).match(g) for g in STRAY_GLOBS):
        return None
    # The suffix stays as written: the digits of .lz4 and .bz2 are not a date.
    suffix = next((s for s in sorted(DUMP_SUFFIXES, key=len, reverse=True) if name.endswith(s)), "")
    stem = name[:len(name) - len(suffix)]
    if re.search(r"[0-9]", stem):
        stem = re.sub(r"\*[^A-Za-z]*\*", "*", re.sub(r"[0-9]+", "*", stem))
    return stem + suffix


def guess_pattern(directory: Path) -> tuple[str, str]:
    """The glob of the largest family of dump-like files in `directory` (ties: the newest), and how."""
    families: Counter[str] = Counter()
    newest: dict[str, float] = {}
    try:
        with os.scandir(directory) as entries:
            for e in entries:
                is_dir_dump = pgarchive.is_directory_dump(Path(e.path))
                glob = family(e.name, is_dir_dump)
                if glob is None or not (is_dir_dump or (e.is_file(follow_symlinks=True) and e.stat().st_size)):
                    continue
                families[glob] += 1
                newest[glob] = max(newest.get(glob, 0.0), e.stat().st_mtime)
    except OSError as e:
        raise InitError(f"backup directory '{directory}' cannot be listed ({e.strerror}); "
                        "pass the directory the dump job writes to") from None
    return _best_family(directory, families, newest)


def _best_family(directory: Path, families: Counter[str], newest: dict[str, float]) -> tuple[str, str]:
    if not families:
        raise InitError(f"backup directory '{directory}' holds no dump ({', '.join(DUMP_SUFFIXES)}, or a "
                        "pg_dump -Fd directory); "
                        "pass the directory the dump job writes to, or --pattern GLOB")
    best = max(families, key=lambda g: (families[g], newest[g]))
    others = [g for g in families if g != best]
    how = f"guessed from the {families[best]} file(s) matching it" + (
        f" (other files there: {', '.join(sorted(others)[:5])})" if others else "")
    return best, how


def remote_format(host: Any, path: Path) -> str:
    """A remote dump's format from its first bytes (one chunk read over the backend)."""
    from pgbackup_verify.facts.dumps import remote

    f = remote.RemoteFile(host, str(path))
    try:
        f.fetch()
        return detect_format(f.head(MAGIC_BYTES), path.name)
    finally:
        f.close()


def guess_remote_pattern(host: Any, directory: Path) -> tuple[str, str]:
    """`guess_pattern` on a remote backup host: the same families, from one listing over its backend."""
    from pgbackup_verify.facts.dumps import remote

    _, entries, error = remote.listing(host, str(directory))
    if error:
        raise InitError(f"backup directory '{directory}' cannot be listed on the backup host ({error}); "
                        "pass the directory the dump job writes to")
    families: Counter[str] = Counter()
    newest: dict[str, float] = {}
    for e in entries:
        glob = family(e.name)
        if glob is None or e.kind not in ("f", "l") or (e.kind == "l" and e.target_kind != "f") or not e.size:
            continue
        families[glob] += 1
        newest[glob] = max(newest.get(glob, 0.0), e.mtime)
    return _best_family(directory, families, newest)


def read_dumps(directory: Path, pattern: str | None = None, now: float | None = None, host: Any = None) -> DumpFacts:
    """Pattern, format, cadence and payloads of the dumps present (the newest MAX_SCANNED read in full).
    With `host` (a remote backup host's testinfra host), listed and read over its backend, as the checks do."""
    how = "given with --pattern"
    if pattern is None:
        pattern, how = guess_pattern(directory) if host is None else guess_remote_pattern(host, directory)
    # Stray detection plays no part here: a zero limit keeps every matching file in the inventory.
    section = BackupsSection(directory=directory, pattern=pattern, stray_max_bytes=0)
    cache: ScanCache
    if host is None:
        inv = take_inventory(section, now)
        cache = ScanCache()
    else:
        from pgbackup_verify.facts.dumps import remote

        inv = remote.take_remote_inventory(host, section)
        cache = remote.RemoteScanCache(host=host)
    dumps = [d for d in inv.dumps if d.size > 0]
    if not dumps:
        raise InitError(f"backup directory '{directory}' holds no file matching '{pattern}'; "
                        "fix --pattern or pass the directory the dump job writes to")
    fmt = format_of(dumps[0].path) if host is None else remote_format(host, dumps[0].path)
    times = sorted({d.mtime for d in dumps})
    gaps = [b - a for a, b in itertools.pairwise(times) if b - a > 60]
    interval = statistics.median(gaps) / 3600 if gaps else None
    read = dumps[:MAX_SCANNED]
    good: list[tuple[DumpFile, int]] = []
    for d in read:
        scan = cache.scan(d)
        if scan.is_good(1):
            good.append((d, scan.payload_bytes))
    if not good:
        raise InitError(f"none of the newest {len(read)} dump(s) matching '{pattern}' in '{directory}' is "
                        f"complete ({read[0].name}: {'; '.join(cache.scan(read[0]).problems(1))}); "
                        "init writes a target for a healthy host: repair the dump job first")
    rule = night_rule("auto", [d.mtime for d in dumps])  # the checks' own rule for what a night is
    good_nights = {rule.night_of(d.mtime) for d, _ in good}
    nights, night = 0, rule.night_of(dumps[0].mtime)
    while night in good_nights:
        nights += 1
        night -= dt.timedelta(days=1)
    payloads = [p for _, p in good]  # newest first
    shrink = max((1 - newer / older for newer, older in itertools.pairwise(payloads) if older),
                 default=0.0)
    # pg_restore --list reads a local archive: a remote one's table of contents is not read here.
    toc = customfmt.read_toc(dumps[0].path).schemas if fmt in ARCHIVE_FORMATS and host is None else None
    return DumpFacts(directory, pattern, how, fmt, len(dumps), interval, nights, len(good), len(read),
                     min(payloads), min(d.size for d, _ in good), max(shrink, 0.0), toc)


def _s(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def _list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_s(v) for v in values) + "]"


def _hours(h: float) -> str:
    return f"{h / 24:g} days" if h >= 48 else f"{h:g} hours"


def render(dsn: str, db: DatabaseFacts, dumps: DumpFacts, *, name: str = "", exclude: Iterable[str] = (),
           password_file: Path | None = None, command: str = "", host: str = "") -> str:
    """The minimal target file for this host: [target], [database], [backups], [drill], each value explained."""
    ex = sorted(set(exclude))
    live = [s.name for s in db.schemas]
    expected = [s for s in live if dumps.toc_schemas is None or s in dumps.toc_schemas]
    not_in_toc = [s for s in live if s not in expected]
    lines = [
        "# Target file written by `pgbackup-verify init` from the live database and the dumps present.",
        f"# {command}" if command else "",
        "# Every value below was measured on this host and passes on it as it is now; read each comment,",
        "# then tighten what you know better. target.example.toml documents every key and its default.",
        "",
        "[target]",
        f"name = {_s(name or db.dbname)}",
        *([f"# The backup host, read over {host.split('://', 1)[0]} (given with --host); the paths below are there.",
           f"host = {_s(host)}"] if host else []),
        "",
        "[database]",
        "# Read only: every transaction of the suite is READ ONLY. No password here (PGPASSWORD or ~/.pgpass).",
        f"dsn = {_s(dsn)}",
        f"# {db.dump_role.how}",
        f"dump_role = {_s(db.dump_role.role)}",
    ]
    if password_file:
        lines.append(f"password_file = {_s(str(password_file))}")
    if ex:
        lines += ["# Left out of the dump on purpose (given with --exclude-schema): not audited, not expected.",
                  f"exclude_schemas = {_list(ex)}"]
    lines += ["", "[backups]", f"directory = {_s(str(dumps.directory))}",
              f"# {dumps.fmt.removeprefix('plain-')} format ({FORMAT_WORDS.get(dumps.fmt, dumps.fmt)}); "
              f"pattern {dumps.pattern_how}.",
              f"pattern = {_s(dumps.pattern)}"]
    if dumps.interval_hours is None:
        lines += ["# Only one dump present, so no cadence could be measured: assumed nightly (26 hours).",
                  "max_age_hours = 26"]
    else:
        age = math.ceil(dumps.interval_hours + max(2.0, dumps.interval_hours * 0.1))
        lines += [f"# A dump every {_hours(round(dumps.interval_hours, 1))} (median of {dumps.count} files), "
                  "plus a margin for a slow night.",
                  f"max_age_hours = {age}"]
    min_payload = max(1, int(dumps.smallest_payload * PAYLOAD_MARGIN))
    lines += [f"# Half the smallest decompressed payload of the {dumps.good} good dump(s) read "
              f"({dumps.smallest_payload} bytes): the seed's broken dump had 0.",
              f"min_payload_bytes = {min_payload}"]
    if dumps.largest_shrink > 0.2:
        ratio = min(0.9, round(dumps.largest_shrink * 1.5, 2))
        lines += [f"# The payload shrank by up to {dumps.largest_shrink:.0%} between good dumps here.",
                  f"max_shrink_ratio = {ratio}"]
    daily = dumps.interval_hours is None or dumps.interval_hours <= 25
    retention = max(1, min(MAX_RETENTION, dumps.nights))
    if daily:
        lines += [f"# {dumps.nights} night(s) in a row end(s) with a good dump (of the {dumps.read} newest dumps "
                  "read); each night in this window must have one.",
                  f"retention_days = {retention}",
                  f"min_good_dumps = {max(1, min(retention, dumps.good))}"]
    else:
        lines += ["# Dumps come less often than nightly: the retention check wants a good dump EVERY night and",
                  "# fails here; run the dump job nightly, or deselect it (-k 'not retention').",
                  "retention_days = 1", "min_good_dumps = 1"]
    if dumps.smallest_file < 1024:
        lines += [f"# The smallest good dump is {dumps.smallest_file} bytes on disk: below it a file is a stray.",
                  f"stray_max_bytes = {max(1, dumps.smallest_file // 2)}"]
    if not_in_toc:
        lines += ["# In the live database but not in the newest dump's table of contents (empty, or left out of",
                  f"# pg_dump): {', '.join(not_in_toc)}. If left out on purpose, add them to exclude_schemas."]
    lines += ["# Schemas the restore must hold (and a custom-format dump's table of contents must list).",
              f"expected_schemas = {_list(expected)}", "", "[drill]",
              "# Restored into a throwaway local cluster and removed afterwards. Live schemas (owner, tables today):"]
    lines += [f"#   {s.name} (owner {s.owner}): {s.tables} table(s)" for s in db.schemas]
    if dumps.fmt not in ARCHIVE_FORMATS and db.roles:
        lines += ["# Roles a plain dump made without --no-owner / --no-acl names (owners, grantees): created in the",
                  "# throwaway cluster before the restore. Harmless if your pg_dump uses --no-owner --no-acl.",
                  f"roles = {_list(db.roles)}"]
    minimums = {s.name: math.floor(s.tables * TABLE_MARGIN) for s in db.schemas if s.name in expected}
    lines += [f"# Tables per schema after the restore: {TABLE_MARGIN:.0%} of today's, so dropping one is no failure.",
              "min_tables = { " + ", ".join(f"{_s(k)} = {v}" for k, v in minimums.items()) + " }", ""]
    return "\n".join(line for i, line in enumerate(lines) if line or i != 1)


def write_new(path: Path, text: str) -> None:
    """Create `path` with `text`; never replace a file that exists (FileExistsError)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
