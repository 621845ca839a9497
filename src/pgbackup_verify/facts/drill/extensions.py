"""The one superuser step of a restore: the dump's own extensions that a plain role may not create.

PostgreSQL 13+ lets a database owner create *trusted* extensions (pgcrypto, citext, hstore, pg_trgm,
plpgsql...): the restore role does that itself. An extension that is not trusted (dblink, postgres_fdw,
PostGIS, pg_stat_statements) needs a superuser. Before the restore, the drill reads which extensions
the dump creates (a custom archive's TOC; the head of a plain dump, where pg_dump writes them before
any type, function or table) and creates those that are untrusted and installed on this host as its
superuser, in the dump's own schema when that is `public` (another schema does not exist yet: the
dump creates it, and the restore would then fail on an existing one). The restore role is made the
extension's owner and may use what it installed (its foreign-data wrappers, its tables), so the
dump's `CREATE EXTENSION IF NOT EXISTS` is a no-op and its `COMMENT ON EXTENSION` works. Nothing
of the dump's text runs as the superuser: only the two names, each checked against the catalog of
available extensions and quoted as identifiers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from isal import igzip
from psycopg import sql

from pgbackup_verify.facts.drill.drillcluster import RESTORER, Endpoint
from pgbackup_verify.facts.dumps.customfmt import ArchiveFormatError, read_archive_toc
from pgbackup_verify.facts.dumps.source import DumpSource

HEAD_LIMIT = 16 << 20  # pg_dump writes extensions right after the schemas: far less than this
_ID = r'(?:"(?:[^"\n]|"")+"|[a-z_][a-z0-9_$]*)'
_CREATE = re.compile(rf"^CREATE EXTENSION IF NOT EXISTS ({_ID}) WITH SCHEMA ({_ID});$")
_FIRST_OBJECT = re.compile(r"^CREATE (?:TYPE|FUNCTION|TABLE|DOMAIN|SEQUENCE|VIEW|PROCEDURE|AGGREGATE) ")


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def dump_extensions(source: DumpSource) -> list[tuple[str, str]]:
    """(extension, schema) the dump creates, read from its TOC or the head of its SQL."""
    if source.fmt == "custom":
        if source.path is None:
            return []
        try:
            toc = read_archive_toc(source.path)
        except (ArchiveFormatError, OSError):
            return []
        return [(e.tag, e.namespace or "public") for e in toc.entries if e.desc == "EXTENSION"]
    found: list[tuple[str, str]] = []
    with source.open() as raw:
        stream = igzip.IGzipFile(fileobj=raw) if source.fmt == "plain-gzip" else raw
        read = 0
        for line in stream:
            read += len(line)
            text = line.decode(errors="replace").rstrip("\r\n")
            m = _CREATE.match(text)
            if m:
                found.append((_unquote(m.group(1)), _unquote(m.group(2))))
            elif _FIRST_OBJECT.match(text) or read > HEAD_LIMIT:
                break
    return found


_UNTRUSTED = """
SELECT e.name FROM pg_available_extensions e
JOIN pg_available_extension_versions v ON v.name = e.name AND v.version = e.default_version
WHERE e.name = ANY(%s) AND v.superuser AND NOT v.trusted
"""
# What the extension installed that a restore may need to use or fill: its foreign-data wrappers
# and its tables and sequences (PostGIS' spatial_ref_sys).
_MEMBERS = """
SELECT 'fdw', NULL, f.fdwname FROM pg_catalog.pg_foreign_data_wrapper f
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_foreign_data_wrapper'::regclass AND d.objid = f.oid AND d.deptype = 'e'
JOIN pg_catalog.pg_extension x ON x.oid = d.refobjid WHERE x.extname = %(ext)s
UNION ALL
SELECT 'rel', n.nspname, c.relname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
JOIN pg_catalog.pg_extension x ON x.oid = d.refobjid WHERE x.extname = %(ext)s AND c.relkind IN ('r', 'S')
"""


def create_untrusted(admin: Endpoint, wanted: Iterable[tuple[str, str]]) -> list[str]:
    """Create the untrusted, installed extensions of the dump as the superuser; one note each."""
    wanted = [(e, s) for e, s in wanted if s == "public"]
    if not wanted:
        return []
    notes = []
    with admin.connect(autocommit=True) as conn:
        untrusted = {r[0] for r in conn.execute(_UNTRUSTED, ([e for e, _ in wanted],)).fetchall()}
        for ext, schema in wanted:
            if ext not in untrusted:
                continue  # trusted (the restore role creates it) or not installed here (the restore says so)
            conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {} CASCADE").format(
                sql.Identifier(ext), sql.Identifier(schema)))
            # The restore role owns it (so the dump's COMMENT ON EXTENSION works) and may use what it made.
            conn.execute("UPDATE pg_catalog.pg_extension SET extowner = %(r)s::regrole WHERE extname = %(ext)s",
                         {"r": RESTORER, "ext": ext})
            for kind, schema_name, name in conn.execute(_MEMBERS, {"ext": ext}).fetchall():
                if kind == "fdw":
                    conn.execute(sql.SQL("GRANT USAGE ON FOREIGN DATA WRAPPER {} TO {}").format(
                        sql.Identifier(name), sql.Identifier(RESTORER)))
                else:
                    conn.execute(sql.SQL("GRANT ALL ON {}.{} TO {}").format(
                        sql.Identifier(schema_name), sql.Identifier(name), sql.Identifier(RESTORER)))
            notes.append(f"extension {ext} created by the drill's superuser (not trusted), then handed to "
                         f"{RESTORER}")
    return notes
