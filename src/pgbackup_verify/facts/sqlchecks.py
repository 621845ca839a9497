"""Custom SQL checks declared in the target file ([[sql_check]]), run read-only."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from pgbackup_verify.config import SqlCheck

MAX_FINDINGS_SHOWN = 20


@dataclass(frozen=True)
class SqlCheckResult:
    check: SqlCheck
    passed: bool
    findings: tuple[str, ...]  # one line per returned row, or the boolean / error
    error: str | None = None

    def message(self) -> str:
        c = self.check
        if self.error:
            return f"{c.name}: ERROR (query failed: {self.error}); fix the query in the target file"
        shown = "; ".join(self.findings[:MAX_FINDINGS_SHOWN])
        more = f" (+{len(self.findings) - MAX_FINDINGS_SHOWN} more)" if len(self.findings) > MAX_FINDINGS_SHOWN else ""
        what = f"{len(self.findings)} row(s): {shown}{more}" if c.expect == "no_rows" else f"returned {shown}"
        return f"{c.name}: FAILED ({what}); fix: {c.fix}"


def _row_text(row: tuple[object, ...]) -> str:
    return ", ".join("NULL" if v is None else str(v) for v in row)


def run_sql_check(conn: psycopg.Connection, check: SqlCheck) -> SqlCheckResult:
    """Run one check inside a savepoint, so that a failing query leaves the others runnable."""
    try:
        with conn.transaction():
            conn.execute(f"SET LOCAL statement_timeout = {int(check.timeout_s * 1000)}")
            rows = conn.execute(check.query).fetchall()
    except psycopg.Error as e:
        return SqlCheckResult(check, False, (), error=str(e).strip().splitlines()[0])
    if check.expect == "no_rows":
        return SqlCheckResult(check, not rows, tuple(_row_text(r) for r in rows))
    value = rows[0][0] if len(rows) == 1 and len(rows[0]) == 1 else None
    return SqlCheckResult(check, value is True, (repr(value) if rows else "no row",))


def run_sql_checks(conn: psycopg.Connection, checks: tuple[SqlCheck, ...]) -> dict[str, SqlCheckResult]:
    """Every check in the caller's open read-only transaction (see catalog.audit_catalog)."""
    return {c.name: run_sql_check(conn, c) for c in checks}
