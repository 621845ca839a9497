"""Read-only connections to the live database of a target."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, LiteralString

import psycopg
import psycopg.conninfo
from psycopg import sql
from psycopg.abc import Params

from pgbackup_verify.config import Target
from pgbackup_verify.errors import DB_AUTH_FAILED, DB_UNREACHABLE, UserError

AUTH_MARKERS = ("password authentication failed", "no password supplied", "authentication failed",
                "role \"", "pg_hba.conf")


class DatabaseUnreachable(UserError):
    """The target database could not be reached; str() names host/port and the fix, never a password."""

    exit_code = DB_UNREACHABLE


class DatabaseAuthFailed(DatabaseUnreachable):
    exit_code = DB_AUTH_FAILED


def _where(params: Mapping[str, object]) -> str:
    host = params.get("host") or params.get("hostaddr") or "local socket"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or '?'} as {params.get('user') or '?'}"


@contextmanager
def connect_readonly(target: Target) -> Iterator[psycopg.Connection]:
    """A connection whose every transaction is READ ONLY: the suite never writes to a target."""
    params = psycopg.conninfo.conninfo_to_dict(target.database.dsn)
    params.setdefault("connect_timeout", target.database.connect_timeout)
    params.setdefault("application_name", "pgbackup-verify")
    password = target.password()
    if password is not None:
        params["password"] = password
    # Server-side guarantee, not just good manners: writes fail with "read-only transaction".
    params["options"] = f"{params.get('options', '')} -c default_transaction_read_only=on".strip()
    try:
        conn = psycopg.connect(psycopg.conninfo.make_conninfo("", **params))
    except psycopg.OperationalError as e:
        # The first line has the cause ("Connection refused"); later lines are libpq's hints.
        reason = str(e).strip().splitlines()[0].removeprefix("connection failed: ") if str(e).strip() \
            else type(e).__name__
        if password:
            reason = reason.replace(password, "***")
        if any(m in reason for m in AUTH_MARKERS):
            raise DatabaseAuthFailed(
                f"database {_where(params)} of target '{target.name}' refused the login ({reason}); "
                "check the role in [database].dsn and its password (PGPASSWORD, ~/.pgpass or "
                "[database].password_file)") from None
        raise DatabaseUnreachable(
            f"database {_where(params)} of target '{target.name}' is unreachable ({reason}); "
            "check [database].dsn and that the server runs") from None
    try:
        conn.read_only = True
        yield conn
    finally:
        conn.close()


def scalar(conn: psycopg.Connection, query: LiteralString | sql.Composed, params: Params | None = None) -> Any:
    """The first value of the first row of a statement that always returns one (SHOW, count(*))."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise LookupError(f"{query!r} returned no row")
    return row[0]


def server_version(conn: psycopg.Connection) -> str:
    return str(scalar(conn, "SHOW server_version")).split()[0]
