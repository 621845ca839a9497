"""`pgbackup-verify init FILE --dsn DSN --backups DIR [--host SPEC]`: write a minimal target file for a healthy host.

Reads the live database (read-only) and the dumps present; writes FILE, never over an existing one.
With --host (a testinfra host spec such as ssh://backup@db1), the dumps are listed and read on that
backup host over the same connection the checks will use, and the file names it in [target].host.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from pgbackup_verify.config import BackupsSection, DatabaseSection, Target, TargetSection, load_target
from pgbackup_verify.errors import CONFIG_ERROR, INTERNAL_ERROR, UserError
from pgbackup_verify.facts import init, remote
from pgbackup_verify.facts.db import connect_readonly


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pgbackup-verify init", description=__doc__.split("\n\n")[0])
    p.add_argument("file", type=Path, help="target file to write (must not exist); '-' prints it instead")
    p.add_argument("--dsn", required=True, help="libpq string of the live database, WITHOUT a password "
                   "(PGPASSWORD, ~/.pgpass or --password-file)")
    p.add_argument("--backups", required=True, type=Path, help="directory the dump job writes to (with --host: "
                   "its absolute path on that host)")
    p.add_argument("--host", default="", help="backup host holding the dumps, as [target].host: ssh://user@host, "
                   "paramiko://user@host, ansible://NAME?ansible_inventory=FILE (default: this machine)")
    p.add_argument("--dump-role", help="role pg_dump runs as (default: guessed from the dump names and grants)")
    p.add_argument("--pattern", help="glob of the dump files (default: the largest family of dump names there)")
    p.add_argument("--exclude-schema", action="append", default=[], metavar="SCHEMA",
                   help="a schema pg_dump leaves out on purpose (repeatable)")
    p.add_argument("--name", default="", help="target name (default: the database name)")
    p.add_argument("--password-file", type=Path, help="file holding the password, written into the target")
    return p


def build(args: argparse.Namespace, command: str) -> str:
    """The target file's text; UserError/InitError on what the operator must fix."""
    if args.host:
        TargetSection(host=args.host).validate()  # a known backend, no password in the spec
    if args.host and remote.is_remote(args.host):
        if not args.backups.is_absolute():
            raise init.InitError(f"--backups: '{args.backups}' is not an absolute path on the backup host "
                                 f"({remote.shown_spec(args.host)}); write it in full")
        backups = args.backups
        connection = remote.open_host(args.host)  # unreachable, key or login refused: one line, exits 15-17
        try:
            dumps = init.read_dumps(backups, args.pattern, host=connection.host)
        finally:
            connection.close()
    else:
        backups = args.backups.resolve()
        if not backups.is_dir():
            raise init.InitError(f"--backups: directory '{args.backups}' does not exist; pass the directory "
                                 "the dump job writes to")
        dumps = init.read_dumps(backups, args.pattern)
    database = DatabaseSection(dsn=args.dsn, dump_role=args.dump_role or "-", password_file=args.password_file,
                               exclude_schemas=tuple(args.exclude_schema))
    database.validate()  # no password in the DSN, a DSN libpq can parse
    probe = Target(source=Path(args.name or "init"), target=None, database=database,
                   backups=BackupsSection(directory=backups))
    with connect_readonly(probe) as conn:
        db = init.read_database(conn, args.exclude_schema, args.dump_role, name_hint=dumps.pattern)
    return init.render(args.dsn, db, dumps, name=args.name, exclude=args.exclude_schema,
                       password_file=args.password_file.resolve() if args.password_file else None, command=command,
                       host=args.host if args.host and remote.is_remote(args.host) else "")


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    out: Path = args.file
    # Checked first and again at the write (O_EXCL): nothing is read from the host for a file we
    # would refuse to write anyway.
    if str(out) != "-" and (out.exists() or out.is_symlink()):
        print(f"pgbackup-verify init: '{out}' exists; init never overwrites a file: choose a new name "
              "or move the old one away", file=sys.stderr)
        return CONFIG_ERROR
    try:
        # The DSN holds no password (build refuses one), so the command line can go into the file.
        text = build(args, "pgbackup-verify init " + shlex.join(argv))
    except init.InitError as e:
        print(f"pgbackup-verify init: {e}", file=sys.stderr)
        return CONFIG_ERROR
    except UserError as e:
        print(f"pgbackup-verify init: {e}", file=sys.stderr)
        return e.exit_code
    if str(out) == "-":
        sys.stdout.write(text)
        return 0
    try:
        init.write_new(out, text)
    except FileExistsError:
        print(f"pgbackup-verify init: '{out}' exists; init never overwrites a file: choose a new name "
              "or move the old one away", file=sys.stderr)
        return CONFIG_ERROR
    except OSError as e:
        print(f"pgbackup-verify init: cannot write '{out}' ({e.strerror}); choose a writable place",
              file=sys.stderr)
        return CONFIG_ERROR
    try:
        load_target(out)
    except UserError as e:  # what init wrote must load: anything else is a bug of init, not the host
        print(f"pgbackup-verify init: the written file does not load ({e}); please report this", file=sys.stderr)
        return INTERNAL_ERROR
    print(f"pgbackup-verify init: wrote {out.resolve()}; check it with: pgbackup-verify --target {out}")
    return 0
