"""Custom SQL checks from the target file, e.g. the Phase C registry lock coverage audit."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pgbackup_verify.config import SqlCheck
from pgbackup_verify.evidence import require
from pgbackup_verify.facts.sqlchecks import SqlCheckResult

pytestmark = pytest.mark.sql


def test_custom_sql_check(sql_check: SqlCheck, sql_check_results: dict[str, SqlCheckResult],
                          evidence: Callable[[str, object], None]) -> None:
    result = sql_check_results[sql_check.name]
    evidence("rule", sql_check.expect)
    evidence("findings", "; ".join(result.findings) or "none")
    require(result.passed, result.message())
