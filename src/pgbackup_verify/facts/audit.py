"""One read-only snapshot of the live catalog for every check that queries it.

The grant audit and the custom SQL checks run in the same REPEATABLE READ, READ ONLY
transaction: they judge the same moment of the catalog, and the target sees one short
session per run, not one per concern.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgbackup_verify.config import Target
from pgbackup_verify.facts import grants
from pgbackup_verify.facts.db import connect_readonly, scalar
from pgbackup_verify.facts.sqlchecks import SqlCheckResult, run_sql_checks


@dataclass(frozen=True)
class CatalogAudit:
    started: str  # now() of the transaction: the moment every catalog check looked at
    grants: grants.GrantAudit
    sql: dict[str, SqlCheckResult]


def audit_catalog(target: Target) -> CatalogAudit:
    """Grant audit and [[sql_check]]s in one transaction; raises db.DatabaseUnreachable (one line)."""
    with connect_readonly(target) as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        started = str(scalar(conn, "SELECT now()::text"))
        audit = grants.audit(target, conn)
        sql = run_sql_checks(conn, target.sql_check)
    return CatalogAudit(started, audit, sql)
