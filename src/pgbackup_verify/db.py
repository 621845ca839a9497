"""Read-only connections to the live database of a target."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg.conninfo

from pgbackup_verify.config import Target


class DatabaseUnreachable(Exception):
    """The target database could not be reached; str() names host/port and the fix, never a password."""


def _where(params: dict[str, object]) -> str:
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
        conn = psycopg.connect(**params)  # type: ignore[arg-type]
    except psycopg.OperationalError as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        if password:
            reason = reason.replace(password, "***")
        raise DatabaseUnreachable(
            f"database {_where(params)} of target '{target.name}' is unreachable ({reason}); "
            "check [database].dsn, that the server runs, and the password source") from None
    try:
        conn.read_only = True
        yield conn
    finally:
        conn.close()


def server_version(conn: psycopg.Connection) -> str:
    return str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]  # type: ignore[index]
